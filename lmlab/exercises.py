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

Hints come in levels (`hints=("a nudge", "a closer look", "the recipe")`). The first failure shows the
nudge; the same failure again, or `hint("NN.name")`, shows the next level, and the recipe comes last, so
that a stored notebook (which runs each check once) never shows more than the nudge.

A function's arguments must come back as they went in: a learner's function that changes an argument
in place fails, unless the exercise says that argument may change (`may_change=(0,)`, e.g. a model
that a training step updates). A case may carry a description (`Case(args, "why this case")`), which a
failure prints in full.

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
    failure: str | None = None  # what kind of failure (which case, which way), to tell a repeat from a new one

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


@dataclass(frozen=True)
class Case:
    """One case of a function exercise: its arguments and, optionally, what it tests (shown in full on failure)."""

    args: tuple
    description: str = ""


def check_function(fn, reference: Callable, cases, *, hint: str = "", hints=None, rtol: float = RTOL,
                   atol: float = ATOL, may_change=()) -> CheckResult:
    """Run `fn` and `reference` on each case (a tuple of arguments, one argument, or a `Case`) and compare.

    `may_change`: positions of the arguments that `fn` is allowed to change in place (a model that it
    trains, say); any other argument changed in place is a failure. The first hint level is shown.
    """
    levels = _hint_levels(hint, hints)
    result = _compare_function(fn, reference, cases, rtol, atol, _positions(may_change))
    return _with_hint(result, levels[0] if levels else "")


def _compare_function(fn, reference, cases, rtol, atol, may_change) -> CheckResult:
    if not callable(reference):
        raise ValueError(f"reference must be a function, got {type(reference).__name__}")
    cases = _check_cases(cases)
    if not callable(fn):
        return _fail(f"expected a function, got {_short(fn)} ({type(fn).__name__})", "not a function")
    name = getattr(fn, "__name__", "your function")
    for k, case in enumerate(cases, 1):
        args, description = (case.args, case.description) if isinstance(case, Case) else (case, "")
        args = args if isinstance(args, tuple) else (args,)
        call = f"{name}({', '.join(_short(a) for a in args)})"
        where = f"case {k} of {len(cases)}" + (f" ({description})" if description else "") + f": {call}"
        expected = reference(*_copy(args))  # a copy each: neither function can change the other's input
        given, before = _copy(args), _copy(args)
        try:
            got = fn(*given)
        except Exception as err:  # the learner's bug is a failed case, reported, not a crash
            return _fail(f"{where} raised {type(err).__name__}: {err}", f"case {k} raised {type(err).__name__}")
        changed = _changed_argument(before, given, may_change)
        if changed is not None:
            return _fail(f"{where} changed argument {changed + 1} ({_short(before[changed])}) in place; return a new "
                         f"result and leave the arguments as they were", f"case {k} changed argument {changed + 1}")
        if got is None and expected is not None:
            return _fail(f"{where} returned None; did you forget a `return`?", f"case {k} returned None")
        diff = _difference(got, expected, rtol, atol, reveal=True)
        if diff and not isinstance(expected, (list, tuple, dict, torch.Tensor)):
            return _fail(f"{where}\n  expected {_short(expected, 200)}, got {_short(got, 200)}", f"case {k} differs")
        if diff:  # a container: show both, then where they first differ
            shown = f"\n  expected: {_short(expected, 200)}\n  got:      {_short(got, 200)}"
            return _fail(f"{where}{shown}\n  ({diff})", f"case {k} differs")
    n = len(cases)
    return CheckResult(True, f"✅ Correct — all {n} cases pass" if n > 1 else "✅ Correct — 1 case passes")


def check_value(value, expected, *, hint: str = "", hints=None, rtol: float = RTOL, atol: float = ATOL) -> CheckResult:
    """Compare a learner's value with the expected one, without showing the expected value or its direction."""
    levels = _hint_levels(hint, hints)
    return _with_hint(_compare_value(value, expected, rtol, atol), levels[0] if levels else "")


def _compare_value(value, expected, rtol, atol) -> CheckResult:
    diff = _difference(value, expected, rtol, atol, reveal=False)
    if not diff:
        return CheckResult(True, "✅ Correct")
    # every wrong number is the same kind of failure; a wrong type or shape is another ("got str, ...")
    return _fail(diff, diff if diff.startswith("got ") else "wrong value")


def _fail(what: str, failure: str) -> CheckResult:
    return CheckResult(False, f"❌ Not yet — {what}", failure)


