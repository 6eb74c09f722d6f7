"""Lesson 04: the inputs and targets of a causal LM, its loss by hand, and the loss of a model that knows nothing."""

import functools
import math

import torch
import torch.nn.functional as F

from lmlab.exercises import Case, function_exercise, value_exercise


def _targets_cases():
    return [
        Case(([[5, 6, 7, 8]], 0), "one sequence, nothing to pad"),
        Case(([[4, 9, 2, 7, 3], [4, 8, 3], [6, 1]], 0), "three lines of different lengths, padded at the end"),
        Case(([[1, 2, 3], [3, 2, 1, 2, 3, 1]], 9), "the padding id need not be 0"),
        Case(([[11, 0, 5, 0], [7, 3]], 0),
             "a real token whose id is the padding id (as when GPT-2's end-of-text token pads): it stays a target"),
        Case(([[1, 2]], 0), "one sequence of 2 tokens: one input, one target"),
        Case(([[3, 4, 5], [8]], 0), "a line of a single token has nothing to predict: all its targets are -100"),
    ]


@function_exercise("04.clm_targets", cases=_targets_cases, hints=(
    "Three steps: make the lines one rectangular batch, then shift it by one into inputs and targets, then "
    "make sure that no target asks for a padding position. Which positions were padding: those that hold the "
    "padding id, or those that you added?",
    "Pad every line at the end to the longest length and keep, for each position, whether it is a real token "
    "(from the lengths, not from the ids). inputs = padded[:, :-1], targets = padded[:, 1:] with -100 wherever "
    "the target position was added padding. Return two LongTensors.",
    "n = max(map(len, sequences)); padded = torch.tensor([s + [pad_id] * (n - len(s)) for s in sequences]); "
    "real = torch.tensor([[i < len(s) for i in range(n)] for s in sequences]); "
    "return padded[:, :-1], padded[:, 1:].masked_fill(~real[:, 1:], -100)",
))
def _clm_targets(sequences, pad_id):
    longest = max(len(s) for s in sequences)
    padded = torch.tensor([list(s) + [pad_id] * (longest - len(s)) for s in sequences])
    real = torch.arange(longest) < torch.tensor([len(s) for s in sequences])[:, None]  # from the lengths, not the ids
    return padded[:, :-1], padded[:, 1:].masked_fill(~real[:, 1:], -100)


def _loss_cases():
    g = torch.Generator().manual_seed(0)
    some_ignored = torch.randint(0, 6, (3, 5), generator=g)
    some_ignored[1, 2:] = -100  # a shorter line: its last three positions are padding
    some_ignored[2, 4] = -100
    all_ignored = torch.randint(0, 7, (2, 4), generator=g)
    all_ignored[1] = -100  # a line with nothing to predict
    return [
        Case((torch.randn(1, 4, 5, generator=g), torch.tensor([[0, 3, 1, 4]])), "one sequence, every target real"),
        Case((torch.randn(3, 5, 6, generator=g), some_ignored),
             "a batch whose rows have 5, 2 and 4 real targets: the mean is over the 11 real targets"),
        Case((torch.randn(2, 4, 7, generator=g) * 300, all_ignored),
             "logits in the hundreds (exp() of them overflows), and a row whose targets are all -100"),
    ]


@function_exercise("04.clm_loss", cases=_loss_cases, rtol=1e-4, atol=1e-5, hints=(
    "The loss is an average of -log P(target) over the positions that have a target. How do you get a "
    "log-probability from logits without exp() overflowing, and which positions count?",
    "log_softmax over the vocabulary (the last axis) gives log-probabilities; pick, at each position, the one "
    "of its target (torch.gather, or indexing); keep only positions whose target is not -100 (they cannot be "
    "used as an index: replace them first, then drop them); average over all kept positions of the batch.",
    "keep = targets != -100; logp = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]; "
    "return -logp[keep].mean()",
))
def _clm_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


@functools.lru_cache(maxsize=1)
def _lesson_vocab_size() -> int:
    from lmlab.corpus import shakespeare

    return len(set(shakespeare("train")))  # the vocabulary of CharTokenizer.train(shakespeare("train"))


value_exercise("04.uniform_loss", expected=lambda: math.log(_lesson_vocab_size()), hints=(
    "A model that knows nothing gives every token of the vocabulary the same probability. What is that "
    "probability, whatever the target?",
    "With V = tokenizer.vocab_size tokens, P(target) = 1 / V at every position; the cross-entropy is "
    "-log P(target), in nats (the natural logarithm).",
    "uniform_loss = math.log(tokenizer.vocab_size)",
))
