"""Lesson 05: what BERT's masking rule does on average, and the loss on the masked positions only."""

import torch

from lmlab.exercises import function_exercise
from lmlab.objectives import mlm_loss


@function_exercise("05.expected_counts",
                   cases=[(1000, 0, 0.15, 0.8, 0.1), (1000, 100, 0.15, 0.8, 0.1), (66, 2, 0.15, 0.8, 0.1),
                          (500, 20, 0.3, 0.5, 0.25), (12, 12, 0.15, 0.8, 0.1)],
                   hint="special tokens are never selected, every other token with probability select_rate; the "
                        "rates of the selected ones are shares of the selected, and the kept share is whatever the "
                        "[MASK] and random shares leave. Return three floats, in the order ([MASK], random, kept).")
def _expected_counts(n_tokens, n_special, select_rate, mask_rate, random_rate):
    selected = (n_tokens - n_special) * select_rate
    return selected * mask_rate, selected * random_rate, selected * (1 - mask_rate - random_rate)


def _loss_cases():
    g = torch.Generator().manual_seed(0)

    def labels_like(ids, keep):
        return torch.where(keep, ids, torch.full_like(ids, -100))

    cases = []
    for batch, seq, vocab in [(1, 6, 5), (2, 8, 11), (4, 16, 30)]:
        logits = torch.randn(batch, seq, vocab, generator=g) * 2
        ids = torch.randint(vocab, (batch, seq), generator=g)
        keep = torch.rand(batch, seq, generator=g) < 0.3
        keep[:, 0] = True  # every row predicts something
        cases.append((logits, labels_like(ids, keep)))
    # rows with very different numbers of predictions: a mean of per-row means is not the mean over positions
    logits = torch.randn(2, 10, 7, generator=g) * 2
    ids = torch.randint(7, (2, 10), generator=g)
    keep = torch.tensor([[True] * 9 + [False], [True] + [False] * 9])
    cases.append((logits, labels_like(ids, keep)))
    return cases


@function_exercise("05.masked_loss", cases=_loss_cases, rtol=1e-4, atol=1e-6,
                   hint="only the positions whose label is not -100 count, and the mean is over all of them in "
                        "the batch together, not row by row. F.cross_entropy wants logits of shape (n, vocab) and "
                        "targets of shape (n,).")
def _masked_loss(logits, labels):
    return float(mlm_loss(logits, labels))
