"""Lesson 09: distinct-n, and the model's log-probability per token of a continuation."""

import torch

from lmlab.exercises import function_exercise
from lmlab.metrics import distinct_n
from lmlab.models import GPT, GPTConfig
from lmlab.probability import token_logprobs


@function_exercise("09.distinct_n",
                   cases=[("to be or not to be", 2), ("to be or not to be", 3), ("abab", 2), ("aaaa", 1),
                          ([3, 1, 3, 1, 3, 1], 2), ("abc", 3), ("abc", 5), ("", 1)],
                   hint="the n-grams of a sequence are its len(tokens) - n + 1 slices tokens[i:i+n] (make each a "
                        "tuple, so that a set can hold it); distinct-n is len(set(ngrams)) / len(ngrams). A sequence "
                        "shorter than n has no n-grams at all: return 0.0 for it rather than dividing by zero.")
def _distinct_n(tokens, n):
    return distinct_n(tokens, n)


def _continuation_cases():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = torch.randint(0, 13, (3, 10), generator=g)
    return [(model, ids, 4), (model, ids, 1), (model, ids, 9), (model, ids[:1, :6], 2)]


@function_exercise("09.continuation_logprob", cases=_continuation_cases, rtol=1e-4, atol=1e-5,
                   hint="lmlab.probability.token_logprobs(model, ids) gives (batch, seq - 1): its column t scores token "
                        "t + 1. The continuation is the tokens at positions prompt_len, prompt_len + 1, ..., so its "
                        "scores start at column prompt_len - 1. Average them over the tokens of each row: (batch,).")
def _continuation_logprob(model, ids, prompt_len):
    return token_logprobs(model, ids)[:, prompt_len - 1 :].mean(1)
