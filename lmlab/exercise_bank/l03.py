"""Lesson 03: causal self-attention, multi-head attention and a block, written by the learner."""

import torch
import torch.nn.functional as F

from lmlab.exercises import Case, function_exercise
from lmlab.models import Block, CausalSelfAttention, GPTConfig


def _attention_cases():
    g = torch.Generator().manual_seed(0)

    def qkv(*shape, scale=1.0):
        return tuple(torch.randn(*shape, generator=g) * scale for _ in range(3))

    return [
        Case(qkv(1, 1, 4, 3), "one sequence, one head of width 3"),
        Case(qkv(2, 3, 5, 4), "a batch of 2 sequences, 3 heads: every (sequence, head) attends on its own"),
        Case(qkv(1, 1, 1, 8), "a sequence of one token: it can only attend to itself"),
        Case(qkv(3, 2, 7, 16), "3 sequences, 2 heads of width 16"),
        Case(qkv(2, 2, 6, 8, scale=2.0), "larger scores: a scaling by the wrong width shows clearly"),
    ]


@function_exercise("03.causal_attention", cases=_attention_cases, rtol=1e-4, atol=1e-5, hints=(
    "Four steps: scores between every query and every key, scaled; the future blocked; a softmax that turns "
    "each query's scores into weights; the weighted sum of the values. Which axis holds the keys?",
    "scores = q @ k.transpose(-2, -1) has shape (batch, heads, seq, seq): row i is query i. Divide by the "
    "square root of the head width; set the entries where key j > query i to -inf (torch.tril gives the "
    "allowed ones); softmax over the last dim; multiply by v.",
    "T = q.shape[-2]; scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]); "
    "scores = scores.masked_fill(torch.ones(T, T).tril() == 0, float('-inf')); return scores.softmax(dim=-1) @ v",
))
def _causal_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _random_module(module_class, seed: int, **config):
    """A module of lmlab.models with random weights (LayerNorms included, so that forgetting one shows)."""
    with torch.random.fork_rng():  # leave the learner's random state alone
        torch.manual_seed(seed)
        module = module_class(GPTConfig(**config))
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0))
    return module.eval()


def _mha_cases():
    g = torch.Generator().manual_seed(1)
    four_heads = _random_module(CausalSelfAttention, 0, n_embd=16, n_head=4)
    return [
        Case((_random_module(CausalSelfAttention, 1, n_embd=8, n_head=1), torch.randn(1, 5, 8, generator=g)),
             "a single head: the whole width is one head"),
        Case((four_heads, torch.randn(1, 6, 16, generator=g)), "4 heads of width 4"),
        Case((four_heads, torch.randn(3, 6, 16, generator=g)), "a batch of 3 different sequences, 4 heads"),
        Case((_random_module(CausalSelfAttention, 2, n_embd=12, n_head=3, bias=False),
              torch.randn(2, 1, 12, generator=g)), "sequences of one token, 3 heads, Linear layers without biases"),
    ]


@function_exercise("03.multi_head_attention", cases=_mha_cases, rtol=1e-4, atol=1e-5, hints=(
    "One Linear makes q, k and v for all heads at once, side by side along the last axis. Each head must get "
    "its own slice of each, attend on its own, and the heads' outputs go back side by side before `proj`.",
    "attn.qkv(x).split(C, dim=2) gives q, k, v of shape (B, T, C). Head h owns columns h*d .. (h+1)*d - 1 "
    "(d = C // n_head): view as (B, T, n_head, d), then transpose to (B, n_head, T, d). Attend causally per "
    "head, transpose back to (B, T, n_head, d), reshape to (B, T, C), apply attn.proj.",
    "B, T, C = x.shape; H = attn.n_head; q, k, v = attn.qkv(x).split(C, dim=2); "
    "q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v)); "
    "y = my_causal_attention(q, k, v); return attn.proj(y.transpose(1, 2).reshape(B, T, C))",
))
def _multi_head_attention(attn, x):
    with torch.no_grad():
        return attn(x)


def _block_cases():
    g = torch.Generator().manual_seed(2)
    block = _random_module(Block, 3, n_embd=16, n_head=2)
    return [
        Case((block, torch.randn(1, 4, 16, generator=g)), "one sequence of 4 positions"),
        Case((block, torch.randn(3, 5, 16, generator=g)), "a batch of 3 different sequences"),
        Case((_random_module(Block, 4, n_embd=8, n_head=4), torch.randn(2, 1, 8, generator=g)),
             "sequences of a single position, another block"),
    ]


@function_exercise("03.block_forward", cases=_block_cases, rtol=1e-4, atol=1e-4, hints=(
    "Two residual branches, one after the other. Each branch reads a normalised copy of the stream and adds "
    "what it computes to the stream itself, not to the normalised copy.",
    "First: the stream plus attn applied to ln_1 of the stream. Then, from that new stream: plus mlp applied "
    "to ln_2 of it. The norm comes before each branch (pre-norm), not after the sum.",
    "x = x + block.attn(block.ln_1(x)); return x + block.mlp(block.ln_2(x))",
))
def _block_forward(block, x):
    with torch.no_grad():
        return block(x)


@function_exercise("03.block_num_parameters", cases=[(4,), (64,), (128,), (384,)], hints=(
    "Count layer by layer in the printout of the block: every LayerNorm and every Linear, with its bias.",
    "A LayerNorm of width n has a weight and a bias of n numbers each; a Linear from a to b has a * b weights "
    "and b biases. The block: ln_1, attn.qkv (n_embd -> 3 * n_embd), attn.proj (n_embd -> n_embd), ln_2, "
    "mlp.fc (n_embd -> 4 * n_embd), mlp.proj (4 * n_embd -> n_embd).",
    "Add 2 * 2n (norms) + (3n*n + 3n) + (n*n + n) + (4n*n + 4n) + (4n*n + n) and simplify: a multiple of n*n "
    "plus a multiple of n.",
))
def _block_num_parameters(n_embd):
    return sum(p.numel() for p in Block(GPTConfig(n_embd=n_embd, n_head=1)).parameters())
