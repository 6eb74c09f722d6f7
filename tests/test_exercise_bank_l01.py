"""Lesson 01's exercises pass with their solutions and fail with the mistakes learners make."""

import torch

from lmlab.exercises import check, names
from lmlab.probability import sequence_logprob


def test_sequence_logprob_passes_with_the_reference_and_the_package_function():
    assert check("01.sequence_logprob", lambda model, ids: sequence_logprob(model, ids))


def test_sequence_logprob_fails_when_probabilities_are_multiplied():
    def product(model, ids):  # underflows to 0 on the long case, even in float64
        probs = torch.softmax(model(ids).double(), dim=-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        return probs.prod(dim=1).log()

    result = check("01.sequence_logprob", product)
    assert not result and "case 3 of 4" in repr(result)


def test_sequence_logprob_fails_without_the_shift():
    def unshifted(model, ids):  # scores token t with the distribution that predicts token t + 1
        logp = torch.log_softmax(model(ids), dim=-1)
        return logp.gather(-1, ids[:, :, None]).squeeze(-1).sum(dim=1)

    assert not check("01.sequence_logprob", unshifted)


def test_sequence_logprob_fails_for_a_first_row_only_answer():
    def first_row(model, ids):
        return sequence_logprob(model, ids[:1])

    result = check("01.sequence_logprob", first_row)
    assert not result and "case 2 of 4" in repr(result)


def test_bigram_prob_passes_with_the_reference():
    def bigram_prob(ids, prev, nxt, k, vocab_size):
        pairs = list(zip(ids, ids[1:]))
        starts = [b for a, b in pairs if a == prev]
        return (starts.count(nxt) + k) / (len(starts) + k * vocab_size)

    assert check("01.bigram_prob", bigram_prob)


def test_bigram_prob_fails_when_counting_occurrences_instead_of_pairs():
    def occurrences(ids, prev, nxt, k, vocab_size):  # counts the last token as a context too
        both = sum(1 for a, b in zip(ids, ids[1:]) if (a, b) == (prev, nxt))
        return (both + k) / (ids.count(prev) + k * vocab_size)

    result = check("01.bigram_prob", occurrences)
    assert not result and "case 1 of" in repr(result)


def test_bigram_prob_fails_when_k_is_added_once_to_the_total():
    def add_k_once(ids, prev, nxt, k, vocab_size):
        pairs = list(zip(ids, ids[1:]))
        starts = [b for a, b in pairs if a == prev]
        return (starts.count(nxt) + k) / (len(starts) + k)

    assert not check("01.bigram_prob", add_k_once)


def stub(*args):
    raise NotImplementedError("your code here")


def test_lesson_01_has_its_exercises():
    assert names("01.") == ["01.bigram_prob", "01.perplexity", "01.sequence_logprob"]


def test_every_stub_fails_cleanly_with_the_nudge_only():
    for name in ("01.sequence_logprob", "01.bigram_prob", "01.perplexity"):
        message = repr(check(name, stub))
        assert "case 1 of" in message and "NotImplementedError: your code here" in message, name
        assert "hint 1 of 3" in message and "return" not in message.split("Hint")[1], name


def test_perplexity_passes_written_another_way():
    def perplexity(logprobs, mask):
        nll = -(logprobs * mask).sum() / mask.sum()
        return float(torch.exp(nll))

    assert check("01.perplexity", perplexity)


def test_perplexity_fails_when_the_padding_counts():
    result = check("01.perplexity", lambda lp, mask: float((-lp.mean()).exp()))
    assert not result and "case 3 of 4" in repr(result) and "padding" in repr(result)


def test_perplexity_fails_as_a_mean_of_the_rows_perplexities():
    def per_row(logprobs, mask):
        rows = [(-lp[m].mean()).exp() for lp, m in zip(logprobs, mask)]
        return float(sum(rows) / len(rows))

    result = check("01.perplexity", per_row)
    assert not result and "case 2 of 4" in repr(result)


def test_perplexity_fails_as_a_mean_of_row_means():
    def row_means(logprobs, mask):
        means = [-lp[m].mean() for lp, m in zip(logprobs, mask)]
        return float(torch.stack(means).mean().exp())

    result = check("01.perplexity", row_means)
    assert not result and "case 3 of 4" in repr(result)


def test_perplexity_fails_through_the_product_of_probabilities():
    def geometric_mean(logprobs, mask):  # 1 / (product of p) ** (1 / N): the product underflows to 0
        p = logprobs[mask].double().exp()
        return float(1 / p.prod() ** (1 / p.numel()))

    result = check("01.perplexity", geometric_mean)
    assert not result and "case 4 of 4" in repr(result)


def test_perplexity_fails_without_the_exp():
    result = check("01.perplexity", lambda lp, mask: float(-lp[mask].mean()))
    assert not result and "case 1 of 4" in repr(result)
