"""Lesson 09: distinct-n, the model's log-probability per token of a continuation, and the strategies that no
other beats on both quality and diversity."""

import torch

from lmlab.exercises import Case, function_exercise
from lmlab.metrics import distinct_n
from lmlab.models import GPT, GPTConfig
from lmlab.probability import token_logprobs


@function_exercise("09.distinct_n",
                   cases=[("to be or not to be", 2), ("to be or not to be", 3), ("abab", 2), ("aaaa", 1),
                          ([3, 1, 3, 1, 3, 1], 2), ("abc", 3), Case(("abc", 5), "shorter than n: no n-grams"),
                          Case(("", 1), "an empty sequence")],
                   hints=("Two counts: how many n-grams the sequence has, and how many different ones. Mind the "
                          "sequence that has none.",
                          "The n-grams are the len(tokens) - n + 1 slices tokens[i:i+n]; make each a tuple so that a "
                          "set can hold it (a list cannot be put in a set, a str slice can). distinct-n is the size "
                          "of the set over the number of slices, and 0.0 when there are no slices.",
                          "grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]; return "
                          "len(set(grams)) / len(grams) if grams else 0.0."))
def _distinct_n(tokens, n):
    return distinct_n(tokens, n)


def _continuation_cases():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = torch.randint(0, 13, (3, 10), generator=g)
    return [(model, ids, 4), (model, ids, 1), (model, ids, 9), Case((model, ids[:1, :6], 2), "one row")]


@function_exercise("09.continuation_logprob", cases=_continuation_cases, rtol=1e-4, atol=1e-5,
                   hints=("token_logprobs scores every token but the first; you want the scores of the tokens after "
                          "the prompt only, averaged row by row. Which column scores which token?",
                          "token_logprobs(model, ids) is (batch, seq - 1) and its column t scores token t + 1. The "
                          "continuation starts at token prompt_len, so its scores start at column prompt_len - 1. "
                          "Average over the tokens of each row: one value per row, (batch,).",
                          "return token_logprobs(model, ids)[:, prompt_len - 1:].mean(dim=1)"))
def _continuation_logprob(model, ids, prompt_len):
    return token_logprobs(model, ids)[:, prompt_len - 1 :].mean(1)


# --- the trade-off front ---------------------------------------------------------------------------------------


def _front_cases():
    # lesson 09's SmolLM2 table: (log P / token, distinct-3 across a prompt's samples)
    measured = {"greedy": (-0.92, 0.49), "beam 4": (-0.74, 0.45), "T 1.0": (-2.74, 1.00), "T 0.7": (-1.46, 0.95),
                "top-k 50": (-2.01, 0.97), "top-p 0.9": (-2.10, 0.98), "min-p 0.1": (-1.30, 0.95)}
    return [
        Case((measured,), "points like the lesson's"),
        Case(({"a": (-1.0, 0.5), "b": (-1.0, 0.4), "c": (-2.0, 0.5)},),
             "b and c each tie a on one axis and lose on the other: both dominated"),
        Case(({"a": (-1.0, 0.5), "b": (-1.0, 0.5)},), "two identical points: neither beats the other"),
        Case(({"only": (-3.0, 0.1)},), "a single strategy"),
        Case(({"x": (-0.5, 0.9), "y": (-0.6, 0.95), "z": (-0.7, 0.99), "w": (-0.8, 0.1)},), "w is below all three"),
    ]


@function_exercise("09.trade_off_front", cases=_front_cases,
                   hints=("A strategy is on the front when no other strategy is at least as good on both axes and "
                          "strictly better on one. Compare every pair.",
                          "Strategy b dominates a when logP_b >= logP_a and div_b >= div_a, with at least one of the "
                          "two strictly greater; ties on both axes dominate nothing. Keep the names that no other "
                          "name dominates, and return them as a set.",
                          "def dominates(b, a): return b[0] >= a[0] and b[1] >= a[1] and b != a; return {name for "
                          "name, point in points.items() if not any(dominates(other, point) for other in "
                          "points.values())}"))
def _trade_off_front(points):
    """points: {name: (log P per token, diversity)} -> the set of names that no other point dominates."""
    def dominates(b, a):
        return b[0] >= a[0] and b[1] >= a[1] and (b[0] > a[0] or b[1] > a[1])
    return {name for name, point in points.items() if not any(dominates(other, point) for other in points.values())}
