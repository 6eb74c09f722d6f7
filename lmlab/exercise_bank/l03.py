"""Lesson 03: causal self-attention by hand, and what a transformer block is made of."""

import torch
import torch.nn.functional as F

from lmlab.exercises import function_exercise
from lmlab.models import Block, GPTConfig


def _attention_cases():
    g = torch.Generator().manual_seed(0)
    shapes = [(1, 1, 4, 3), (2, 3, 5, 4), (1, 1, 1, 8), (3, 2, 7, 16)]
    cases = [tuple(torch.randn(*s, generator=g) for _ in range(3)) for s in shapes]
    q, k, v = (torch.randn(2, 2, 6, 8, generator=g) for _ in range(3))
    return cases + [(q * 4, k * 4, v)]  # larger scores: a forgotten scaling shows clearly


@function_exercise("03.causal_attention", cases=_attention_cases, rtol=1e-4, atol=1e-5,
                   hint="scores = q @ k.transpose(-2, -1) / sqrt(head_dim), shape (batch, heads, seq, seq); set the "
                        "entries above the diagonal (a query looking at a later key) to -inf, e.g. with "
                        "torch.ones(seq, seq).tril() == 0; softmax over the LAST dim (the keys); return weights @ v.")
def _causal_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@function_exercise("03.block_num_parameters", cases=[(4,), (64,), (128,), (384,)],
                   hint="a Block (with biases) holds two LayerNorms (a weight and a bias of n_embd each), the "
                        "attention's qkv Linear (n_embd -> 3 * n_embd) and proj Linear (n_embd -> n_embd), and the "
                        "MLP's fc (n_embd -> 4 * n_embd) and proj (4 * n_embd -> n_embd); a Linear from a to b has "
                        "a * b weights and b biases.")
def _block_num_parameters(n_embd):
    return sum(p.numel() for p in Block(GPTConfig(n_embd=n_embd, n_head=1)).parameters())
