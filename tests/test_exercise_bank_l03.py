"""Lesson 03's exercises pass with their solutions and fail with the mistakes learners make."""

import math

import torch

from lmlab.exercises import check


def by_hand(q, k, v, causal=True, scale=True, dim=-1):
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    if causal:
        scores = scores.masked_fill(torch.ones(T, T).tril() == 0, float("-inf"))
    return scores.softmax(dim=dim) @ v


def test_causal_attention_passes_when_written_by_hand():
    assert check("03.causal_attention", by_hand)


def test_causal_attention_fails_without_the_mask():
    result = check("03.causal_attention", lambda q, k, v: by_hand(q, k, v, causal=False))
    assert not result and "case 1 of" in repr(result)


def test_causal_attention_fails_without_the_scaling():
    assert not check("03.causal_attention", lambda q, k, v: by_hand(q, k, v, scale=False))


def test_causal_attention_fails_with_softmax_over_the_queries():
    assert not check("03.causal_attention", lambda q, k, v: by_hand(q, k, v, dim=-2))


def test_causal_attention_fails_with_the_mask_the_wrong_way_round():
    def upper(q, k, v):
        T = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return scores.masked_fill(torch.ones(T, T).triu() == 0, float("-inf")).softmax(-1) @ v

    assert not check("03.causal_attention", upper)


def test_block_num_parameters_passes_with_the_formula():
    assert check("03.block_num_parameters", lambda d: 12 * d * d + 13 * d)


def test_block_num_parameters_fails_without_biases_and_norms():
    result = check("03.block_num_parameters", lambda d: 12 * d * d)
    assert not result and "expected 244, got 192" in repr(result)


def test_block_num_parameters_fails_with_a_two_times_wide_mlp():
    assert not check("03.block_num_parameters", lambda d: 8 * d * d + 9 * d)
