"""The two models of the course, in the order the data meets them.

`GPT` is a causal transformer (predicts the next token, sees only the past) with a key/value cache
for generation; `MaskedLM` is a bidirectional encoder (fills in [MASK] tokens, sees both sides).
Both are built from the same `Block`; the only differences are the attention mask and the head.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab._checks import check_ids, check_positive_int


@dataclass
class GPTConfig:
    vocab_size: int = 65  # number of distinct token ids
    block_size: int = 128  # longest sequence the model can see (learned positions stop here)
    n_layer: int = 4  # transformer blocks stacked
    n_head: int = 4  # attention heads per block; n_embd must divide evenly among them
    n_embd: int = 128  # width of every token vector
    dropout: float = 0.0  # dropout on attention weights and residual branches while training
    bias: bool = True  # biases in Linear and LayerNorm layers
    tie_weights: bool = True  # output head shares its matrix with the token embedding


@dataclass
class MaskedLMConfig:
    vocab_size: int = 70  # number of distinct token ids, special tokens included
    block_size: int = 128  # longest sequence the model can see
    n_layer: int = 4  # transformer blocks stacked
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # width of every token vector
    dropout: float = 0.0  # dropout while training
    bias: bool = True  # biases in Linear and LayerNorm layers
    tie_weights: bool = True  # output head shares its matrix with the token embedding
    pad_token_id: int = 0  # id of [PAD]; padded positions are never attended to


MAX_PARAMETERS = 2**31  # 8 GiB of float32 weights, far beyond what a course model needs
MAX_LAYERS = 1000  # each block is a handful of Python modules; the largest models have about 100


def parameter_count(config) -> int:
    """The number of parameters a model of this config has, computed without building it."""
    C = config.n_embd
    biases = 11 * C if config.bias else 0  # qkv 3C, proj C, fc 4C, mlp proj C, two LayerNorms 2C
    block = 12 * C * C + 2 * C + biases  # qkv 3C^2, proj C^2, fc 4C^2, mlp proj 4C^2, two LayerNorm weights
    embeddings = config.vocab_size * C * (1 if config.tie_weights else 2) + config.block_size * C
    return embeddings + config.n_layer * block + C + (C if config.bias else 0)  # + the final LayerNorm


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on every platform
        return None


def _check_config(config):
    for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        check_positive_int(getattr(config, field), f"config.{field}")
    if config.n_layer > MAX_LAYERS:
        raise ValueError(f"config.n_layer must be at most {MAX_LAYERS} (the largest models have about 100), "
                         f"got {config.n_layer}")
    if config.n_embd % config.n_head:
        raise ValueError(f"config.n_embd ({config.n_embd}) must be divisible by config.n_head ({config.n_head})")
    dropout = config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"config.dropout must be a number in [0, 1), got {dropout!r}")
    for field in ("bias", "tie_weights"):
        if not isinstance(getattr(config, field), bool):
            raise ValueError(f"config.{field} must be True or False, got {getattr(config, field)!r}")
    if isinstance(config, MaskedLMConfig):
        pad = config.pad_token_id
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < config.vocab_size:
            raise ValueError(f"config.pad_token_id must be an id in [0, {config.vocab_size}), got {pad!r}")
    # refuse before allocating: a size typed one order of magnitude too large must not reach the allocator
    n, gib = parameter_count(config), 4 / 2**30  # bytes per float32 parameter, in GiB
    sizes = (f"vocab_size={config.vocab_size:,}, block_size={config.block_size:,}, n_layer={config.n_layer}, "
             f"n_embd={config.n_embd:,}")
    if n > MAX_PARAMETERS:
        raise ValueError(f"config ({sizes}) describes {n:,} parameters ({n * gib:,.1f} GiB in float32), more than "
                         f"the {MAX_PARAMETERS:,} (8 GiB) lmlab builds; make these sizes smaller")
    memory = _memory_bytes()
    if memory is not None and 4 * n > memory:
        raise ValueError(f"config ({sizes}) describes {n:,} parameters ({n * gib:,.1f} GiB in float32), more than "
                         f"this machine's {memory / 2**30:,.1f} GiB of memory; make these sizes smaller")


def _dropout(p: float) -> nn.Module:
    # with p = 0 a Dropout module is a no-op that still costs a call on every token of generation
    return nn.Dropout(p) if p > 0 else nn.Identity()


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated for `block_size` positions.

    Generation feeds one new token per step; attention then needs the keys and values of all earlier
    tokens, which this cache keeps so that they are computed once instead of at every step.
    """

    def __init__(self, n_layer, batch_size, n_head, block_size, head_dim, dtype, device):
        shape = (batch_size, n_head, block_size, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.length = 0  # positions filled
        self.capacity = block_size
        self._spare = None  # buffers that reorder() writes into, then swaps with keys/values
        self.pad = None  # (batch,) left-padding positions of each row, set by a masked first call; None: none

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (new_batch,) of every layer, in that order; rows may repeat (beam search)."""
        if index.dim() != 1 or index.dtype != torch.long:
            raise ValueError(f"index must be a 1-D LongTensor of row numbers, got {index.dtype} of shape {tuple(index.shape)}")
        if self.pad is not None:
            self.pad = self.pad[index]
        if index.numel() != self.batch_size:
            # a new batch size: fresh buffers of that size
            self.keys = [k.index_select(0, index) for k in self.keys]
            self.values = [v.index_select(0, index) for v in self.values]
            self._spare = None
            return
        # same batch size (every beam-search step): copy only the filled positions into spare buffers
        # and swap, instead of allocating and copying all block_size positions of every layer
        if self._spare is None:
            self._spare = ([torch.empty_like(k) for k in self.keys], [torch.empty_like(v) for v in self.values])
        spare_keys, spare_values = self._spare
        n = self.length
        for src, dst in ((self.keys, spare_keys), (self.values, spare_values)):
            for a, b in zip(src, dst):
                torch.index_select(a[:, :, :n], 0, index, out=b[:, :, :n])
        self._spare = (self.keys, self.values)
        self.keys, self.values = spare_keys, spare_values

    def crop(self, n: int) -> None:
        """Forget every position from `n` on."""
        if not 0 <= n <= self.length:
            raise ValueError(f"n must be in [0, {self.length}], got {n}")
        self.length = n
        if n == 0:
            self.pad = None  # an empty cache starts afresh: the next call says its padding again


def left_padding(attention_mask, input_ids, cache=None):
    """The left padding (batch,) of each row, from `attention_mask` or else from `cache`; None when no row has any.

    attention_mask (batch, seq), 1 = token, 0 = padding, covers `input_ids`; padding must come first in
    each row (left padding) and no row may be all padding. With a cache, only the first call (an empty
    cache) may pad: the cache remembers each row's padding for the calls that follow.
    """
    if attention_mask is None:
        return None if cache is None else cache.pad
    m = attention_mask
    if not isinstance(m, torch.Tensor) or m.shape != input_ids.shape or m.is_floating_point() or m.is_complex():
        got = f"{m.dtype} of shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(f"attention_mask must be a bool or integer tensor of the shape of input_ids "
                         f"{tuple(input_ids.shape)}, got {got}")
    m = m.to(device=input_ids.device, dtype=torch.long)
    if ((m != 0) & (m != 1)).any():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token), got other values")
    if (m[:, 1:] < m[:, :-1]).any():
        raise ValueError("attention_mask has a 0 after a 1 (right padding); only left padding is supported: "
                         "put each row's padding before its tokens")
    if not m[:, -1].all():
        raise ValueError(f"attention_mask has a row of padding only (row {int((m[:, -1] == 0).nonzero()[0, 0])}); "
                         "every row needs at least one token")
    pad = m.shape[1] - m.sum(1)
    if cache is not None and cache.length > 0:
        if pad.any():
            raise ValueError("attention_mask may pad only the first call on an empty cache, which remembers the "
                             "padding; later calls take tokens only (all ones)")
        return cache.pad
    pad = pad if pad.any() else None  # no padding at all: the fast path
    if cache is not None:
        cache.pad = pad
    return pad


def padded_positions(pad, start: int, length: int):
    """Positions (batch, length) of tokens start .. start + length - 1 of each row, counted from its first
    real token (padding gets 0), and the attention mask (batch, 1, length, start + length), bool, True
    where query i may see key j: j <= i and j is a real token, or j = i (a padding query sees itself only,
    so that its softmax has something to normalise; its output is never used)."""
    query = torch.arange(start, start + length, device=pad.device)
    key = torch.arange(start + length, device=pad.device)
    positions = (query[None, :] - pad[:, None]).clamp_min(0)
    mask = (key[None, None, :] <= query[None, :, None]) & (key[None, None, :] >= pad[:, None, None])
    mask = mask | (key[None, None, :] == query[None, :, None])
    return positions, mask[:, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, config, causal: bool = True):
        super().__init__()
        self.n_head, self.causal, self.dropout = config.n_head, causal, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = _dropout(config.dropout)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, pad_mask=None):
        """x: (batch, seq, n_embd); pad_mask: (batch, 1, 1 or seq, keys) bool, True where attending is allowed
        (with a cache, it must include the causal rule: see `padded_positions`)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (batch, seq, C) -> (batch, heads, seq, head_dim): every head attends on its own
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = pad_mask, self.causal and pad_mask is None
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k, v = cache.keys[layer][:, :, : start + T], cache.values[layer][:, :, : start + T]
            if start > 0:
                # query i sits at position start + i and may see keys 0 .. start + i; with a single
                # query that is every key, so no mask is needed at all
                is_causal = False
                if T > 1 and mask is None:
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
        elif mask is not None and self.causal:
            mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(y))

    def attention_weights(self, x, pad_mask=None):
        """The attention pattern (batch, heads, seq, seq) that `forward` uses, for plotting."""
        B, T, C = x.shape
        q, k, _ = self.qkv(x).split(C, dim=2)
        q, k = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)
        allowed = torch.ones(T, T, dtype=torch.bool, device=x.device)
        if self.causal:
            allowed = allowed.tril()
        if pad_mask is not None:
            allowed = allowed & pad_mask
        return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = _dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config, causal: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, causal)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0, pad_mask=None):
        x = x + self.attn(self.ln_1(x), cache, layer, pad_mask)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """Embeddings, a stack of blocks, a final norm and an output head: what both models share."""

    causal = True

    def __init__(self, config):
        super().__init__()
        _check_config(config)
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = _dropout(config.dropout)
        self.register_buffer("positions", torch.arange(config.block_size), persistent=False)
        self.blocks = nn.ModuleList([Block(config, self.causal) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.tok_emb.weight  # one matrix reads tokens in and writes them out
        self.apply(self._init_weights)
        # scaled init of the residual projections, as in GPT-2: keeps the residual stream's variance flat
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, input_ids, start: int = 0):
        """Token + position embeddings, (batch, seq) -> (batch, seq, n_embd)."""
        pos = self.positions[start : start + input_ids.shape[1]]
        # .long(): nn.Embedding takes only int32/int64 indices, check_ids also accepts uint8/int16
        return self.drop(self.tok_emb(input_ids.long()) + self.pos_emb(pos))


class GPT(_Transformer):
    """Causal language model: logits[:, t] is the model's guess for token t + 1 given tokens 0..t."""

    causal = True

    def new_cache(self, batch_size: int) -> KVCache:
        c = self.config
        check_positive_int(batch_size, "batch_size")
        numbers = 2 * c.n_layer * batch_size * c.block_size * c.n_embd  # keys and values of every layer
        if numbers > MAX_PARAMETERS:
            raise ValueError(f"batch_size={batch_size:,} needs a cache of {numbers:,} numbers, more than "
                             f"{MAX_PARAMETERS:,} (8 GiB in float32); use a smaller batch")
        p = self.tok_emb.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head, p.dtype, p.device)

    def forward(self, input_ids, cache: KVCache | None = None, attention_mask=None):
        """input_ids (batch, seq) -> logits (batch, seq, vocab); with `cache`, positions continue after it.

        attention_mask (batch, seq), 1 = token, 0 = padding, for prompts of unequal lengths padded on the
        left: each row then reads as if alone (its first token is position 0, padding is never attended).
        Logits at padded positions are meaningless. See `left_padding` for what a cache remembers.
        """
        start = 0 if cache is None else cache.length
        check_ids(input_ids, vocab_size=self.config.vocab_size, max_len=self.config.block_size - start)
        if cache is not None and cache.batch_size != input_ids.shape[0]:
            raise ValueError(f"input_ids has batch size {input_ids.shape[0]} but the cache holds {cache.batch_size} rows")
        pad = left_padding(attention_mask, input_ids, cache)
        if pad is None:
            x, mask = self.embed(input_ids, start), None
        else:
            positions, mask = padded_positions(pad, start, input_ids.shape[1])
            x = self.drop(self.tok_emb(input_ids.long()) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, mask)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.head(self.ln_f(x))


