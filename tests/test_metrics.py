"""The n-gram measures of generated text, on hand-counted cases, batches and edge cases."""

import pytest
import torch

from lmlab.metrics import distinct_n, mean_sem, repeated_ngrams, repetition_rate


def test_distinct_n_hand_counted():
    # "abab": bigrams ab, ba, ab -> 2 distinct of 3; trigrams aba, bab -> 2 of 2
    assert distinct_n("abab", 2) == pytest.approx(2 / 3)
    assert distinct_n("abab", 3) == 1.0
    assert distinct_n("aaaa", 1) == 0.25
    assert distinct_n([5, 6, 5, 6, 5], 2) == pytest.approx(2 / 4)


def test_repetition_rate_hand_counted_and_is_one_minus_distinct():
    assert repetition_rate("abab", 2) == pytest.approx(1 / 3)  # the second "ab" repeats the first
    assert repetition_rate("abcd", 2) == 0.0
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (50,), generator=g)
    for n in (1, 2, 3, 5):
        assert repetition_rate(x, n) == pytest.approx(1 - distinct_n(x, n))


def test_repeated_ngrams_flags_each_later_occurrence_in_order():
    assert repeated_ngrams("abcabca", 3).tolist() == [False, False, False, True, True]
    flags = repeated_ngrams(torch.tensor([1, 1, 1, 2]), 1)
    assert flags.dtype == torch.bool and flags.tolist() == [False, True, True, False]


def test_a_str_a_list_and_a_tensor_of_the_same_tokens_agree():
    text = "to be or not to be"
    ids = [ord(c) for c in text]
    for n in (1, 2, 4):
        assert distinct_n(text, n) == distinct_n(ids, n) == distinct_n(torch.tensor(ids), n)
        assert repetition_rate(text, n) == repetition_rate(torch.tensor(ids), n)


def test_batch_gives_one_value_per_row_equal_to_each_row_alone():
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 3, (4, 12), generator=g)
    for fn in (distinct_n, repetition_rate):
        values = fn(batch, 2)
        assert isinstance(values, torch.Tensor) and values.shape == (4,)
        assert values.tolist() == pytest.approx([fn(row, 2) for row in batch])
    ragged = ["abab", [1, 2, 3], "", torch.tensor([7, 7, 7])]  # rows of different lengths and kinds
    assert distinct_n(ragged, 2).tolist() == pytest.approx([2 / 3, 1.0, 0.0, 0.5])
    assert repetition_rate(ragged, 2).tolist() == pytest.approx([1 / 3, 0.0, 0.0, 0.5])


def test_pooled_counts_ngrams_shared_between_rows_and_never_spans_rows():
    assert distinct_n(["abc", "abc"], 2).tolist() == [1.0, 1.0]
    assert distinct_n(["abc", "abc"], 2, pooled=True) == 0.5  # ab, bc, ab, bc
    # "ab" + "cd": were the rows joined, "bc" would be counted
    assert distinct_n(["ab", "cd"], 2, pooled=True) == 1.0
    assert distinct_n(torch.tensor([[1, 2], [3, 4]]), 3, pooled=True) == 0.0


@pytest.mark.parametrize("empty", ["", [], torch.tensor([], dtype=torch.long)])
def test_empty_sequence_scores_zero(empty):
    assert distinct_n(empty, 1) == 0.0
    assert repetition_rate(empty, 1) == 0.0
    assert repeated_ngrams(empty, 1).tolist() == []


def test_n_longer_than_the_sequence_scores_zero():
    assert distinct_n("abc", 4) == 0.0
    assert repetition_rate("abc", 4) == 0.0
    assert repeated_ngrams("abc", 4).tolist() == []
    assert distinct_n("abc", 3) == 1.0  # exactly one n-gram
    assert distinct_n(torch.ones(2, 3, dtype=torch.long), 5).tolist() == [0.0, 0.0]


def test_an_empty_batch():
    assert distinct_n(torch.ones(0, 5, dtype=torch.long), 2).shape == (0,)
    assert distinct_n([[], []], 2).tolist() == [0.0, 0.0]
    assert distinct_n([[], []], 2, pooled=True) == 0.0


@pytest.mark.parametrize("call, name", [
    (lambda: distinct_n("abc", 0), "n"),
    (lambda: distinct_n("abc", 1.5), "n"),
    (lambda: repetition_rate([1, 2], True), "n"),
    (lambda: distinct_n(torch.ones(2, 2, 2), 1), "sequences"),
    (lambda: repetition_rate(42, 1), "sequences"),
    (lambda: distinct_n([1, [2, 3]], 1), "sequences"),
    (lambda: repeated_ngrams(["ab", "cd"], 1), "sequence"),
    (lambda: repeated_ngrams("abc", -1), "n"),
])
def test_bad_input_raises_one_sentence_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


def test_a_list_of_str_is_a_batch_of_texts_and_wrapped_string_tokens_are_one_sequence():
    assert distinct_n(["abab", "abcd"], 2).tolist() == pytest.approx([2 / 3, 1.0])
    tokens = [" to", " be", " or", " not", " to", " be"]
    assert distinct_n([tokens], 2).tolist() == pytest.approx([4 / 5])
    assert repetition_rate([tokens], 1).tolist() == pytest.approx([2 / 6])


def test_mean_sem_hand_computed():
    # 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14 / 3, sem = sqrt(14 / 3) / 2
    mean, sem = mean_sem([1.0, 2.0, 3.0, 6.0])
    assert mean.item() == pytest.approx(3.0) and sem.item() == pytest.approx((14 / 3) ** 0.5 / 2)
    mean, sem = mean_sem([5, 5])  # integers are averaged as numbers; identical values have no spread
    assert mean.item() == 5.0 and sem.item() == 0.0


def test_mean_sem_batch_is_each_row_alone_and_dim_picks_the_axis():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, generator=g)
    mean, sem = mean_sem(x)  # over the 7 columns: one value per row
    assert mean.shape == sem.shape == (3,)
    for i in range(3):
        m, s = mean_sem(x[i])
        assert mean[i].item() == pytest.approx(m.item()) and sem[i].item() == pytest.approx(s.item())
    mean0, sem0 = mean_sem(x, dim=0)  # over the 3 rows: one value per column
    assert mean0.shape == (7,) and torch.allclose(sem0, x.std(0) / 3**0.5)
    # the error bar of a mean of n measurements narrows like 1 / sqrt(n): 4x the data, half the bar
    assert mean_sem(x[0].repeat(4))[1].item() < mean_sem(x[0])[1].item()


@pytest.mark.parametrize("values, match", [
    ([1.0], "at least 2"),
    ([], "at least 2"),
    (torch.ones(4, 1), "at least 2"),
    (torch.tensor(1.0), "dimension"),
    ([1.0, float("nan")], "finite"),
    ([1.0, float("inf"), 2.0], "finite"),
])
def test_mean_sem_refuses_what_has_no_error_bar(values, match):
    with pytest.raises(ValueError, match=rf"^values must.*{match}"):
        mean_sem(values)
    with pytest.raises(ValueError, match="^values must have a dimension 2"):
        mean_sem(torch.ones(3, 4), dim=2)
