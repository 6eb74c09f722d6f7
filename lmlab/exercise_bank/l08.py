"""Lesson 08: temperature scaling with its greedy limit, and a nucleus (top-p) filter that is right for a batch."""

import torch

from lmlab.decoding import apply_temperature, top_p_filter
from lmlab.exercises import function_exercise


def _temperature_cases():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 10, generator=g) * 2
    vocab_sized = torch.randn(2, 69, generator=g) * 3 - 5  # all negative: logits / 0 would be -inf everywhere
    return [(logits, 1.0), (logits, 0.7), (logits, 1.5), (logits, 0.0), (vocab_sized, 0.0), (vocab_sized, 0.25),
            (torch.tensor([[4.0, 1.0, 3.0, -2.0]]), 2.0)]


@function_exercise("08.temperature_probs", cases=_temperature_cases,
                   hint="for T > 0 the probabilities are the softmax of logits / T over the last dim (the vocabulary). "
                        "T = 0 cannot be divided by: it is the limit T -> 0, where all the probability goes to each "
                        "row's most probable token, so return a one-hot row per prompt "
                        "(logits.argmax(-1), then F.one_hot(..., vocab).float() or zeros_like(...).scatter_).")
def _temperature_probs(logits, temperature):
    return apply_temperature(logits, temperature).softmax(-1)


def _top_p_cases():
    g = torch.Generator().manual_seed(80)
    confident_and_unsure = torch.stack([torch.tensor([6.0, 1.0, 0.5, 0.0, -1.0, 0.2, 0.1, -0.5]),
                                        torch.tensor([0.3, 0.1, 0.2, 0.0, 0.25, 0.15, -0.1, 0.05])])
    return [
        (torch.tensor([[2.0, 1.0, 0.5, 3.0, -1.0, 0.0]]), 0.8),  # one prompt: the batch bug still passes here
        (confident_and_unsure, 0.9),  # two prompts whose nuclei differ: 1 token and 7
        (torch.randn(4, 20, generator=g) * 2, 0.5),
        (torch.randn(3, 69, generator=g) * 1.5, 0.95),
        (torch.randn(2, 10, generator=g), 1.0),
    ]


@function_exercise("08.top_p_rows", cases=_top_p_cases,
                   hint="per row: sort the probabilities in descending order (keep the indices), take the cumulative "
                        "sum, and remove a token when the mass of the tokens ranked BEFORE it is already >= p (so the "
                        "most probable token always stays). That mask is in rank order: send it back to token order "
                        "row by row with mask.scatter(-1, sorted_indices, mask), then logits.masked_fill(..., -inf). "
                        "Never index with sorted_indices[mask], which mixes the rows of a batch.")
def _top_p_rows(logits, p):
    return top_p_filter(logits, p)
