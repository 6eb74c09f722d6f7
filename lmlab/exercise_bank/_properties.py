"""Checks by properties, for exercises whose answer has no single right output (a random masking, a widget's state).

A checker built from these helpers calls the learner's function once per case, catches what it raises, checks
that it changed none of its arguments, and then tests what it returned, property by property; the first property
that fails is the message. `failure` strings name the kind of failure, so that a repeat shows the next hint.
"""

from __future__ import annotations

import copy

import torch

from lmlab.exercises import CheckResult


class Failed(Exception):
    """Raised inside a checker to stop at the first property that does not hold."""

    def __init__(self, what: str, failure: str):
        super().__init__(what)
        self.result = CheckResult(False, f"❌ Not yet — {what}", failure)


def passed(n_cases: int) -> CheckResult:
    return CheckResult(True, f"✅ Correct — all {n_cases} cases pass" if n_cases > 1 else "✅ Correct — 1 case passes")


def run(checker):
    """Wrap `checker(answer)`, which raises `Failed` at the first problem and returns a CheckResult otherwise."""
    def check(answer):
        try:
            return checker(answer)
        except Failed as failed:
            return failed.result
    return check


def call(fn, args: tuple, where: str, may_change=()):
    """`fn(*args)`, with its exceptions and in-place changes of the arguments turned into failures."""
    if not callable(fn):
        raise Failed(f"expected a function, got {type(fn).__name__}", "not a function")
    before = copy.deepcopy(args)
    try:
        result = fn(*args)
    except Exception as err:  # the learner's bug is a failed case, not a crash
        raise Failed(f"{where} raised {type(err).__name__}: {err}", f"{where}: raised {type(err).__name__}") from None
    for i, (b, a) in enumerate(zip(before, args)):
        if i not in may_change and isinstance(b, torch.Tensor) and not torch.equal(a, b):
            raise Failed(f"{where} changed argument {i + 1} in place; leave the input as it was and return new tensors",
                         f"{where}: changed argument {i + 1}")
    if result is None:
        raise Failed(f"{where} returned None; did you forget a `return`?", f"{where}: returned None")
    return result


def require(condition, what: str, failure: str):
    if not condition:
        raise Failed(what, failure)
