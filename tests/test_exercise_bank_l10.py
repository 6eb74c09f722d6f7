"""Lesson 10's exercises: checked from the playground's state, they pass with a right setting and fail, saying
why, with a wrong one, another prompt, other filters left on, or something that is not a playground."""

import pytest

from lmlab import exercises, pretrained
from lmlab.exercise_bank.l10 import WINDOW
from lmlab.exercises import check

pytestmark = pytest.mark.skipif("shakespeare-char" not in pretrained.available(),
                                reason="the shipped char model is not installed")


@pytest.fixture(autouse=True)
def first_hints():
    exercises._SHOWN.clear()


@pytest.fixture(scope="module")
def playground():
    from lmlab.widgets import Playground

    return Playground(prompt=WINDOW, max_new_tokens=5)


def reset(pg, **values):
    pg.set(prompt=WINDOW, strategy="sample", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    pg.set(**values)
    return pg


def test_the_playground_as_it_starts_fails_every_exercise_cleanly(playground):
    reset(playground)
    for name in ("10.top_p_keeps_5", "10.min_p_keeps_3", "10.top_k_keeps_more"):
        result = check(name, playground)
        assert not result and "hint 1 of 3" in repr(result), name


def test_top_p_keeps_5_passes_on_the_whole_range_that_keeps_5_and_fails_outside(playground):
    sorted_probs = playground.view.probs[0].sort(descending=True).values.cumsum(0)
    low, high = float(sorted_probs[3]), float(sorted_probs[4])
    near_the_edges = {round(edge + 0.01 * i, 2) for edge in (low, high) for i in range(-2, 3)} | {0.5, 0.99}
    for p in sorted(near_the_edges):
        result = check("10.top_p_keeps_5", reset(playground, top_p=p))
        assert bool(result) == (low + 1e-6 < p <= high + 1e-6), (p, repr(result))
    assert "keeps 7 tokens here, not 5" in repr(check("10.top_p_keeps_5", reset(playground, top_p=0.9)))


def test_top_p_keeps_5_names_what_else_is_wrong(playground):
    assert "min-p is on" in repr(check("10.top_p_keeps_5", reset(playground, top_p=0.75, min_p=0.1)))
    assert "temperature is 1.5" in repr(check("10.top_p_keeps_5", reset(playground, top_p=0.75, temperature=1.5)))
    assert "this exercise is about" in repr(check("10.top_p_keeps_5", reset(playground, top_p=0.75, prompt="ROMEO:\n")))
    assert "strategy is 'greedy'" in repr(check("10.top_p_keeps_5", reset(playground, top_p=0.75, strategy="greedy")))
    assert "top-p is off" in repr(check("10.top_p_keeps_5", reset(playground)))


def test_min_p_keeps_3_at_temperature_1_5(playground):
    assert check("10.min_p_keeps_3", reset(playground, temperature=1.5, min_p=0.55))
    assert "keeps 4 tokens here, not 3" in repr(check("10.min_p_keeps_3", reset(playground, temperature=1.5, min_p=0.5)))
    assert "keeps exactly" not in repr(check("10.min_p_keeps_3", reset(playground, temperature=1.0, min_p=0.4)))


def test_top_k_keeps_more_wants_a_confident_prompt(playground):
    assert check("10.top_k_keeps_more", reset(playground, prompt="HAMLET:\nTo be, or not to b"))
    result = check("10.top_k_keeps_more", reset(playground, prompt="KING HENRY:\nThe "))
    assert not result and "keeps 19 tokens" in repr(result)


def test_anything_but_a_playground_fails_cleanly():
    for answer in (None, 0.75, "top_p=0.75"):
        result = check("10.top_p_keeps_5", answer)
        assert not result and "expected the playground itself" in repr(result)
