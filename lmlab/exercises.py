"""Auto-checked exercises: a learner writes a function or a value in a cell, a check says if it is right.

In a lesson:

    from lmlab.exercises import check

    def encode(text, vocab):
        ...

    check("02.char_encode", encode)   # ✅ Correct — all 4 cases pass
                                      # or ❌ Not yet — case 2 of 4: encode('To be', [...]) ... + a hint

A check runs the learner's function and the reference solution on the same inputs and compares the
results like a unit test would (tensors with `torch.allclose` and their shapes, floats with a
tolerance, lists element by element), then names the first input where they differ, with expected
and got. An exception raised by the learner's function is a failed case, not a crash. For a value
exercise the expected value is not shown (that would give the answer away), only how the value differs.

The solutions live in the package, not in the notebooks. A lesson registers its exercises under
names that start with its number, in its own module `lmlab/exercise_bank/lNN.py`, which
`check("NN.name", ...)` imports on first use:

    @function_exercise("04.shift_targets", cases=lambda: [(torch.arange(6).view(2, 3),)], hint="...")
    def _shift_targets(ids):
        return ids[:, 1:]

    value_exercise("02.some_number", expected=lambda: ..., hint="...")

`check_function` and `check_value` also work on their own, without the registry. Every check returns
a `CheckResult`: truthy when passed, and its repr is the message, so a cell ending with a check shows it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

# Tolerances for floats and float tensors: about float32 precision, so that a learner's correct
# computation in another order (sum then divide, or divide then sum) still passes.
RTOL, ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check: `bool(result)` says if it passed, `repr(result)` is the message."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def check_function(fn, reference: Callable, cases, *, hint: str = "", rtol: float = RTOL,
                   atol: float = ATOL) -> CheckResult:
    """Run `fn` and `reference` on each case (a tuple of arguments, or one argument) and compare."""
    if not callable(reference):
        raise ValueError(f"reference must be a function, got {type(reference).__name__}")
    cases = _check_cases(cases)
    if not callable(fn):
        return _fail(f"expected a function, got {_short(fn)} ({type(fn).__name__})", hint)
    name = getattr(fn, "__name__", "your function")
    for k, case in enumerate(cases, 1):
        args = case if isinstance(case, tuple) else (case,)
        call = f"{name}({', '.join(_short(a) for a in args)})"
        where = f"case {k} of {len(cases)}: {call}"
        expected = reference(*_copy(args))  # a copy each: neither function can change the other's input
        try:
            got = fn(*_copy(args))
        except Exception as err:  # the learner's bug is a failed case, reported, not a crash
            return _fail(f"{where} raised {type(err).__name__}: {err}", hint)
        if got is None and expected is not None:
            return _fail(f"{where} returned None; did you forget a `return`?", hint)
        diff = _difference(got, expected, rtol, atol, reveal=True)
        if diff and not isinstance(expected, (list, tuple, dict, torch.Tensor)):
            return _fail(f"{where}\n  expected {_short(expected, 200)}, got {_short(got, 200)}", hint)
        if diff:  # a container: show both, then where they first differ
            shown = f"\n  expected: {_short(expected, 200)}\n  got:      {_short(got, 200)}"
            return _fail(f"{where}{shown}\n  ({diff})", hint)
    n = len(cases)
    return CheckResult(True, f"✅ Correct — all {n} cases pass" if n > 1 else "✅ Correct — 1 case passes")


def check_value(value, expected, *, hint: str = "", rtol: float = RTOL, atol: float = ATOL) -> CheckResult:
    """Compare a learner's value with the expected one, without showing the expected value."""
    diff = _difference(value, expected, rtol, atol, reveal=False)
    return _fail(diff, hint) if diff else CheckResult(True, "✅ Correct")


def _fail(what: str, hint: str) -> CheckResult:
    return CheckResult(False, f"❌ Not yet — {what}" + (f"\nHint: {hint}" if hint else ""))


def _check_cases(cases) -> list:
    cases = cases() if callable(cases) else cases
    if not isinstance(cases, (list, tuple)) or not cases:
        raise ValueError(f"cases must be a non-empty list of argument tuples, got {_short(cases)}")
    return list(cases)


def _copy(args: tuple) -> tuple:
    try:
        return copy.deepcopy(args)
    except Exception:  # something that cannot be copied (an open file, a C object) is passed as it is
        return args


# --- comparing a result with the expected one ---------------------------------------------------


def _difference(got, expected, rtol: float, atol: float, reveal: bool, where: str = "") -> str | None:
    """None if `got` matches `expected`, else one line saying what differs (and where, inside lists)."""
    at = f" at {where}" if where else ""
    if isinstance(expected, torch.Tensor):
        return _tensor_difference(got, expected, rtol, atol, reveal, at)
    if isinstance(expected, (bool, type(None))):
        return None if got is expected else _wrong(got, expected, reveal, at)
    if isinstance(expected, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"got {type(got).__name__}{at}, expected a number"
        if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) or (math.isnan(got) and math.isnan(expected)):
            return None
        if reveal:
            return _wrong(got, expected, reveal, at)
        return f"{got!r}{at} is too {'high' if got > expected else 'low'}"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"got {type(got).__name__}{at}, expected a {type(expected).__name__}"
        if len(got) != len(expected):
            return f"got {len(got)} element{'s' * (len(got) != 1)}{at}, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            diff = _difference(g, e, rtol, atol, reveal, f"{where}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"got {type(got).__name__}{at}, expected a dict"
        if set(got) != set(expected):
            missing, extra = set(expected) - set(got), set(got) - set(expected)
            parts = [f"{label} {_short(sorted(keys, key=repr))}"
                     for label, keys in (("missing", missing), ("unexpected", extra)) if keys]
            return f"the keys{at} differ: " + "; ".join(parts)
        for key in expected:
            diff = _difference(got[key], expected[key], rtol, atol, reveal, f"{where}[{key!r}]")
            if diff:
                return diff
        return None
    if not isinstance(got, type(expected)):
        return f"got {type(got).__name__}{at}, expected {type(expected).__name__}"
    return None if got == expected else _wrong(got, expected, reveal, at)


