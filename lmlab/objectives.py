"""What the models learn from: the causal LM loss, BERT-style masking and the masked LM loss.

A causal LM predicts every token from the ones before it, so its targets are its inputs shifted by one.
A masked LM predicts a few hidden tokens from both sides, so its loss counts only those tokens.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from lmlab._checks import MAX_VOCAB_SIZE, check_fraction, check_ids, check_positive_int

IGNORE_INDEX = -100  # label of a position that is not predicted (the value F.cross_entropy skips)


def _check_logits(logits, input_ids, ids_name: str):
    """Check that logits (batch, seq, vocab) is a float tensor lined up with ids (batch, seq)."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a float tensor of shape (batch, seq, vocab), got {got}")
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (batch, seq, vocab), got shape {tuple(logits.shape)}")
    if logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} do not match {ids_name} of shape {tuple(input_ids.shape)}; "
            "the first two dimensions must be equal"
        )


def _check_token_id(value, name: str, vocab_size: int):
    try:
        ok = not isinstance(value, bool) and 0 <= operator.index(value) < vocab_size
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must hold token ids in [0, {vocab_size}), got {value!r}")


def _zero_loss(logits):
    # an empty sum: 0.0, still attached to the graph so backward() works and gives zero gradients
    return logits.flatten()[:0].sum()


def clm_loss(logits, input_ids, pad_token_id: int | None = None):
    """Causal LM loss: mean cross-entropy of predicting input_ids[:, t + 1] from logits[:, t].

    logits (batch, seq, vocab), input_ids (batch, seq) -> scalar. Targets equal to `pad_token_id` are
    not counted. When no target is left (every target is padding) the loss is 0.0 with zero gradients.
    """
    check_ids(input_ids)
    _check_logits(logits, input_ids, "input_ids")
    vocab = logits.shape[-1]
    check_ids(input_ids, vocab_size=vocab)
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must hold at least 2 tokens per row to have a next token to predict, got {input_ids.shape[1]}")
    targets = input_ids[:, 1:].long()
    if pad_token_id is not None:
        targets = targets.masked_fill(targets == pad_token_id, IGNORE_INDEX)
    if not (targets != IGNORE_INDEX).any():
        return _zero_loss(logits)
    # logits at the last position predict a token beyond the sequence: nothing to compare with
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def mask_tokens(
    input_ids,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids=(),
    pad_token_id: int | None = None,
    select_rate: float = 0.15,
    mask_rate: float = 0.8,
    random_rate: float = 0.1,
    generator: torch.Generator | None = None,
):
    """BERT's masking: choose the positions a masked LM must predict and corrupt them.

    Each ordinary position is selected on its own with probability `select_rate` (a coin flip per
    position, as Hugging Face's DataCollatorForLanguageModeling does, so the share selected is 15 % on
    average, not exactly; BERT's original code picks exactly max(1, round(15 % of the length)) positions
    per sequence). Special tokens, padding and [MASK] itself are never selected. A
    selected position becomes [MASK] with probability `mask_rate`, a random token with probability
    `random_rate`, and keeps its token otherwise (80/10/10 by default). Random tokens are drawn
    uniformly from the ordinary vocabulary (never a special, padding or [MASK] id); as in BERT, the draw
    may hit the original token.

    input_ids (batch, seq) -> (masked_ids (batch, seq) of the same dtype, labels (batch, seq) long),
    labels holding the original id at selected positions and -100 elsewhere. `input_ids` is not modified;
    the same `generator` state gives the same result.
    """
    if check_positive_int(vocab_size, "vocab_size") > MAX_VOCAB_SIZE:  # a (vocab_size,) mask is allocated below
        raise ValueError(f"vocab_size must be at most {MAX_VOCAB_SIZE:,}, got {vocab_size:,}")
    check_ids(input_ids, vocab_size=vocab_size)
    _check_token_id(mask_token_id, "mask_token_id", vocab_size)
    if pad_token_id is not None:
        _check_token_id(pad_token_id, "pad_token_id", vocab_size)
    if isinstance(special_token_ids, (int, str)) or not hasattr(special_token_ids, "__iter__"):
        raise ValueError(f"special_token_ids must be a list of token ids, got {special_token_ids!r}")
    special_token_ids = list(special_token_ids)  # read once: it may be a one-shot iterator
    for token_id in special_token_ids:
        _check_token_id(token_id, "special_token_ids", vocab_size)
    check_fraction(select_rate, "select_rate")
    check_fraction(mask_rate, "mask_rate")
    check_fraction(random_rate, "random_rate")
    if mask_rate + random_rate > 1.0 + 1e-9:
        raise ValueError(f"mask_rate + random_rate must be <= 1, got {mask_rate} + {random_rate} = {mask_rate + random_rate}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

    device = input_ids.device
    never_selected = [mask_token_id, *special_token_ids] + ([] if pad_token_id is None else [pad_token_id])
    special = torch.tensor([operator.index(i) for i in never_selected], device=device)
    ordinary = torch.ones(vocab_size, dtype=torch.bool, device=device)
    ordinary[special] = False
    ordinary_ids = ordinary.nonzero().squeeze(1)
    if random_rate > 0 and len(ordinary_ids) == 0:
        raise ValueError("special_token_ids must leave at least one ordinary token to draw random replacements from, got none left")

    # all draws are made in full, whatever gets selected, so one generator state always gives one result
    gen_device = generator.device if generator is not None else device
    shape = input_ids.shape
    select_draw = torch.rand(shape, generator=generator, device=gen_device).to(device)
    action_draw = torch.rand(shape, generator=generator, device=gen_device).to(device)
    random_pick = torch.randint(max(len(ordinary_ids), 1), shape, generator=generator, device=gen_device).to(device)

    selected = (select_draw < select_rate) & ~torch.isin(input_ids, special)
    to_mask = selected & (action_draw < mask_rate)
    to_random = selected & (action_draw >= mask_rate) & (action_draw < mask_rate + random_rate)

    labels = torch.where(selected, input_ids.long(), IGNORE_INDEX)
    masked_ids = input_ids.clone()
    masked_ids[to_mask] = mask_token_id
    masked_ids[to_random] = ordinary_ids[random_pick[to_random]].to(masked_ids.dtype)
    return masked_ids, labels


def mlm_loss(logits, labels):
    """Masked LM loss: mean cross-entropy over the positions whose label is not -100.

    logits (batch, seq, vocab), labels (batch, seq) from `mask_tokens` -> scalar. The predictions at
    every other position do not count. When nothing is selected (which happens by chance on short
    batches) the loss is 0.0 with zero gradients, so a training step on such a batch changes nothing.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.is_floating_point() or labels.is_complex():
        got = f"shape {tuple(labels.shape)} and dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor of shape (batch, seq), got {got}")
    _check_logits(logits, labels, "labels")
    vocab = logits.shape[-1]
    predicted = labels != IGNORE_INDEX
    if predicted.any():
        lo, hi = int(labels[predicted].min()), int(labels[predicted].max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"labels must be -100 or an id in [0, {vocab}), got {lo if lo < 0 else hi}")
    else:
        return _zero_loss(logits)
    return F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1).long(), ignore_index=IGNORE_INDEX)