def _with_hint(result: CheckResult, text: str) -> CheckResult:
    if result or not text:
        return result
    return CheckResult(False, f"{result.message}\nHint: {text}", result.failure)


def _hint_levels(hint, hints) -> tuple[str, ...]:
    """The hint levels, from a nudge to the recipe; `hint` (one string) is a single level."""
    if hints is None:
        return (hint,) if hint else ()
    if isinstance(hints, str) or not isinstance(hints, (list, tuple)) or not all(isinstance(h, str) and h for h in hints):
        raise ValueError(f"hints must be a list of non-empty strings, from a nudge to the recipe, got {_short(hints)}")
    return tuple(hints)


def _positions(may_change) -> frozenset:
    if isinstance(may_change, int) and not isinstance(may_change, bool):
        may_change = (may_change,)
    if not isinstance(may_change, (list, tuple, set, frozenset)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in may_change):
        raise ValueError(f"may_change must be a list of argument positions (0, 1, ...), got {may_change!r}")
    return frozenset(may_change)


def _check_cases(cases) -> list:
    cases = cases() if callable(cases) else cases
    if not isinstance(cases, (list, tuple)) or not cases:
        raise ValueError(f"cases must be a non-empty list of argument tuples, got {_short(cases)}")
    return list(cases)


class _Uncopyable(tuple):
    """Arguments that could not be copied: passed as they are, and not checked for changes."""


def _copy(args: tuple) -> tuple:
    try:
        return copy.deepcopy(args)
    except Exception:  # something that cannot be copied (an open file, a C object) is passed as it is
        return _Uncopyable(args)


def _changed_argument(before: tuple, after: tuple, may_change) -> int | None:
    """The position of the first argument that the call changed in place, or None."""
    if isinstance(before, _Uncopyable) or isinstance(after, _Uncopyable):
        return None
    for i, (b, a) in enumerate(zip(before, after)):
        if i not in may_change and not _same(b, a):
            return i
    return None


def _same(a, b) -> bool:
    """Whether `b` still equals its copy `a`: tensors bit for bit (NaN included), modules by their weights."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and bool(((a == b) | (a != a) & (b != b)).all()))
    if isinstance(a, torch.Generator):  # drawing random numbers is what a generator is for
        return True
    if isinstance(a, torch.nn.Module):
        return isinstance(b, torch.nn.Module) and _same(a.state_dict(), b.state_dict())
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a).__eq__ is object.__eq__:  # no equality of its own: compare its attributes, if it has any
        return _same(vars(a), vars(b)) if hasattr(a, "__dict__") and hasattr(b, "__dict__") else True
    try:
        return bool(a == b)
    except Exception:  # an equality that does not give one answer (an array, say): trust it
        return True


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
        # never "too high" or "too low": that would let a learner find the answer by bisection
        return _wrong(got, expected, reveal, at)
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
    """`value` on one line: small tensors in full, others by shape; modules by what they are, not a dump."""
    if isinstance(value, torch.Tensor):
        if value.numel() > 8:
            return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
        return " ".join(repr(value.detach()).split())
    if isinstance(value, torch.nn.Module):
        return _module_summary(value)
    if isinstance(value, dict) and value:
        limit = max(limit, 120)
        items = ", ".join(f"{k!r}: {_short(v, 40)}" for k, v in value.items())
        text = "{" + items + "}"
        return text if len(text) <= limit else f"dict of {len(value)} keys ({_short(list(value), limit - 20)})"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, torch.nn.Module, dict)) for v in value):
        inner = ", ".join(_short(v, 40) for v in value)
        text = f"[{inner}]" if isinstance(value, list) else f"({inner})"
        return text if len(text) <= limit else f"{type(value).__name__} of {len(value)} items"
    text = " ".join(repr(value).split())  # on one line, whatever the repr
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _module_summary(module: torch.nn.Module) -> str:
    """E.g. 'GPT(vocab_size=5, n_layer=1, n_head=2, n_embd=8; 1,234 parameters)' or 'Linear(in_features=8, ...)'."""
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "__dataclass_fields__"):
        fields = [f"{k}={getattr(config, k)}" for k in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size")
                  if hasattr(config, k)]
        inside = ", ".join(fields)
    elif not list(module.children()):  # a leaf such as Linear or LayerNorm: its own one-line description
        inside = module.extra_repr()
    else:
        inside = ", ".join(type(m).__name__ for _, m in list(module.named_children())[:4])
    n = sum(p.numel() for p in module.parameters())
    return f"{type(module).__name__}({inside}; {n:,} parameters)" if inside else f"{type(module).__name__}({n:,} parameters)"


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    name: str
    checker: Callable[[Any], CheckResult]  # the learner's answer -> result, without any hint
    hints: tuple[str, ...] = ()  # from a nudge to the recipe


@dataclass(frozen=True)
class Hint:
    """A hint as a notebook shows it: `repr` is the text."""

    text: str

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


_REGISTRY: dict[str, Exercise] = {}
_SHOWN: dict[str, tuple[int, str | None]] = {}  # per exercise: the hint level shown last, the failure it was for
_NAME = re.compile(r"^\d\d\.[a-z0-9_]+$")
_BANK = "lmlab.exercise_bank"  # one module per lesson, `l04` registers the exercises "04.*"


def register(name: str, checker: Callable[[Any], CheckResult], hint: str = "", hints=None) -> Exercise:
    """Register an exercise under `name` ("NN.what", NN = the lesson); `checker(answer)` checks it.

    `hints`: the hint levels, from a nudge that gives no code to the recipe (`hint`: a single level).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must look like '02.char_encode' (lesson number, dot, lower-case words), got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"name {name!r} is already registered; pick another name")
    if not callable(checker):
        raise ValueError(f"checker must be a function of the learner's answer, got {type(checker).__name__}")
    _REGISTRY[name] = Exercise(name, checker, _hint_levels(hint, hints))
    return _REGISTRY[name]


