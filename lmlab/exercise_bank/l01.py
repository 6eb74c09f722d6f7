"""Lesson 01: the chain rule in log space, and a bigram probability counted by hand."""

import torch

from lmlab.exercises import function_exercise
from lmlab.models import GPT, GPTConfig
from lmlab.probability import NGramModel


class _SmallGPT(GPT):
    def __repr__(self):  # one line in the checker's messages, instead of the whole module tree
        return f"<small GPT, vocab_size={self.config.vocab_size}>"


class _Bigram(NGramModel):
    def __repr__(self):
        return f"<bigram model, vocab_size={self.vocab_size}>"


def _tiny_gpt(vocab_size: int = 5):
    """A small random GPT: its conditionals are far from uniform and differ from position to position."""
    with torch.random.fork_rng():  # leave the learner's random state alone
        torch.manual_seed(0)
        model = _SmallGPT(GPTConfig(vocab_size=vocab_size, block_size=512, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        model.tok_emb.weight.mul_(5)  # sharper conditionals than the near-uniform ones of a fresh model
    return model.eval()


def _logprob_cases():
    g = torch.Generator().manual_seed(1)
    gpt = _tiny_gpt()
    bigram = _Bigram(5, n=2, k=0.5).fit(torch.randint(0, 5, (4, 50), generator=g))
    return [
        (gpt, torch.tensor([[0, 1, 2, 3, 4, 0]])),
        (gpt, torch.randint(0, 5, (3, 7), generator=g)),
        # 500 conditionals of about 1/6 each: their product, about 1e-390, is 0 even in float64
        (gpt, torch.randint(0, 5, (2, 500), generator=g)),
        (bigram, torch.randint(0, 5, (2, 9), generator=g)),
    ]


@function_exercise("01.sequence_logprob", cases=_logprob_cases, rtol=1e-4, atol=1e-4,
                   hint="logits = model(input_ids) scores the NEXT token: log_softmax(logits, dim=-1)[:, t] holds "
                        "log P(. | w_0..w_t), so pick the entries of the tokens input_ids[:, 1:] from "
                        "logprobs[:, :-1] (torch.gather on the last dim) and sum them over the sequence, one "
                        "number per row; never multiply the probabilities, their product underflows to 0.")
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
        ([0, 1, 2, 1, 2, 0, 1], 1, 2, 0.0, 3),
        ([0, 1, 2, 1, 2, 0, 1], 1, 0, 1.0, 3),
        # the last 1 is followed by nothing: it is not a context, so P(. | 1) counts 1 pair, not 2
        ([0, 1, 2, 1], 1, 2, 0.0, 3),
        ([0, 1, 2, 1], 1, 2, 0.5, 4),
        ([3, 3, 0], 2, 1, 1.0, 4),  # a context never seen: add-k alone makes it uniform
        (ids, t, o, 0.0, tok.vocab_size),
        (ids, o, space, 0.1, tok.vocab_size),
        (ids, e, t, 1.0, tok.vocab_size),
    ]


@function_exercise("01.bigram_prob", cases=_bigram_cases,
                   hint="count the pairs: c_ab = how often b comes right after a in ids, and c_a = how many pairs "
                        "start with a (a as the LAST token of ids starts no pair); then "
                        "P(b | a) = (c_ab + k) / (c_a + k * vocab_size).")
def _bigram_prob(ids, prev, nxt, k, vocab_size):
    pairs = list(zip(ids[:-1], ids[1:]))
    after = sum(1 for a, _ in pairs if a == prev)
    both = sum(1 for a, b in pairs if a == prev and b == nxt)
    return (both + k) / (after + k * vocab_size)