def _wrong(got, expected, reveal: bool, at: str) -> str:
    return f"got {_short(got)}{at}, expected {_short(expected)}" if reveal else f"{_short(got)}{at} is not right"


def _tensor_difference(got, expected: torch.Tensor, rtol, atol, reveal, at) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"got {type(got).__name__}{at}, expected a tensor of shape {tuple(expected.shape)}"
    if got.shape != expected.shape:
        return f"got shape {tuple(got.shape)}{at}, expected shape {tuple(expected.shape)}"
    floating = expected.dtype.is_floating_point or expected.dtype.is_complex
    if floating != (got.dtype.is_floating_point or got.dtype.is_complex):
        kind = "a floating-point" if floating else "an integer"
        return f"got dtype {got.dtype}{at}, expected {kind} tensor ({expected.dtype})"
    g, e = got.detach().cpu().to(expected.dtype), expected.detach().cpu()
    close = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True) if floating else g == e
    if bool(close.all()):
        return None
    index = tuple(int(i) for i in (~close).nonzero()[0])
    n_bad = int((~close).sum())
    values = f"got {g[index].item():.6g}, expected {e[index].item():.6g}" if reveal else "the value is not right"
    return f"{n_bad} of {close.numel()} values differ{at}; first at index {index}: {values}"


def _short(value, limit: int = 60) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() > 8:
            return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    text = " ".join(repr(value).split())  # on one line, whatever the repr (an nn.Module spans many)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    name: str
    checker: Callable[[Any], CheckResult]  # the learner's answer -> result
    hint: str = ""


_REGISTRY: dict[str, Exercise] = {}
_NAME = re.compile(r"^\d\d\.[a-z0-9_]+$")
_BANK = "lmlab.exercise_bank"  # one module per lesson, `l04` registers the exercises "04.*"


def register(name: str, checker: Callable[[Any], CheckResult], hint: str = "") -> Exercise:
    """Register an exercise under `name` ("NN.what", NN = the lesson); `checker(answer)` checks it."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must look like '02.char_encode' (lesson number, dot, lower-case words), got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"name {name!r} is already registered; pick another name")
    if not callable(checker):
        raise ValueError(f"checker must be a function of the learner's answer, got {type(checker).__name__}")
    _REGISTRY[name] = Exercise(name, checker, hint)
    return _REGISTRY[name]


def function_exercise(name: str, *, cases, hint: str = "", rtol: float = RTOL, atol: float = ATOL):
    """Decorator: register the decorated function as the reference solution of exercise `name`.

    `cases`: a list of argument tuples, or a function returning one (called at check time, so that
    cases needing a corpus or a trained tokenizer cost nothing until a learner checks).
    """
    def decorate(reference):
        register(name, lambda fn: check_function(fn, reference, cases, hint=hint, rtol=rtol, atol=atol), hint)
        return reference
    return decorate


def value_exercise(name: str, *, expected, hint: str = "", rtol: float = RTOL, atol: float = ATOL) -> Exercise:
    """Register a value exercise; `expected` may be a function computing the value at check time."""
    def checker(value):
        return check_value(value, expected() if callable(expected) else expected, hint=hint, rtol=rtol, atol=atol)
    return register(name, checker, hint)


def check(name: str, answer) -> CheckResult:
    """Check a learner's answer (a function or a value) to the registered exercise `name`."""
    if isinstance(name, str) and name not in _REGISTRY and _NAME.match(name):
        _load_lesson(name[:2])
    if name not in _REGISTRY:
        lesson = name.split(".")[0] if isinstance(name, str) else ""
        known = [n for n in _REGISTRY if n.startswith(lesson + ".")] or list(_REGISTRY)
        raise ValueError(f"name must be a registered exercise such as {', '.join(map(repr, known[:6]))}, got {name!r}")
    return _REGISTRY[name].checker(answer)


def names(prefix: str = "") -> list[str]:
    """The exercises whose name starts with `prefix` (e.g. "02."), the lessons' modules included."""
    if re.match(r"\d\d", prefix):
        _load_lesson(prefix[:2])
    else:
        for lesson in _bank_lessons():
            _load_lesson(lesson)
    return sorted(n for n in _REGISTRY if n.startswith(prefix))


def _load_lesson(lesson: str) -> None:
    """Import the lesson's exercise module, if there is one; importing it registers its exercises."""
    try:
        found = importlib.util.find_spec(f"{_BANK}.l{lesson}") is not None
    except ModuleNotFoundError:  # no exercise bank at all
        return
    if found:
        importlib.import_module(f"{_BANK}.l{lesson}")


def _bank_lessons() -> list[str]:
    try:
        bank = importlib.import_module(_BANK)
    except ModuleNotFoundError:
        return []
    return [m.name[1:] for m in pkgutil.iter_modules(bank.__path__) if re.fullmatch(r"l\d\d", m.name)]
