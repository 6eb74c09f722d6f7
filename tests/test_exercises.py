import sys

import pytest
import torch

from lmlab import exercises
from lmlab.exercises import CheckResult, check, check_function, check_value, function_exercise, value_exercise


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


def test_the_learner_cannot_change_the_cases():
    x = torch.ones(2, 2)

    def in_place(t):
        return t.mul_(2)

    assert check_function(in_place, double, cases=[x, x])
    assert torch.equal(x, torch.ones(2, 2))


def test_check_value_does_not_reveal_the_answer():
    assert check_value(65, 65) and repr(check_value(65, 65)) == "✅ Correct"
    result = check_value(64, 65, hint="count distinct characters")
    assert not result
    assert "65" not in repr(result) and "too low" in repr(result)
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
    with pytest.raises(ValueError, match="name must be a registered exercise such as '99.one'"):
        check("99.two", 2)
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
        with pytest.raises(ValueError, match="name must be a registered exercise such as '98.triple'"):
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
