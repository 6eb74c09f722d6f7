"""Lesson 07: one step of greedy decoding, and the length-penalised score of a finished beam."""

import torch

from lmlab.exercises import function_exercise
from lmlab.models import GPT, GPTConfig


def _tiny_gpt(seed, vocab_size):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()


def _greedy_step_cases():
    g = torch.Generator().manual_seed(0)
    return [
        (_tiny_gpt(0, 11), torch.randint(0, 11, (1, 5), generator=g)),
        (_tiny_gpt(1, 11), torch.randint(0, 11, (2, 7), generator=g)),  # a batch: one token per row
        (_tiny_gpt(2, 23), torch.randint(0, 23, (3, 1), generator=g)),  # a prompt of one token
        (_tiny_gpt(3, 23), torch.randint(0, 23, (4, 12), generator=g)),
    ]


@function_exercise("07.greedy_step", cases=_greedy_step_cases,
                   hint="model(ids) gives logits (batch, seq, vocab), one row of scores per position; only the LAST "
                        "position predicts the next token, so take logits[:, -1] (batch, vocab) and its argmax over "
                        "the vocabulary (dim=-1). Return one token id per row: a LongTensor of shape (batch,).")
def _greedy_step(model, ids):
    with torch.no_grad():
        return model(ids)[:, -1].argmax(-1)


def _beam_score_cases():
    g = torch.Generator().manual_seed(0)
    hyp = torch.tensor([-0.5, -1.0, -0.25, -2.0])
    long_hyp = -torch.rand(30, generator=g) * 3
    return [(hyp, 1.0), (hyp, 0.0), (hyp, 2.0), (hyp, -1.0), (hyp, 0.5), (torch.tensor([-1.5]), 1.0),
            (long_hyp, 1.0), (long_hyp, 1.5)]


@function_exercise("07.beam_score", cases=_beam_score_cases,
                   hint="the score is the SUM of the hypothesis' token log-probs divided by its length (the number of "
                        "tokens, eos included: token_logprobs.numel()) raised to the power length_penalty. With "
                        "length_penalty = 0 it is the plain sum, with 1 the mean. Return a number (float).")
def _beam_score(token_logprobs, length_penalty):
    return float(token_logprobs.sum()) / token_logprobs.numel() ** length_penalty
