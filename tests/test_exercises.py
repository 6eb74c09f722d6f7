import sys

import pytest
import torch

from lmlab import exercises
from lmlab.exercises import (Case, CheckResult, check, check_function, check_value, function_exercise, hint,
                             value_exercise)


def double(x):
    return x * 2


@pytest.fixture
def registry():
    """Exercises registered by a test are removed afterwards."""
    before = dict(exercises._REGISTRY)
    yield exercises._REGISTRY
    exercises._REGISTRY.clear()
    exercises._REGISTRY.update(before)


def test_pass_is_truthy_and_its_repr_is_the_message():
    result = check_function(lambda x: x + x, double, cases=[1, 2.5, (7,), ([1],), ("ab",)])
    assert isinstance(result, CheckResult) and result
    assert repr(result) == str(result) == "✅ Correct — all 5 cases pass"
    assert repr(check_function(lambda x: 2 * x, double, cases=[3])) == "✅ Correct — 1 case passes"


def test_wrong_result_names_the_case_with_expected_and_got():
    def my_double(x):
        return x * 2 if x < 10 else x + 2

    result = check_function(my_double, double, cases=[1, 2, 12], hint="multiply by two")
    assert not result
    message = repr(result)
    assert message.startswith("❌ Not yet — case 3 of 3: my_double(12)")
    assert "expected 24, got 14" in message
    assert message.endswith("Hint: multiply by two")


def test_list_difference_says_where():
    def doubles(xs):
        return [2 * x for x in xs]

    result = check_function(lambda xs: doubles(xs)[:-1], doubles, cases=[([1, 2, 3],), ([4],)])
    assert "case 1 of 2" in repr(result) and "got 2 elements, expected 3" in repr(result)
    result = check_function(lambda xs: doubles(xs) if len(xs) > 1 else [], doubles, cases=[([1, 2, 3],), ([4],)])
    assert "case 2 of 2" in repr(result) and "got 0 elements, expected 1" in repr(result)
    result = check_function(lambda xs: [2, 5, 6], doubles, cases=[([1, 2, 3],)])
    assert "expected: [2, 4, 6]\n  got:      [2, 5, 6]\n  (got 5 at [1], expected 4)" in repr(result)
    result = check_function(lambda d: {"a": 1, "b": 3}, lambda d: {"a": 1, "b": 2}, cases=[0])
    assert "got 3 at ['b'], expected 2" in repr(result)


def test_learner_function_that_raises_is_a_failure_with_its_message():
    def broken(x):
        raise KeyError("no such character 'z'")

    result = check_function(broken, double, cases=[1, 2])
    assert not result
    assert "case 1 of 2: broken(1) raised KeyError" in repr(result)
    assert "no such character 'z'" in repr(result)


def test_missing_return_and_non_function_answers_fail_clearly():
    def forgot(x):
        x * 2

    assert "did you forget a `return`" in repr(check_function(forgot, double, cases=[1]))
    result = check_function(42, double, cases=[1])
    assert not result and "expected a function, got 42" in repr(result)


def test_tensors_are_compared_by_shape_dtype_and_value():
    x = torch.arange(6.0).view(2, 3)
    assert check_function(lambda t: t * 2 + 1e-7, double, cases=[x])  # within tolerance
    result = check_function(lambda t: (t * 2)[:, :2], double, cases=[x])
    assert "got shape (2, 2), expected shape (2, 3)" in repr(result)
    result = check_function(lambda t: t * 2 + (t == 4), double, cases=[x])
    assert "1 of 6 values differ; first at index (1, 1): got 9, expected 8" in repr(result)
    result = check_function(lambda t: (t * 2).long(), double, cases=[x])
    assert "got dtype torch.int64, expected a floating-point tensor" in repr(result)
    ids = torch.tensor([[1, 2], [3, 4]])
    assert "got list" in repr(check_function(lambda t: t.tolist(), lambda t: t, cases=[ids]))
    assert check_function(lambda t: t.clone(), lambda t: t, cases=[ids])


def test_floats_use_a_tolerance():
    assert check_function(lambda: 0.1 + 0.2, lambda: 0.3, cases=[()])
    assert not check_function(lambda: 0.31, lambda: 0.3, cases=[()])
    assert check_function(lambda: float("nan"), lambda: float("nan"), cases=[()])


