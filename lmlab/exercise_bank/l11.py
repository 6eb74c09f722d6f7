"""Lesson 11: RMSNorm, the rotary rotation and grouped-query attention, checked against SmolLM2-135M's own modules.

The real cases come from SmolLM2's first blocks, read from the cached model file: the same modules
with the same weights as in the full model, and the hidden states that flow through them on two real
sentences (the first blocks of a causal stack compute the same thing whatever comes after them). The
other cases are small random modules and inputs with odd shapes, which catch a width or a head count
written into the code.
"""

from __future__ import annotations

import functools
import os

import torch

from lmlab import llama
from lmlab.exercises import Case, function_exercise

N_LAYER = 3  # SmolLM2's first 3 blocks (of 30): real hidden states, for a tenth of the loading time
SENTENCES = ("The cat sat on the mat because it was warm.",  # 11 SmolLM2 tokens each: a batch without padding
             "Rain fell on the old stone bridge all night long.")


@functools.lru_cache(maxsize=1)
def smollm2_layers():
    """(the first N_LAYER blocks of SmolLM2-135M as a `Llama`, its tokenizer), from the cached model file."""
    from lmlab.gguf import GGUFFile
    from lmlab.pretrained import smollm2
    from lmlab.tokenizers import PretrainedTokenizer

    path = os.environ.get(smollm2.PATH_VARIABLE) or smollm2.fetch(progress=False)
    if os.path.isdir(path):  # a Hugging Face folder
        return llama.from_hf_dir(path, n_layer=N_LAYER), PretrainedTokenizer.from_hf_dir(path)
    with GGUFFile(path) as f:
        return llama.from_gguf(f, n_layer=N_LAYER), PretrainedTokenizer.from_gguf(f)


@torch.no_grad()
def block_inputs(model, ids) -> list[torch.Tensor]:
    """What each block of `model` reads on `ids` (batch, seq), positions 0 .. seq - 1: [x_0, ..., x_n_layer]."""
    x = model.tok_emb(ids)
    cos, sin = model.rotary(0, ids.shape[1])
    states = [x]
    for block in model.blocks:
        x = block(x, cos, sin)
        states.append(x)
    return states


@functools.lru_cache(maxsize=1)
def _smollm2_states():
    model, tokenizer = smollm2_layers()
    encoded = [tokenizer.encode(s) for s in SENTENCES]
    n = min(map(len, encoded))  # equal for SmolLM2's tokenizer; cut to the shorter one for any other
    return model, block_inputs(model, torch.tensor([e[:n] for e in encoded]))


