"""A Llama-style causal language model: our GPT, with the four pieces that changed by 2024.

    RMSNorm                 instead of LayerNorm: rescale by the root mean square, no mean, no bias
    RotaryEmbedding,        instead of learned positions: turn each pair of a query's and a key's
      apply_rotary            numbers by an angle proportional to the position, so that their dot
                              product depends on how far apart the two tokens are
    SwiGLU                  instead of the GELU MLP: a gated MLP, down(silu(gate(x)) * up(x))
    GroupedQueryAttention   instead of multi-head attention: several query heads share one key/value
                              head, so the cache keeps fewer heads

The output head shares its matrix with the token embedding, as our GPT's does. `Llama` has the
interface of `lmlab.models.GPT` (`forward(input_ids, cache=None, attention_mask=None)`, `new_cache(batch_size)`,
`config.block_size`), so every function of `lmlab.decoding` works on it unchanged.

`from_gguf(path)` builds one from a llama.cpp GGUF file (see `lmlab.gguf`); `from_hf_dir` and
`save_hf_dir` read and write the Hugging Face layout (config.json + model.safetensors).
`lmlab.pretrained.load("smollm2-135m")` does all of it for SmolLM2-135M.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab._checks import check_ids, check_positive_int
from lmlab.models import KVCache, left_padding, padded_positions


@dataclass
class LlamaConfig:
    """The defaults are SmolLM2-135M's."""

    vocab_size: int = 49152  # number of distinct token ids
    block_size: int = 8192  # longest sequence the model reads: the length of the rotary table and the cache
    n_layer: int = 30  # transformer blocks stacked
    n_head: int = 9  # query heads per block
    n_kv_head: int = 3  # key/value heads per block; each serves n_head // n_kv_head query heads
    n_embd: int = 576  # width of every token vector; head_dim = n_embd // n_head
    intermediate_size: int = 1536  # hidden width of the SwiGLU MLP
    rope_theta: float = 100000.0  # rotary base: pair i of a head turns by position * rope_theta ** (-2i / head_dim)
    norm_eps: float = 1e-5  # added to the mean square in RMSNorm, so that a zero vector stays finite
    tie_weights: bool = True  # output head shares its matrix with the token embedding

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _check_config(config: LlamaConfig) -> None:
    for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size"):
        check_positive_int(getattr(config, field), f"config.{field}")
    if config.n_embd % config.n_head or config.head_dim % 2:
        raise ValueError(f"config.n_embd ({config.n_embd}) must split into config.n_head ({config.n_head}) heads of "
                         "an even width (rotary embeddings turn pairs of numbers)")
    if config.n_head % config.n_kv_head:
        raise ValueError(f"config.n_head ({config.n_head}) must be a multiple of config.n_kv_head ({config.n_kv_head})")
    for field in ("rope_theta", "norm_eps"):
        value = getattr(config, field)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"config.{field} must be a finite number > 0, got {value!r}")