def test_the_learner_cannot_change_the_cases_and_changing_an_argument_in_place_fails():
    x = torch.ones(2, 2)

    def in_place(t):
        return t.mul_(2)

    result = check_function(in_place, double, cases=[x, x])
    assert not result and "case 1 of 2" in repr(result)
    assert "changed argument 1 (tensor([[1., 1.], [1., 1.]])) in place" in repr(result)
    assert torch.equal(x, torch.ones(2, 2))  # the cases themselves are untouched
    # NaN stays NaN: an untouched argument holding NaN is not "changed"
    assert check_function(lambda t: t * 2, double, cases=[torch.tensor([float("nan"), 1.0])])


def test_an_argument_that_may_change_is_not_a_failure():
    model = torch.nn.Linear(2, 2)

    def step(m, scale):
        with torch.no_grad():
            m.weight.mul_(scale)
        return scale

    assert check_function(step, lambda m, scale: scale, cases=[(model, 2.0)], may_change=(0,))
    result = check_function(step, lambda m, scale: scale, cases=[(model, 2.0)])
    assert not result and "changed argument 1 (Linear(in_features=2, out_features=2, bias=True; 6 parameters))" in repr(result)
    # a generator is there to be drawn from
    g = torch.Generator().manual_seed(0)
    assert check_function(lambda gen: 1, lambda gen: torch.rand(1, generator=gen) and 1, cases=[(g,)])
    with pytest.raises(ValueError, match="may_change must be a list of argument positions"):
        check_function(step, step, cases=[(model, 2.0)], may_change=("model",))


def test_case_descriptions_are_printed_in_full():
    why = "two rows whose answers differ, so that a function written for one row is caught — " * 2
    result = check_function(lambda t: t[:1].expand(2, 2).clone(), lambda t: t, cases=[Case((torch.eye(2),), why)])
    assert f"case 1 of 1 ({why}): <lambda>(tensor([[1., 0.], [0., 1.]]))" in repr(result)


def test_messages_summarise_modules_dicts_and_tensors_on_one_line():
    from lmlab.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8))
    result = check_function(lambda m: 1, lambda m: 2, cases=[(model,)])
    assert "<lambda>(GPT(vocab_size=5, n_layer=1, n_head=2, n_embd=8, block_size=8; " in repr(result)
    assert "(tok_emb)" not in repr(result)
    big = {"logits": torch.zeros(3, 10), "loss": 1.5}
    result = check_function(lambda d: {"loss": 2.0}, lambda d: d, cases=[(big,)])
    first_line = repr(result).splitlines()[0]
    assert "{'logits': tensor(shape=(3, 10), dtype=torch.float32), 'loss': 1.5}" in first_line


def test_check_value_does_not_reveal_the_answer():
    assert check_value(65, 65) and repr(check_value(65, 65)) == "✅ Correct"
    result = check_value(64, 65, hint="count distinct characters")
    assert not result
    assert "65" not in repr(result) and "64 is not right" in repr(result)
    # no direction either: "too high" / "too low" would let a learner bisect their way to the answer
    for wrong in (64, 66, 0.5, 1e9):
        message = repr(check_value(wrong, 65))
        assert "high" not in message and "low" not in message
    result = check_value(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5]))
    assert "1 of 2 values differ" in repr(result) and "0.5" not in repr(result)
    assert "expected a number" in repr(check_value("65", 65))


def test_bad_reference_or_cases_are_refused():
    with pytest.raises(ValueError, match="reference must be a function"):
        check_function(double, 42, cases=[1])
    with pytest.raises(ValueError, match="cases must be a non-empty list"):
        check_function(double, double, cases=[])
    with pytest.raises(ValueError, match="cases must be a non-empty list"):
        check_function(double, double, cases=None)


def test_registry_function_and_value_exercises(registry):
    @function_exercise("99.double", cases=lambda: [1, 2, 3], hint="times two")
    def _double(x):
        return 2 * x

    assert _double(4) == 8  # the decorator returns the reference unchanged
    assert check("99.double", lambda x: x + x)
    assert "Hint: times two" in repr(check("99.double", lambda x: x + 1))
    value_exercise("99.answer", expected=lambda: 6 * 7)
    assert check("99.answer", 42) and not check("99.answer", 41)
    assert exercises.names("99.") == ["99.answer", "99.double"]


