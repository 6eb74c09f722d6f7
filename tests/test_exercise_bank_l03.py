"""Lesson 03's exercises pass with their solutions and fail with the mistakes learners make."""

import math

import torch

from lmlab.exercises import check, names


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


def stub(*args):
    raise NotImplementedError("your code here")


def test_lesson_03_has_its_exercises():
    assert names("03.") == ["03.block_forward", "03.block_num_parameters", "03.causal_attention",
                            "03.multi_head_attention"]


def test_every_stub_fails_cleanly_with_the_nudge_only():
    for name in names("03."):
        message = repr(check(name, stub))
        assert "case 1 of" in message and "NotImplementedError: your code here" in message, name
        assert "hint 1 of 3" in message and "return" not in message.split("Hint")[1], name


def mha(attn, x, attention=by_hand, head_split="right", merge="right", project=True, order="qkv"):
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = attn.qkv(x).split(C, dim=2)
    if order == "kqv":
        q, k = k, q
    if head_split == "right":
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    else:  # (B, T, d, H): each "head" gets every H-th column, not a slice
        q, k, v = (t.view(B, T, C // H, H).permute(0, 3, 1, 2) for t in (q, k, v))
    y = attention(q, k, v)
    y = y.transpose(1, 2).reshape(B, T, C) if merge == "right" else y.reshape(B, T, C)
    return attn.proj(y) if project else y


def test_multi_head_attention_passes_written_out():
    assert check("03.multi_head_attention", mha)


def test_multi_head_attention_fails_with_heads_split_the_wrong_way():
    result = check("03.multi_head_attention", lambda a, x: mha(a, x, head_split="wrong"))
    assert not result and "case 2 of 4" in repr(result) and "4 heads" in repr(result)


def test_multi_head_attention_fails_when_heads_are_merged_without_the_transpose():
    result = check("03.multi_head_attention", lambda a, x: mha(a, x, merge="wrong"))
    assert not result and "case 2 of 4" in repr(result)


def test_multi_head_attention_fails_without_proj_without_the_mask_or_with_q_and_k_swapped():
    assert not check("03.multi_head_attention", lambda a, x: mha(a, x, project=False))
    assert not check("03.multi_head_attention", lambda a, x: mha(a, x, attention=lambda q, k, v: by_hand(q, k, v, causal=False)))
    assert not check("03.multi_head_attention", lambda a, x: mha(a, x, order="kqv"))


def test_multi_head_attention_fails_for_a_batch_of_one_only():
    def first_only(attn, x):  # treats the batch as if it had one row
        return mha(attn, x[:1]).expand_as(x)

    result = check("03.multi_head_attention", first_only)
    assert not result and "case 3 of 4" in repr(result) and "a batch of 3" in repr(result)


def test_block_forward_passes_written_out():
    def block_forward(block, x):
        h = x + block.attn(block.ln_1(x))
        return h + block.mlp(block.ln_2(h))

    assert check("03.block_forward", block_forward)


def test_block_forward_fails_post_norm():
    def post_norm(block, x):
        x = block.ln_1(x + block.attn(x))
        return block.ln_2(x + block.mlp(x))

    result = check("03.block_forward", post_norm)
    assert not result and "case 1 of 3" in repr(result)


def test_block_forward_fails_with_the_residual_added_to_the_normalised_copy():
    def wrong_residual(block, x):
        h = block.ln_1(x)
        h = h + block.attn(h)
        g = block.ln_2(h)
        return g + block.mlp(g)

    assert not check("03.block_forward", wrong_residual)


def test_block_forward_fails_with_one_norm_for_both_branches_or_parallel_branches():
    def one_norm(block, x):
        x = x + block.attn(block.ln_1(x))
        return x + block.mlp(block.ln_1(x))

    def parallel(block, x):  # both branches read the same input (a real design, but not this block)
        return x + block.attn(block.ln_1(x)) + block.mlp(block.ln_2(x))

    assert not check("03.block_forward", one_norm)
    assert not check("03.block_forward", parallel)
