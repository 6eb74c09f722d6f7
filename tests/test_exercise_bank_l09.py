"""Lesson 09's exercises pass with their solutions and fail with the mistakes learners make."""

import torch

from lmlab.exercises import check
from lmlab.probability import token_logprobs


def test_distinct_n_passes_with_the_reference():
    def distinct_n(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    assert check("09.distinct_n", distinct_n)


def test_distinct_n_fails_for_the_usual_mistakes():
    def unigrams_always(tokens, n):
        return len(set(tokens)) / len(tokens) if len(tokens) else 0.0

    def over_all_tokens(tokens, n):  # divides by the number of tokens, not of n-grams
        grams = {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
        return len(grams) / len(tokens) if len(tokens) else 0.0

    def crashes_when_short(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(set(grams)) / len(grams)

    def repetition_instead(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return 1 - len(set(grams)) / len(grams) if grams else 0.0

    for fn in (unigrams_always, over_all_tokens, repetition_instead):
        assert not check("09.distinct_n", fn), fn.__name__
    result = check("09.distinct_n", crashes_when_short)
    assert not result and "ZeroDivisionError" in repr(result)


def test_continuation_logprob_passes_with_the_reference_and_by_hand():
    assert check("09.continuation_logprob", lambda m, ids, k: token_logprobs(m, ids)[:, k - 1 :].mean(dim=1))

    def by_hand(model, ids, prompt_len):
        with torch.no_grad():
            logp = model(ids).log_softmax(-1)  # (batch, seq, vocab): position t predicts t + 1
        scores = logp[:, prompt_len - 1 : -1].gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
        return scores.mean(1)

    assert check("09.continuation_logprob", by_hand)


def test_continuation_logprob_fails_for_the_usual_mistakes():
    wrong = {
        "off by one": lambda m, ids, k: token_logprobs(m, ids)[:, k:].mean(1),
        "the prompt included": lambda m, ids, k: token_logprobs(m, ids).mean(1),
        "a sum": lambda m, ids, k: token_logprobs(m, ids)[:, k - 1 :].sum(1),
        "pooled over the batch": lambda m, ids, k: token_logprobs(m, ids)[:, k - 1 :].mean(),
    }
    for name, fn in wrong.items():
        assert not check("09.continuation_logprob", fn), name