class MaskedLM(_Transformer):
    """Bidirectional encoder: every position sees every other non-padding position."""

    causal = False

    def forward(self, input_ids, attention_mask=None):
        """input_ids, attention_mask (batch, seq) -> logits (batch, seq, vocab); mask 1 = token, 0 = padding.

        Without an attention_mask, positions holding `config.pad_token_id` are treated as padding.
        """
        check_ids(input_ids, vocab_size=self.config.vocab_size, max_len=self.config.block_size)
        if attention_mask is None and (input_ids == self.config.pad_token_id).any():
            attention_mask = input_ids != self.config.pad_token_id
        pad_mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
            pad_mask = attention_mask.bool()[:, None, None, :]
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, pad_mask=pad_mask)
        return self.head(self.ln_f(x))


MODELS = {"gpt": (GPT, GPTConfig), "masked_lm": (MaskedLM, MaskedLMConfig)}


def build(kind: str, config: dict) -> nn.Module:
    """Build a model from its kind ("gpt" or "masked_lm") and a config dict, as stored in checkpoints."""
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {sorted(MODELS)}, got {kind!r}")
    model_cls, config_cls = MODELS[kind]
    try:
        cfg = config_cls(**config)
    except TypeError as e:
        raise ValueError(f"config does not fit a {kind} model: {e}") from None
    return model_cls(cfg)


def kind_of(model: nn.Module) -> str:
    for kind, (model_cls, _) in MODELS.items():
        if type(model) is model_cls:
            return kind
    raise ValueError(f"model must be an lmlab GPT or MaskedLM, got {type(model).__name__}")


def config_dict(model: nn.Module) -> dict:
    return asdict(model.config)
