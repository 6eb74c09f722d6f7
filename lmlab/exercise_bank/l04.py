"""Lesson 04: the inputs and targets of a causal LM, and the loss of a model that knows nothing."""

import functools
import math

import torch

from lmlab.exercises import function_exercise, value_exercise


def _shift_cases():
    g = torch.Generator().manual_seed(0)
    return [
        (torch.tensor([[5, 6, 7, 8]]), 0),
        (torch.randint(1, 20, (3, 6), generator=g), 0),
        # padded rows: the padding sits at the end of the shorter lines
        (torch.tensor([[4, 9, 2, 7, 3], [4, 8, 3, 0, 0], [6, 0, 0, 0, 0]]), 0),
        (torch.tensor([[1, 2, 3, 9, 9, 9], [3, 2, 1, 2, 3, 9]]), 9),  # padding needn't be id 0
        (torch.tensor([[1, 2]]), 0),
    ]


@function_exercise("04.clm_targets", cases=_shift_cases,
                   hint="the model reads every token but the last one and predicts every token but the first one: "
                        "two slices of ids along dim 1. Then the targets equal to pad_id become -100 "
                        "(Tensor.masked_fill); the inputs stay as they are, and ids itself is not changed.")
def _clm_targets(ids, pad_id):
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, -100)
    return ids[:, :-1], targets


@functools.lru_cache(maxsize=1)
def _lesson_vocab_size() -> int:
    from lmlab.corpus import shakespeare

    return len(set(shakespeare("train")))  # the vocabulary of CharTokenizer.train(shakespeare("train"))


value_exercise("04.uniform_loss", expected=lambda: math.log(_lesson_vocab_size()),
               hint="a model that knows nothing gives every token of the vocabulary (tokenizer.vocab_size of them) "
                    "the same probability. What is that probability, and what is the cross-entropy -log P(target) "
                    "then, whatever the target? Losses are in nats: the natural logarithm, math.log.")
