"""Input checks shared by the public functions: each failure is one sentence naming the argument."""

from __future__ import annotations

import torch

MAX_VOCAB_SIZE = 1_000_000  # the largest vocabularies in use have about 256,000 tokens


def check_ids(input_ids, name: str = "input_ids", vocab_size: int | None = None, max_len: int | None = None):
    """Check a `(batch, seq)` LongTensor of token ids and return it."""
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"{name} must be a torch.LongTensor of shape (batch, seq), got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seq), got a tensor of rank {input_ids.dim()} with shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise ValueError(f"{name} must hold integer token ids (torch.long), got dtype {input_ids.dtype}")
    if input_ids.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one token per row, got shape {tuple(input_ids.shape)}")
    if max_len is not None and input_ids.shape[1] > max_len:
        raise ValueError(f"{name} has {input_ids.shape[1]} positions but at most {max_len} fit in the model's context")
    if vocab_size is not None and input_ids.numel():
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains id {bad}, outside the vocabulary [0, {vocab_size})")
    return input_ids


def check_positive_int(value, name: str):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_nonnegative_int(value, name: str):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0, low_open: bool = False, high_open: bool = False):
    """Check `low <(=) value <(=) high` and return it as a float."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{hb}, got {value!r}")
    return float(value)