def test_registry_refuses_bad_names(registry):
    value_exercise("99.one", expected=1)
    with pytest.raises(ValueError, match="already registered"):
        value_exercise("99.one", expected=1)
    for bad in ("double", "2.x", "99.Double", "99.with space", 99):
        with pytest.raises(ValueError, match="name must look like '02.char_encode'"):
            value_exercise(bad, expected=1)
    with pytest.raises(ValueError, match=r"name must be one of lesson 99's exercises \('99.one'\), got '99.two'"):
        check("99.two", 2)
    with pytest.raises(ValueError, match="name must be a registered exercise such as '02.char_encode'"):
        check("no such exercise", 2)
    with pytest.raises(ValueError, match="name must be a registered exercise"):
        check(None, 2)
    with pytest.raises(ValueError, match="checker must be a function"):
        exercises.register("99.three", checker=3)


def test_a_lessons_module_is_imported_on_first_check(registry, tmp_path, monkeypatch):
    bank = tmp_path / "fake_bank"
    bank.mkdir()
    (bank / "__init__.py").write_text("")
    (bank / "l98.py").write_text(
        "from lmlab.exercises import function_exercise\n"
        "@function_exercise('98.triple', cases=[1, 2])\n"
        "def _triple(x):\n"
        "    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(exercises, "_BANK", "fake_bank")
    try:
        assert "98.triple" not in registry
        assert check("98.triple", lambda x: x * 3)
        assert exercises.names("98.") == ["98.triple"]
        with pytest.raises(ValueError, match="name must be one of lesson 98's exercises \\('98.triple'\\)"):
            check("98.quadruple", lambda x: x * 4)
        assert "98.triple" in exercises.names()
    finally:
        for module in ("fake_bank", "fake_bank.l98"):
            sys.modules.pop(module, None)


def test_lesson_02_exercises():
    assert exercises.names("02.") == ["02.char_encode", "02.compression_ratio"]

    def encode(text, vocab):
        return [vocab.index(ch) for ch in text]

    assert check("02.char_encode", encode)
    assert not check("02.char_encode", lambda text, vocab: [vocab.index(ch) + 1 for ch in text])

    def ratio(tokenizer, text):
        return len(text) / len(tokenizer.encode(text))

    assert check("02.compression_ratio", ratio)
    wrong = check("02.compression_ratio", lambda tokenizer, text: len(text) // len(tokenizer.encode(text)))
    assert not wrong and "BPETokenizer" in repr(wrong)


def test_hints_come_in_levels_a_repeat_failure_or_hint_shows_the_next(registry):
    @function_exercise("99.tiered", cases=[1, 2], hints=("nudge", "closer look", "recipe: return 2 * x"))
    def _twice(x):
        return 2 * x

    first = repr(check("99.tiered", lambda x: x))
    assert "Hint (hint 1 of 3): nudge" in first and "hint('99.tiered')" in first and "recipe" not in first
    assert "Hint (hint 2 of 3): closer look" in repr(check("99.tiered", lambda x: x))  # the same failure again
    assert "Hint (the recipe): recipe: return 2 * x" in repr(check("99.tiered", lambda x: x))
    assert "Hint (the recipe)" in repr(check("99.tiered", lambda x: x))  # the recipe stays the last level
    assert check("99.tiered", lambda x: x + x)


def test_a_new_failure_keeps_the_level_and_hint_asks_for_the_next(registry):
    value_exercise("99.tiered_value", expected=42, hints=("one", "two", "three"))
    assert repr(exercises.hint("99.tiered_value")) == "Hint (hint 1 of 3): one\n(Stuck? hint('99.tiered_value') shows the next level.)"
    assert "Hint (hint 2 of 3): two" in repr(hint("99.tiered_value"))
    # a failure after the learner asked for level 2 shows level 2, not the nudge again
    assert "Hint (hint 2 of 3): two" in repr(check("99.tiered_value", 41))
    assert "Hint (hint 2 of 3): two" in repr(check("99.tiered_value", "41"))  # another kind of failure
    assert "Hint (the recipe): three" in repr(hint("99.tiered_value"))
    assert "Hint (the recipe): three" in repr(hint("99.tiered_value"))
    value_exercise("99.no_hints", expected=1)
    assert "has no hints" in repr(hint("99.no_hints"))
    with pytest.raises(ValueError, match="hints must be a list of non-empty strings"):
        value_exercise("99.bad_hints", expected=1, hints="just a string")


def test_a_stored_check_shows_only_the_first_level(registry):
    """A notebook runs each check once: the stub's failure must show the nudge, never the recipe."""
    @function_exercise("99.stub", cases=[1], hints=("think about doubling", "use *", "return x * 2"))
    def _d(x):
        return 2 * x

    def stub(x):
        raise NotImplementedError("your code here")

    message = repr(check("99.stub", stub))
    assert "think about doubling" in message and "return x * 2" not in message