def _randn(*shape, seed: int, scale: float = 1.0, shift: float = 0.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


# --- exercise 1: RMSNorm -----------------------------------------------------------------------------


def rms_cases(model=None, states=None) -> list[Case]:
    """The cases of "11.rms_norm"; `model` and `states` (its `block_inputs`) default to SmolLM2's."""
    if model is None:
        model, states = _smollm2_states()
    eps = model.config.norm_eps
    zero_row = _randn(2, 3, 8, seed=3)
    zero_row[1, 2] = 0.0
    return [
        Case((torch.tensor([[3.0, 4.0]]), torch.ones(2), 0.0),
             "x = (3, 4), weight 1, eps 0: the root mean square is sqrt((9 + 16) / 2)"),
        Case((states[2], model.blocks[2].norm_1.weight.detach(), eps),
             "block 2's norm_1 with its own weight and eps, on what block 2 reads for 2 real sentences "
             f"(batch, tokens, numbers) = {tuple(states[2].shape)}"),
        Case((states[1], model.blocks[1].norm_1.weight.detach(), eps),
             "block 1's norm_1 with its own weight, on what block 1 reads for the same sentences"),
        Case((_randn(3, 5, 10, seed=1, scale=2.0, shift=7.0), _randn(10, seed=2), 1e-5),
             "a mean far from 0 (about 7): RMSNorm does not subtract it (LayerNorm would)"),
        Case((zero_row, _randn(8, seed=4), 1e-5), "one row of zeros: eps keeps it finite, and it stays 0"),
        Case((_randn(2, 4, 6, seed=5, scale=1e-3), torch.ones(6), 1e-2),
             "small numbers and a large eps: eps is added to the mean square, under the square root"),
        Case((_randn(7, model.config.n_embd, seed=6, scale=3.0), model.norm_f.weight.detach(), eps),
             f"no batch dimension, (seq, dim) = (7, {model.config.n_embd}), with the final norm's weight: "
             "normalise the last dimension"),
    ]


@function_exercise("11.rms_norm", cases=rms_cases, rtol=1e-4, atol=1e-5, hints=(
    "RMSNorm divides each vector (the last dimension) by its root mean square and multiplies by weight, number "
    "by number: no mean is subtracted, there is no bias. Where does eps go?",
    "For every vector: ms = the mean of x ** 2 over the last dimension (keep that dimension, so that it "
    "broadcasts); divide x by sqrt(ms + eps); multiply by weight. Return a new tensor of x's shape.",
    "return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight",
))
def _rms_norm(x, weight, eps):
    """The model's own module, given these weights."""
    norm = llama.RMSNorm(weight.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


# --- exercise 2: the rotary rotation -----------------------------------------------------------------


def rotary_cases(model=None, states=None) -> list[Case]:
    """The cases of "11.apply_rotary"; `model` and `states` (its `block_inputs`) default to SmolLM2's."""
    if model is None:
        model, states = _smollm2_states()
    attn, block = model.blocks[1].attn, model.blocks[1]
    B, T, _ = states[1].shape
    with torch.no_grad():
        h = block.norm_1(states[1])
        H, G, D = attn.n_head, attn.n_kv_head, attn.head_dim
        q, k, _ = attn.qkv(h).split([H * D, G * D, G * D], dim=-1)  # the stacked projection: q, then k, then v rows
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, G, D).transpose(1, 2)
    last = model.config.block_size - 1
    far = min(4000, model.config.block_size - T)
    unit = torch.zeros(1, 1, 3, 8)
    unit[..., 0] = 1.0
    small = llama.RotaryEmbedding(8, 3, theta=10000.0)
    odd = llama.RotaryEmbedding(6, 16, theta=500.0)
    return [
        Case((unit, *small(0, 3)), "a unit vector along number 0 of an 8-wide head at positions 0, 1, 2: "
                                   "it turns towards number 4 (pairs are i and i + head_dim / 2)"),
        Case((q, *model.rotary(0, T)), f"block 1's queries on 2 real sentences: {attn.n_head} heads, positions 0 .. {T - 1}"),
        Case((k, *model.rotary(far, T)), f"block 1's keys ({attn.n_kv_head} heads) placed at positions {far} .. {far + T - 1}"),
        Case((_randn(3, attn.n_head, 1, attn.head_dim, seed=7), *model.rotary(last, 1)),
             f"a generation step: one position ({last}, the last of the context) for a batch of 3"),
        Case((_randn(2, 5, 4, 6, seed=8), *odd(9, 4)), "head_dim 6, 5 heads, positions 9 .. 12, theta 500"),
    ]


@function_exercise("11.apply_rotary", cases=rotary_cases, rtol=1e-4, atol=1e-5, hints=(
    "Which numbers of a head form a pair? In this layout number i turns together with number i + head_dim / 2, "
    "and cos, sin already hold each pair's angle twice, once for each member of the pair.",
    "A turn by the angle a maps a pair (u, w) to (u cos a - w sin a, u sin a + w cos a). Split the head into "
    "its halves x1 = x[..., :head_dim // 2] and x2 = x[..., head_dim // 2:]; the 'quarter turn' of every pair "
    "is cat(-x2, x1) on the last dimension. cos and sin, (seq, head_dim), broadcast over batch and heads.",
    "x1, x2 = x.chunk(2, dim=-1); return x * cos + torch.cat([-x2, x1], dim=-1) * sin",
))
def _apply_rotary(x, cos, sin):
    """The model's own function."""
    return llama.apply_rotary(x, cos, sin)


# --- exercise 3: grouped-query attention --------------------------------------------------------------


class AttentionWeights(torch.nn.Module):
    """A GroupedQueryAttention's weights as the learner reads them: its stacked `qkv` split into `q_proj`
    (n_head * head_dim outputs), `k_proj` and `v_proj` (n_kv_head * head_dim each), and its output `proj`,
    each a Linear without bias; `n_head`, `n_kv_head`, `head_dim` as the module's."""

    def __init__(self, attn: llama.GroupedQueryAttention):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = attn.n_head, attn.n_kv_head, attn.head_dim
        H, G, D = attn.n_head, attn.n_kv_head, attn.head_dim
        pieces = attn.qkv.weight.detach().split([H * D, G * D, G * D])
        for name, weight in zip(("q_proj", "k_proj", "v_proj", "proj"), (*pieces, attn.proj.weight.detach())):
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")  # no random init
            linear.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)  # a copy: the model stays intact
            setattr(self, name, linear)

    def module(self) -> llama.GroupedQueryAttention:
        """The model's own GroupedQueryAttention with these weights: q, k, v stacked back into `qkv`."""
        H, D = self.n_head, self.head_dim
        config = llama.LlamaConfig(vocab_size=1, block_size=1, n_layer=1, n_head=H, n_kv_head=self.n_kv_head,
                                   n_embd=H * D, intermediate_size=1)
        with torch.device("meta"):  # no random weights drawn: every weight is assigned below
            attn = llama.GroupedQueryAttention(config)
        qkv = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        attn.load_state_dict({"qkv.weight": qkv, "proj.weight": self.proj.weight}, assign=True)
        return attn.eval()


