"""Lesson 01: the chain rule in log space, perplexity, and a bigram probability counted by hand."""

import math

import torch

from lmlab.exercises import Case, function_exercise
from lmlab.models import GPT, GPTConfig
from lmlab.probability import NGramModel


class _Bigram(NGramModel):
    def __repr__(self):
        return f"<bigram model, vocab_size={self.vocab_size}>"


def _tiny_gpt(vocab_size: int = 5):
    """A small random GPT: its conditionals are far from uniform and differ from position to position."""
    with torch.random.fork_rng():  # leave the learner's random state alone
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=512, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        model.tok_emb.weight.mul_(5)  # sharper conditionals than the near-uniform ones of a fresh model
    return model.eval()


def _logprob_cases():
    g = torch.Generator().manual_seed(1)
    gpt = _tiny_gpt()
    bigram = _Bigram(5, n=2, k=0.5).fit(torch.randint(0, 5, (4, 50), generator=g))
    return [
        Case((gpt, torch.tensor([[0, 1, 2, 3, 4, 0]])), "one sequence of 6 tokens: 5 conditionals"),
        Case((gpt, torch.randint(0, 5, (3, 7), generator=g)), "a batch of 3 different sequences: one sum per row"),
        Case((gpt, torch.randint(0, 5, (2, 500), generator=g)),
             "rows of 500 tokens: the product of their probabilities, about 1e-390, is 0 even in float64"),
        Case((bigram, torch.randint(0, 5, (2, 9), generator=g)), "a bigram model instead of a transformer"),
    ]


@function_exercise("01.sequence_logprob", cases=_logprob_cases, rtol=1e-4, atol=1e-4, hints=(
    "Which position of the logits scores token t? The first token is the condition and gets no factor; and "
    "the sum of logs must never pass through a product of probabilities.",
    "log_softmax(model(input_ids), dim=-1) at position t holds log P(. | tokens 0..t): the log-probability of "
    "token t + 1 is its entry there. Pick those entries for t = 0 .. seq - 2 (torch.gather on the last dim) "
    "and sum each row.",
    "logp = torch.log_softmax(model(input_ids), dim=-1); "
    "return logp[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1).sum(dim=1)",
))
def _sequence_logprob(model, input_ids):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids).float(), dim=-1)
    return logp[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1).sum(dim=1)


def _bigram_cases():
    from lmlab.tokenizers import CharTokenizer

    line = "to be, or not to be, that is the question"
    tok = CharTokenizer.train(line)
    ids = tok.encode(line)
    o, space, t, e = (tok.token_to_id(c) for c in ["o", " ", "t", "e"])
    return [
        Case(([0, 1, 2, 1, 2, 0, 1], 1, 2, 0.0, 3), "no smoothing (k = 0)"),
        Case(([0, 1, 2, 1, 2, 0, 1], 1, 0, 1.0, 3), "a pair never seen, with k = 1"),
        Case(([0, 1, 2, 1], 1, 2, 0.0, 3),
             "the last 1 is followed by nothing: it starts no pair, so only 1 pair starts with 1, not 2"),
        Case(([0, 1, 2, 1], 1, 2, 0.5, 4), "k = 0.5 and a vocabulary larger than the ids used"),
        Case(([3, 3, 0], 2, 1, 1.0, 4), "a context never seen: add-k alone makes P(. | 2) uniform"),
        Case((ids, t, o, 0.0, tok.vocab_size), "a line of Hamlet, characters as ids"),
        Case((ids, o, space, 0.1, tok.vocab_size), "a line of Hamlet, k = 0.1"),
        Case((ids, e, t, 1.0, tok.vocab_size), "a line of Hamlet, k = 1"),
    ]


@function_exercise("01.bigram_prob", cases=_bigram_cases, hints=(
    "Two counts make the estimate: how often nxt comes right after prev, and how many pairs start with prev. "
    "A token at the very end of ids is followed by nothing: it starts no pair.",
    "Walk over the pairs of neighbours zip(ids[:-1], ids[1:]); count c_ab (pairs (prev, nxt)) and c_a (pairs "
    "whose first token is prev). Add-k adds k to every one of the vocab_size possible next tokens.",
    "P = (c_ab + k) / (c_a + k * vocab_size), with c_ab = sum(1 for a, b in zip(ids, ids[1:]) if (a, b) == "
    "(prev, nxt)) and c_a = sum(1 for a in ids[:-1] if a == prev)",
))
def _bigram_prob(ids, prev, nxt, k, vocab_size):
    pairs = list(zip(ids[:-1], ids[1:]))
    after = sum(1 for a, _ in pairs if a == prev)
    both = sum(1 for a, b in pairs if a == prev and b == nxt)
    return (both + k) / (after + k * vocab_size)


def _perplexity_cases():
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    junk = torch.full((2, 6), -50.0)  # what a padded position holds is junk: it must not count
    return [
        Case((torch.log(torch.full((1, 4), 0.25)), torch.ones(1, 4, dtype=torch.bool)),
             "every token had probability 1/4: the perplexity is exactly 4"),
        Case((-torch.rand(3, 5, generator=g) * 3, torch.ones(3, 5, dtype=torch.bool)),
             "a batch of 3 rows: pooled over all 15 tokens, not one perplexity per row"),
        Case((torch.where(lengths, -torch.rand(2, 6, generator=g) * 4, junk), lengths),
             "rows of 6 and 2 real tokens, the rest padding: every real token counts once, padding not at all"),
        Case((-torch.rand(2, 2000, generator=g) * 2 - 1.0, torch.ones(2, 2000, dtype=torch.bool)),
             "2 rows of 2,000 tokens: the product of their probabilities is 0 even in float64"),
    ]


@function_exercise("01.perplexity", cases=_perplexity_cases, rtol=1e-4, hints=(
    "Perplexity is exp of an average: the average of what, over which tokens? Rows of different lengths "
    "each count by their number of real tokens.",
    "Average the negative log-probabilities over all positions where mask is True, all rows together (not "
    "per row, then averaged), then take exp. Stay in log space: never multiply the probabilities.",
    "return math.exp(-logprobs[mask].mean().item())",
))
def _perplexity(logprobs, mask):
    return math.exp(-logprobs[mask].mean().item())
