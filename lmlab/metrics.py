"""How varied and how repetitive generated text is, measured on its n-grams.

    distinct_n(text, n)        # distinct n-grams / all n-grams: 1.0 = no n-gram ever repeats
    repetition_rate(text, n)   # share of the n-grams that already occurred earlier in the same text
    repeated_ngrams(text, n)   # which ones: one bool per n-gram, in order (cumulate it for a curve)
    mean_sem(values)           # a mean and its error bar (standard error) over independent measurements

A sequence is a str (its characters are the tokens), a 1-D tensor of token ids, or a list of tokens
(ints or any hashable but str). A batch is a 2-D tensor `(batch, seq)` or a list of sequences, so a list
of str is a batch of texts (wrap a list of string tokens as `[tokens]` to score it as one sequence); a
batch gives one value per row, a tensor `(batch,)`. An n-gram is n consecutive tokens of one row: n-grams never
span two rows. A sequence with no n-gram (empty, or shorter than n) scores 0.0 on both measures:
there is nothing varied and nothing repeated in it.

Within one sequence `repetition_rate = 1 - distinct_n` (the "seq-rep-n" of Welleck et al., 2019),
so a lesson can read either. Across a batch, `distinct_n(batch, n, pooled=True)` counts the distinct
n-grams of all rows together: samples that repeat one another score low even when each is varied.
"""

from __future__ import annotations

import torch

from lmlab._checks import check_positive_int


def _is_row(x) -> bool:
    """A row of a batch: a str, a 1-D tensor, or a flat list of hashable tokens (str tokens allowed)."""
    if isinstance(x, str):
        return True
    if isinstance(x, torch.Tensor):
        return x.dim() == 1
    return isinstance(x, (list, tuple)) and not any(isinstance(t, (list, tuple, torch.Tensor)) for t in x)


def _is_sequence(x) -> bool:
    """One sequence given on its own: a row, except a list of str, which is a batch of texts."""
    return _is_row(x) and not (isinstance(x, (list, tuple)) and any(isinstance(t, str) for t in x))


def _tokens(seq) -> list:
    return seq.tolist() if isinstance(seq, torch.Tensor) else list(seq)


def _rows(sequences, name: str) -> tuple[list[list], bool]:
    """(rows, is_batch): the sequences as lists of tokens, and whether a batch was given."""
    if _is_sequence(sequences):
        return [_tokens(sequences)], False
    if isinstance(sequences, torch.Tensor) and sequences.dim() == 2:
        return sequences.tolist(), True
    if isinstance(sequences, (list, tuple)) and all(_is_row(s) for s in sequences):
        return [_tokens(s) for s in sequences], True
    got = f"a tensor of shape {tuple(sequences.shape)}" if isinstance(sequences, torch.Tensor) else type(sequences).__name__
    raise ValueError(f"{name} must be a sequence (str, 1-D tensor, list of tokens) or a batch of them "
                     f"(2-D tensor, list of sequences), got {got}")


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _repeated(tokens: list, n: int) -> list[bool]:
    seen, flags = set(), []
    for gram in _ngrams(tokens, n):
        flags.append(gram in seen)
        seen.add(gram)
    return flags


def _distinct(grams: list) -> float:
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(sequences, n: int, pooled: bool = False):
    """Distinct n-grams / all n-grams of a sequence (-> float) or of each row of a batch (-> tensor (batch,)).

    pooled=True (a batch): one float, the distinct n-grams of all rows together over all their n-grams.
    A sequence without n-grams (shorter than n) gives 0.0.
    """
    rows, is_batch = _rows(sequences, "sequences")
    check_positive_int(n, "n")
    if pooled:
        return _distinct([g for row in rows for g in _ngrams(row, n)])
    values = [_distinct(_ngrams(row, n)) for row in rows]
    return torch.tensor(values) if is_batch else values[0]


def repeated_ngrams(sequence, n: int) -> torch.Tensor:
    """One bool per n-gram of one sequence (len - n + 1 of them, or none): True where it occurred before.

    `repeated_ngrams(x, n).cumsum(0) / torch.arange(1, k + 1)` is the repetition rate of every prefix.
    """
    if not _is_sequence(sequence):
        rows, _ = _rows(sequence, "sequence")  # a batch is understood, but one sequence is needed
        raise ValueError(f"sequence must be one sequence (str, 1-D tensor, list of tokens), got a batch of {len(rows)}")
    check_positive_int(n, "n")
    return torch.tensor(_repeated(_tokens(sequence), n), dtype=torch.bool)


def repetition_rate(sequences, n: int):
    """Share of the n-grams of a sequence (-> float) or of each row of a batch (-> tensor (batch,)) that
    already occurred earlier in the same row; 0.0 for a sequence without n-grams."""
    rows, is_batch = _rows(sequences, "sequences")
    check_positive_int(n, "n")
    values = []
    for row in rows:
        flags = _repeated(row, n)
        values.append(sum(flags) / len(flags) if flags else 0.0)
    return torch.tensor(values) if is_batch else values[0]


def mean_sem(values, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of the mean along `dim`: values (..., n, ...) -> (mean, sem), each without `dim`.

    sem = sample standard deviation (n - 1 in the denominator) / sqrt(n): the error bar of a mean of n
    independent measurements, e.g. one number per prompt. Differences of paired measurements (two
    strategies on the same prompts) get their own, often much smaller, error bar: `mean_sem(a - b)`.
    """
    x = values if isinstance(values, torch.Tensor) else torch.tensor(values)
    if not x.is_floating_point():
        x = x.double() if x.dtype == torch.int64 else x.float()  # int64 counts may exceed float32's 2**24
    if x.dim() == 0 or not -x.dim() <= dim < x.dim():
        raise ValueError(f"values must have a dimension {dim} to average over, got shape {tuple(x.shape)}")
    if x.shape[dim] < 2:
        raise ValueError(f"values must hold at least 2 measurements along dim {dim} for an error bar, got {x.shape[dim]}")
    if not torch.isfinite(x).all():
        raise ValueError("values must be finite numbers, got NaN or infinity")
    return x.mean(dim), x.std(dim) / x.shape[dim] ** 0.5
