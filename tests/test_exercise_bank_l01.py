"""Lesson 01's exercises pass with their solutions and fail with the mistakes learners make."""

import torch

from lmlab.exercises import check
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