# ------------------------------------------------------------------------------------ the pieces
class RMSNorm(nn.Module):
    """x / sqrt(mean(x**2) + eps) * weight, over the last dimension: (..., dim) -> (..., dim).

    LayerNorm subtracts the mean, divides by the standard deviation, then scales and shifts; RMSNorm
    keeps only the division (by the root mean square) and the scale: fewer operations, same effect
    on training. Computed in float32 whatever the input's dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps:g}"

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """The cos and sin of every position's rotation angles, computed once for `block_size` positions.

    Within a head, number i is paired with number i + head_dim / 2 (the "half-split" layout), and
    pair i turns by the angle position * theta ** (-2i / head_dim): the first pairs turn fast, the
    last ones slowly. `forward(start, length)` -> (cos, sin), each (length, head_dim) float32, every
    angle written twice (once for each member of its pair), as `apply_rotary` takes them.
    """

    def __init__(self, head_dim: int, block_size: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (head_dim / 2,)
        angles = torch.outer(torch.arange(block_size).float(), inv_freq)  # (block_size, head_dim / 2)
        angles = torch.cat([angles, angles], dim=-1)
        # buffers, not parameters: nothing to learn, and rebuilt from the config rather than saved
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, start: int, length: int):
        return self.cos[start : start + length], self.sin[start : start + length]


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a quarter turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x, cos, sin):
    """Turn each pair (x[..., i], x[..., i + head_dim / 2]) by its angle: the half-split layout.

    x: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim) from `RotaryEmbedding` -> same shape as x.
    """
    return x * cos + rotate_half(x) * sin


def apply_rotary_interleaved(x, cos, sin):
    """The same rotation on adjacent pairs (x[..., 2i], x[..., 2i + 1]): llama.cpp's layout.

    GGUF files store the rows of q and k reordered for this layout (see `unpermute_rope`). Both
    layouts are rotary embeddings; a model only works with the one it was trained with.
    x: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim) as for `apply_rotary`.
    """
    half = x.shape[-1] // 2
    cos, sin = cos[..., :half], sin[..., :half]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): (batch, seq, n_embd) -> (batch, seq, n_embd).

    GPT's MLP is down(gelu(up(x))). Here a second projection, passed through SiLU, decides how much
    of each hidden unit gets through: three matrices instead of two, with a narrower hidden layer.
    The gate and up matrices are stacked in one Linear, `gate_up` (rows 0..hidden-1: gate), so that
    both come out of one matrix product.
    """

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(n_embd, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class LlamaKVCache(KVCache):
    """Keys and values of every layer, each (batch, n_kv_head, positions, head_dim), rotated already.

    With grouped-query attention the cache holds `n_kv_head` heads, not `n_head`: for SmolLM2, a
    third of what multi-head attention would keep. Unlike `KVCache`, it starts small and doubles when
    full (up to `block_size` positions), so that an 8192-token context costs memory only when it is
    used. `reorder` and `crop` (beam search, the sliding window of `lmlab.decoding`) are KVCache's.
    """

    def __init__(self, n_layer, batch_size, n_kv_head, block_size, head_dim, dtype, device, reserve: int = 256):
        # KVCache.__init__ would allocate all block_size positions at once: not called on purpose
        shape = (batch_size, n_kv_head, min(reserve, block_size), head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.length = 0  # positions filled
        self.capacity = block_size
        self._spare = None  # buffers that reorder() writes into, then swaps with keys/values
        self.pad = None  # (batch,) left-padding positions of each row, as KVCache's

    def append(self, layer: int, k, v):
        """Store k, v (batch, n_kv_head, new, head_dim) after the filled positions of `layer`; return
        all keys and values so far, (batch, n_kv_head, length + new, head_dim). `length` is advanced
        by the model once every layer has appended."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"the cache holds at most {self.capacity} positions; {end} were asked for")
        if end > self.keys[layer].shape[2]:
            self._grow(layer, end)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def _grow(self, layer, needed):
        old = self.keys[layer].shape[2]
        size = min(self.capacity, max(needed, 2 * old))
        for store in (self.keys, self.values):
            bigger = store[layer].new_zeros(*store[layer].shape[:2], size, store[layer].shape[3])
            bigger[:, :, : self.length] = store[layer][:, :, : self.length]
            store[layer] = bigger
        self._spare = None  # reorder's spare buffers no longer have the right size


class GroupedQueryAttention(nn.Module):
    """Causal self-attention in which groups of `n_head // n_kv_head` query heads share a key/value head.

    x: (batch, seq, n_embd) -> (batch, seq, n_embd). Queries and keys are turned by `apply_rotary`
    before they meet, which is all the model knows about positions. As in GPT, one Linear `qkv`
    computes queries, keys and values together; its rows are the n_head query heads, then the
    n_kv_head key heads, then the n_kv_head value heads (for SmolLM2: 576 + 192 + 192 rows).
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.qkv = nn.Linear(config.n_embd, (config.n_head + 2 * config.n_kv_head) * config.head_dim, bias=False)
        self.proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=False)

    def forward(self, x, cos, sin, cache: LlamaKVCache | None = None, layer: int = 0, mask=None):
        """cos, sin: (seq, head_dim) of the positions of x, or (batch, 1, seq, head_dim) when rows start at
        different positions; with `cache`, x continues the cached tokens. mask: None (causal), or
        (batch, 1, seq, keys) bool, True where attending is allowed (left padding, see `padded_positions`)."""
        B, T, _ = x.shape
        H, G, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * D, G * D, G * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (batch, n_head, seq, head_dim)
        k = k.view(B, T, G, D).transpose(1, 2)  # (batch, n_kv_head, seq, head_dim)
        v = v.view(B, T, G, D).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        S = k.shape[2]  # keys seen: the cached ones and these T
        # Query head h uses key/value head h // (H // G). Stacking the H // G queries of a group along
        # the sequence axis lets each key/value head serve its whole group in one attention call,
        # without copying the keys H // G times: (batch, n_kv_head, H // G * seq, head_dim).
        q = q.reshape(B, G, H // G * T, D)
        if mask is not None:  # the same mask for every query head of a group, stacked as q is
            mask = mask.repeat(1, 1, H // G, 1)
        elif T > 1:  # query t sits at position S - T + t and sees keys 0 .. S - T + t; one query sees all
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T).repeat(H // G, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.view(B, H, T, D).transpose(1, 2).reshape(B, T, H * D)  # heads side by side again
        return self.proj(y)


class LlamaBlock(nn.Module):
    """Pre-norm block, as GPT's: x + attn(norm_1(x)), then x + mlp(norm_2(x)), with the new pieces."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.norm_1 = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = GroupedQueryAttention(config)
        self.norm_2 = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLU(config.n_embd, config.intermediate_size)

    def forward(self, x, cos, sin, cache=None, layer=0, mask=None):
        x = x + self.attn(self.norm_1(x), cos, sin, cache, layer, mask)
        return x + self.mlp(self.norm_2(x))


class Llama(nn.Module):
    """Causal language model: logits[:, t] is the model's guess for token t + 1 given tokens 0..t."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        _check_config(config)
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.rotary = RotaryEmbedding(config.head_dim, config.block_size, config.rope_theta)
        self.blocks = nn.ModuleList([LlamaBlock(config) for _ in range(config.n_layer)])
        self.norm_f = RMSNorm(config.n_embd, config.norm_eps)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.tok_emb.weight  # one matrix reads tokens in and writes them out
        if self.tok_emb.weight.device.type != "meta":  # built on meta to be loaded: nothing to initialise
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int) -> LlamaKVCache:
        c = self.config
        p = self.tok_emb.weight
        return LlamaKVCache(c.n_layer, check_positive_int(batch_size, "batch_size"), c.n_kv_head, c.block_size,
                            c.head_dim, p.dtype, p.device)

    def forward(self, input_ids, cache: LlamaKVCache | None = None, attention_mask=None):
        """input_ids (batch, seq) -> logits (batch, seq, vocab); with `cache`, positions continue after it.

        attention_mask (batch, seq), 1 = token, 0 = padding (left padding only), as GPT's: each row reads
        as if alone, its first token at position 0.
        """
        start = 0 if cache is None else cache.length
        check_ids(input_ids, vocab_size=self.config.vocab_size, max_len=self.config.block_size - start)
        if cache is not None and cache.batch_size != input_ids.shape[0]:
            raise ValueError(f"input_ids has batch size {input_ids.shape[0]} but the cache holds {cache.batch_size} rows")
        pad = left_padding(attention_mask, input_ids, cache)
        x = self.tok_emb(input_ids.long())  # no position embedding: positions enter as rotations in attention
        mask = None
        if pad is None:
            cos, sin = self.rotary(start, input_ids.shape[1])
        else:  # each row's own positions: (batch, 1, seq, head_dim), one rotation for all heads
            positions, mask = padded_positions(pad, start, input_ids.shape[1])
            cos, sin = self.rotary.cos[positions][:, None], self.rotary.sin[positions][:, None]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i, mask)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.head(self.norm_f(x))


# ------------------------------------------------------------------------------ from a GGUF file
def unpermute_rope(weight, n_heads: int):
    """Rows of a q or k weight as llama.cpp stores them -> as `apply_rotary` needs them.

    llama.cpp turns adjacent pairs (2i, 2i + 1); the model was trained turning (i, i + head_dim / 2).
    Its converter therefore reorders the rows of q and k within each head; this puts them back.
    weight: (n_heads * head_dim, in_features) -> same shape.
    """
    out_features = weight.shape[0]
    # stored row h * head_dim + 2i + s holds trained row h * head_dim + s * head_dim / 2 + i
    rows = torch.arange(out_features).view(n_heads, out_features // n_heads // 2, 2).transpose(1, 2).reshape(-1)
    return weight[rows]


# The pieces each of our matrices is made of, as GGUF and Hugging Face files store them: our `qkv`
# stacks q, k and v along its rows, `gate_up` stacks gate and up.
_PARTS = {
    "norm_1": [("attn_norm", "input_layernorm")],
    "attn.qkv": [("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj")],
    "attn.proj": [("attn_output", "self_attn.o_proj")],
    "norm_2": [("ffn_norm", "post_attention_layernorm")],
    "mlp.gate_up": [("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj")],
    "mlp.down": [("ffn_down", "mlp.down_proj")],
}


def _file_names(config: LlamaConfig, kind: str) -> dict[str, list[str]]:
    """Our parameter name -> the tensors it stacks along its rows, named as in a "gguf" or "hf" file."""
    k = 0 if kind == "gguf" else 1
    top = {"tok_emb.weight": ("token_embd.weight", "model.embed_tokens.weight"),
           "norm_f.weight": ("output_norm.weight", "model.norm.weight")}
    if not config.tie_weights:
        top["head.weight"] = ("output.weight", "lm_head.weight")
    names = {ours: [theirs[k]] for ours, theirs in top.items()}
    for i in range(config.n_layer):
        prefix = f"blk.{i}." if kind == "gguf" else f"model.layers.{i}."
        for ours, parts in _PARTS.items():
            names[f"blocks.{i}.{ours}.weight"] = [f"{prefix}{p[k]}.weight" for p in parts]
    return names


def _part_shapes(config: LlamaConfig) -> dict[str, list[tuple[int, ...]]]:
    """Our parameter name -> the shape of each piece it stacks, without building the model."""
    with torch.device("meta"):
        model = Llama(config)
    D, H, G, I = config.head_dim, config.n_head, config.n_kv_head, config.intermediate_size
    shapes = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        rows = [p.shape[0]]
        if name.endswith("attn.qkv.weight"):
            rows = [H * D, G * D, G * D]
        elif name.endswith("mlp.gate_up.weight"):
            rows = [I, I]
        shapes[name] = [(r, *p.shape[1:]) for r in rows]
    return shapes


MAX_CONTEXT = 131072  # longest context a file may ask for by default: its rotary tables take 64 MB


def _check_block_size(block_size, context: int, where: str) -> int:
    """The context to build: `block_size` if given (at most the model's), else the model's own."""
    if block_size is None:
        if context > MAX_CONTEXT:
            raise ValueError(f"{where} asks for a context of {context:,} tokens, more than lmlab builds by default "
                             f"({MAX_CONTEXT:,}); pass block_size= to load a shorter one")
        return context
    if not 1 <= check_positive_int(block_size, "block_size") <= context:
        raise ValueError(f"block_size must be in [1, {context}] (the model's context), got {block_size}")
    return block_size


def gguf_config(gguf_file, block_size: int | None = None) -> LlamaConfig:
    """The LlamaConfig of an open `lmlab.gguf.GGUFFile`; `block_size` below the file's context shortens it."""
    m, where = gguf_file.metadata, f"path {str(gguf_file.path)!r}"
    arch = m.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{where} holds a {arch!r} model; lmlab reads only 'llama' GGUF files")

    def get(key, kinds=(int,)):
        value = m.get(f"llama.{key}")
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(f"{where} lacks a valid llama.{key} (got {value!r})")
        return value

    n_embd, n_head, n_layer = get("embedding_length"), get("attention.head_count"), get("block_count")
    if n_layer > len(gguf_file.tensors):  # each block has 9 tensors: a count the file cannot back is refused early
        raise ValueError(f"{where} claims {n_layer:,} blocks but holds only {len(gguf_file.tensors)} tensors")
    block_size = _check_block_size(block_size, get("context_length"), where)
    vocab = gguf_file.tensors.get("token_embd.weight")
    if vocab is None:
        raise ValueError(f"{where} has no token_embd.weight tensor")
    rope_dims = m.get("llama.rope.dimension_count", n_embd // max(n_head, 1))
    if n_head < 1 or rope_dims != n_embd // n_head:
        raise ValueError(f"{where} rotates {rope_dims} of each head's {n_embd // max(n_head, 1)} numbers; lmlab "
                         "supports only rotary embeddings over the whole head")
    config = LlamaConfig(
        vocab_size=vocab.shape[0],
        block_size=block_size,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=m.get("llama.attention.head_count_kv", n_head),
        n_embd=n_embd,
        intermediate_size=get("feed_forward_length"),
        rope_theta=float(m.get("llama.rope.freq_base", 10000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", (float,))),
        tie_weights="output.weight" not in gguf_file.tensors,  # no output matrix: the head is the embedding
    )
    try:
        _check_config(config)
    except ValueError as err:
        raise ValueError(f"{where} describes a model lmlab cannot build: {err}") from None
    return config


def from_gguf(path, block_size: int | None = None, dtype=torch.float32, device="cpu",
              n_layer: int | None = None) -> Llama:
    """A `Llama` with the weights of the GGUF file at `path` (or an open GGUFFile), as `dtype`, for inference:
    in eval mode, every parameter with requires_grad=False (call `model.requires_grad_()` to train it).

    n_layer: load only the file's first `n_layer` blocks (default: all). A causal stack's first
    blocks compute the same thing whatever follows them, so this is the model's start, for less
    time and memory. The model is built on the meta device (no memory), then each tensor is
    dequantized on its own and put in place: the peak memory is the model plus one tensor. Every
    tensor's name, shape and storage type is checked before any is dequantized.
    """
    from lmlab.gguf import DEQUANTIZE, GGUFFile

    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    if not isinstance(path, GGUFFile):
        with GGUFFile(path) as f:
            return from_gguf(f, block_size, dtype, device, n_layer)
    f = path  # an open lmlab.gguf.GGUFFile
    config = gguf_config(f, block_size)
    if n_layer is not None and not 1 <= check_positive_int(n_layer, "n_layer") <= config.n_layer:
        raise ValueError(f"n_layer must be in [1, {config.n_layer}] (the blocks in the file), got {n_layer}")
    names, shapes = _file_names(config, "gguf"), _part_shapes(config)
    where = f"path {str(f.path)!r}"
    extra = sorted(f.tensors.keys() - {name for parts in names.values() for name in parts})
    if extra:
        raise ValueError(f"{where} has a tensor {extra[0]!r} that a {config.n_layer}-layer Llama does not use")
    for ours, parts in names.items():
        for name, shape in zip(parts, shapes[ours]):
            info = f.tensors.get(name)
            if info is None:
                raise ValueError(f"{where} lacks the tensor {name!r}")
            if info.shape != shape:
                raise ValueError(f"{where} has {name!r} of shape {info.shape}, expected {shape}")
            if info.type not in DEQUANTIZE:
                raise ValueError(f"{where} stores {name!r} as {info.type}, which lmlab cannot dequantize "
                                 f"(supported: {', '.join(DEQUANTIZE)})")
    if n_layer is not None:  # every tensor of the file was checked above; only the first blocks' are read
        config = dataclasses.replace(config, n_layer=n_layer)
        names = _file_names(config, "gguf")
    with torch.device("meta"):
        model = Llama(config)
    state = {}
    for ours, parts in names.items():
        pieces = [f.tensor(name, dtype) for name in parts]
        if ours.endswith("attn.qkv.weight"):  # q and k rows back in the order the model was trained with
            pieces[0], pieces[1] = unpermute_rope(pieces[0], config.n_head), unpermute_rope(pieces[1], config.n_kv_head)
        state[ours] = _decode_layout(torch.cat(pieces).to(device) if len(pieces) > 1 else pieces[0].to(device))
    return _finish(model, state, device)


def _decode_layout(weight):
    """The same matrix (out_features, in_features), its numbers stored column by column where that is faster.

    Generating one token multiplies one vector by every weight: the speed is how fast the weights
    stream from memory. For matrices at least as wide as they are tall (qkv, proj, gate_up, and the
    49,152-row embedding used as the output head), the CPU's matrix-vector kernel (MKL) measured up
    to twice as fast with each input feature's numbers side by side (transposed storage); for the
    others (down) it was slower, so they keep torch's usual storage. Values, shapes and results are
    unchanged (up to float rounding); only the strides differ. See benchmarks/bench_real_model.py.
    """
    if weight.dim() != 2 or weight.device.type != "cpu" or weight.shape[0] < weight.shape[1]:
        return weight.contiguous()
    return weight.t().contiguous().t()


def _finish(model: Llama, state: dict, device) -> Llama:
    """Put `state` into a model built on the meta device, re-tie the head, build the rotary table; for
    inference: eval mode, no gradients (a loaded model is read, not trained, and autograd would keep
    a graph of every forward pass made outside `torch.no_grad()`)."""
    c = model.config
    if c.tie_weights:
        state = {**state, "head.weight": state["tok_emb.weight"]}
    model.load_state_dict(state, assign=True, strict=True)
    if c.tie_weights:
        model.head.weight = model.tok_emb.weight  # assign=True made two parameters of one tensor
    model.rotary = RotaryEmbedding(c.head_dim, c.block_size, c.rope_theta).to(device)
    return model.requires_grad_(False).eval()


# ------------------------------------------------------------------------- Hugging Face layout
def save_hf_dir(model: Llama, path, bos_token_id: int | None = None, eos_token_id: int | None = None) -> None:
    """Write config.json and model.safetensors in the Hugging Face layout into folder `path`."""
    from safetensors.torch import save_file

    if not isinstance(model, Llama):
        raise ValueError(f"model must be an lmlab Llama, got {type(model).__name__}")
    path = Path(os.fspath(path))
    path.mkdir(parents=True, exist_ok=True)
    c = model.config
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd, "intermediate_size": c.intermediate_size, "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head, "head_dim": c.head_dim,
        "max_position_embeddings": c.block_size, "rope_theta": c.rope_theta, "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tie_weights, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
        "torch_dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }
    own, shapes = model.state_dict(), _part_shapes(c)
    tensors = {}
    for ours, parts in _file_names(c, "hf").items():
        pieces = own[ours].split([shape[0] for shape in shapes[ours]])
        tensors.update({name: piece.contiguous() for name, piece in zip(parts, pieces)})
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")


def from_hf_dir(path, block_size: int | None = None, dtype=torch.float32, device="cpu",
                n_layer: int | None = None) -> Llama:
    """A `Llama` from a folder in the Hugging Face layout (config.json, model.safetensors), for inference as
    `from_gguf`'s: eval mode, requires_grad=False; `n_layer` loads only the first blocks, as there."""
    from safetensors import safe_open

    path = Path(os.fspath(path))
    where = f"path {str(path)!r}"
    for file in ("config.json", "model.safetensors"):
        if not (path / file).is_file():
            raise FileNotFoundError(f"{where} has no {file}; a Hugging Face model folder holds config.json and "
                                    "model.safetensors")
    try:
        hf = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{where} has a config.json that is not JSON") from None
    if not isinstance(hf, dict) or hf.get("model_type") != "llama":
        raise ValueError(f"{where} holds a {hf.get('model_type') if isinstance(hf, dict) else None!r} model; "
                         "lmlab reads only model_type 'llama'")
    rope = hf.get("rope_parameters") or {}
    try:
        config = LlamaConfig(
            vocab_size=hf["vocab_size"], block_size=hf["max_position_embeddings"], n_layer=hf["num_hidden_layers"],
            n_head=hf["num_attention_heads"], n_kv_head=hf.get("num_key_value_heads", hf["num_attention_heads"]),
            n_embd=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
            rope_theta=float(hf.get("rope_theta", rope.get("rope_theta", 10000.0))), norm_eps=float(hf["rms_norm_eps"]),
            tie_weights=bool(hf.get("tie_word_embeddings", False)))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where} has a config.json without a valid {err} for a Llama model") from None
    config.block_size = _check_block_size(block_size, config.block_size, where)
    _check_config(config)
    if n_layer is not None and not 1 <= check_positive_int(n_layer, "n_layer") <= config.n_layer:
        raise ValueError(f"n_layer must be in [1, {config.n_layer}] (the blocks in config.json), got {n_layer}")
    state = {}
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
        if config.n_layer > len(stored):  # refused before anything is sized by it
            raise ValueError(f"{where} has a config.json of {config.n_layer:,} layers but only {len(stored)} tensors")
        names, shapes = _file_names(config, "hf"), _part_shapes(config)
        wanted = {name: shape for ours, parts in names.items() for name, shape in zip(parts, shapes[ours])}
        if config.tie_weights:
            stored.discard("lm_head.weight")  # some writers store the tied copy too
        if stored != wanted.keys():
            odd = sorted(stored ^ wanted.keys())[:3]
            raise ValueError(f"{where} has model.safetensors whose tensors do not fit its config.json (e.g. {odd})")
        for name, shape in wanted.items():
            stored_shape = tuple(f.get_slice(name).get_shape())
            if stored_shape != shape:
                raise ValueError(f"{where} has {name!r} of shape {stored_shape}, expected {shape}")
        if n_layer is not None:  # every tensor was checked above; only the first blocks' are read
            config = dataclasses.replace(config, n_layer=n_layer)
            names = _file_names(config, "hf")
        with torch.device("meta"):
            model = Llama(config)
        for ours, parts in names.items():
            pieces = [f.get_tensor(name).to(device=device, dtype=dtype) for name in parts]
            state[ours] = _decode_layout(torch.cat(pieces) if len(pieces) > 1 else pieces[0])
    return _finish(model, state, device)