def function_exercise(name: str, *, cases, hint: str = "", hints=None, rtol: float = RTOL, atol: float = ATOL,
                      may_change=()):
    """Decorator: register the decorated function as the reference solution of exercise `name`.

    `cases`: a list of argument tuples (or `Case`s), or a function returning one (called at check time,
    so that cases needing a corpus or a trained tokenizer cost nothing until a learner checks).
    """
    positions = _positions(may_change)

    def decorate(reference):
        register(name, lambda fn: _compare_function(fn, reference, cases, rtol, atol, positions), hint, hints)
        return reference
    return decorate


def value_exercise(name: str, *, expected, hint: str = "", hints=None, rtol: float = RTOL,
                   atol: float = ATOL) -> Exercise:
    """Register a value exercise; `expected` may be a function computing the value at check time."""
    def checker(value):
        return _compare_value(value, expected() if callable(expected) else expected, rtol, atol)
    return register(name, checker, hint, hints)


def check(name: str, answer) -> CheckResult:
    """Check a learner's answer (a function or a value) to the registered exercise `name`.

    A failure shows a hint: the first level at first, the next level when the same failure comes again.
    """
    exercise = _exercise(name)
    result = exercise.checker(answer)
    if result or not exercise.hints:
        return result
    level, last_failure = _SHOWN.get(name, (-1, None))
    level = level + 1 if result.failure == last_failure else max(level, 0)
    return CheckResult(False, f"{result.message}\n{_hint_text(exercise, level, result.failure)}", result.failure)


def hint(name: str) -> Hint:
    """The next hint level of exercise `name`: a nudge first, then a closer look, the recipe last."""
    exercise = _exercise(name)
    if not exercise.hints:
        return Hint(f"Exercise {name!r} has no hints: its check's message is all there is.")
    level, last_failure = _SHOWN.get(name, (-1, None))
    return Hint(_hint_text(exercise, level + 1, last_failure))


def _hint_text(exercise: Exercise, level: int, failure: str | None) -> str:
    last = len(exercise.hints) - 1
    level = min(level, last)
    _SHOWN[exercise.name] = (level, failure)
    if last == 0:
        return f"Hint: {exercise.hints[0]}"
    label = "the recipe" if level == last else f"hint {level + 1} of {last + 1}"
    more = f"\n(Stuck? hint({exercise.name!r}) shows the next level.)" if level < last else ""
    return f"Hint ({label}): {exercise.hints[level]}{more}"


def _exercise(name) -> Exercise:
    if isinstance(name, str) and name not in _REGISTRY and _NAME.match(name):
        _load_lesson(name[:2])
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    lesson = name.split(".")[0] if isinstance(name, str) else ""
    same_lesson = [n for n in sorted(_REGISTRY) if n.startswith(lesson + ".")]
    if same_lesson:
        raise ValueError(f"name must be one of lesson {lesson}'s exercises ({', '.join(map(repr, same_lesson))}), "
                         f"got {name!r}")
    raise ValueError(f"name must be a registered exercise such as '02.char_encode' (lmlab.exercises.names() lists "
                     f"them all), got {name!r}")


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