def _attention(n_head: int, n_kv_head: int, head_dim: int, seed: int) -> AttentionWeights:
    """The weights of a GroupedQueryAttention with PyTorch's default random weights, the same for the same seed."""
    config = llama.LlamaConfig(vocab_size=8, block_size=64, n_layer=1, n_head=n_head, n_kv_head=n_kv_head,
                               n_embd=n_head * head_dim, intermediate_size=8)
    with torch.random.fork_rng():  # leave the learner's random state alone
        torch.manual_seed(seed)
        attn = llama.GroupedQueryAttention(config)
    return AttentionWeights(attn)


def attention_cases(model=None, states=None) -> list[Case]:
    """The cases of "11.grouped_attention"; `model` and `states` (its `block_inputs`) default to SmolLM2's."""
    if model is None:
        model, states = _smollm2_states()
    block = model.blocks[2]
    with torch.no_grad():
        h = block.norm_1(states[2])
    T = h.shape[1]
    H, G = block.attn.n_head, block.attn.n_kv_head
    real = AttentionWeights(block.attn)
    later = min(500, model.config.block_size - T)
    small = llama.RotaryEmbedding(2, 64, theta=10000.0)
    return [
        Case((_attention(4, 2, 2, seed=0), _randn(1, 3, 8, seed=9), *small(0, 3)),
             "4 query heads, 2 key/value heads: query heads 0 and 1 share key/value head 0, heads 2 and 3 head 1"),
        Case((real, h, *model.rotary(0, T)),
             f"block 2's attention ({H} query heads, {G} key/value heads) on 2 real sentences, positions 0 .. {T - 1}"),
        Case((real, h, *model.rotary(later, T)), f"the same, placed at positions {later} .. {later + T - 1}"),
        Case((_attention(6, 1, 4, seed=1), _randn(3, 5, 24, seed=10), *llama.RotaryEmbedding(4, 64)(2, 5)),
             "6 query heads and a single key/value head (multi-query attention), batch 3"),
        Case((_attention(3, 3, 4, seed=2), _randn(2, 1, 12, seed=11), *llama.RotaryEmbedding(4, 64)(0, 1)),
             "3 query heads and 3 key/value heads (plain multi-head attention), one token"),
    ]


@function_exercise("11.grouped_attention", cases=attention_cases, rtol=1e-4, atol=1e-5, hints=(
    "Shapes first: q gets attn.n_head heads, k and v only attn.n_kv_head. Every query head must meet the "
    "key/value head of its own group, and a group is made of consecutive query heads.",
    "Project x and split the last dimension into heads: view (B, T, heads, head_dim), then transpose to "
    "(B, heads, T, head_dim). Rotate q and k (apply_rotary). Give k and v n_head heads by repeating each one "
    "n_head // n_kv_head times in place (head h uses key/value head h // (n_head // n_kv_head)): "
    "repeat_interleave on dim 1, not repeat, which tiles them. Then causal attention, the heads back side by "
    "side (B, T, n_head * head_dim), and proj.",
    "B, T, _ = x.shape; H, G, D = attn.n_head, attn.n_kv_head, attn.head_dim; "
    "q = attn.q_proj(x).view(B, T, H, D).transpose(1, 2); k = attn.k_proj(x).view(B, T, G, D).transpose(1, 2); "
    "v = attn.v_proj(x).view(B, T, G, D).transpose(1, 2); q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin); "
    "k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1); "
    "y = F.scaled_dot_product_attention(q, k, v, is_causal=True); "
    "return attn.proj(y.transpose(1, 2).reshape(B, T, H * D))",
))
def _grouped_attention(attn, x, cos, sin):
    """The model's own module, given these weights."""
    with torch.no_grad():
        return attn.module()(x, cos, sin)
