"""Lesson 07's exercises pass with their solutions and fail with the mistakes learners make."""

import math

import torch

from lmlab.exercises import check


def test_greedy_step_passes_with_the_reference():
    def greedy_step(model, ids):
        logits = model(ids)  # (batch, seq, vocab)
        return torch.argmax(logits[:, -1, :], dim=-1)

    assert check("07.greedy_step", greedy_step)


def test_greedy_step_fails_at_the_wrong_position_or_axis():
    wrong = {
        "first position": lambda model, ids: model(ids)[:, 0].argmax(-1),
        "argmax over positions": lambda model, ids: model(ids).argmax(1)[:, -1],
        "argmin": lambda model, ids: model(ids)[:, -1].argmin(-1),
    }
    for name, fn in wrong.items():
        assert not check("07.greedy_step", fn), name


def test_greedy_step_fails_for_a_batch_when_written_for_one_prompt():
    def one_prompt(model, ids):
        return model(ids)[0, -1].argmax(-1).view(1)  # right for batch 1, one token for the whole batch

    result = check("07.greedy_step", one_prompt)
    assert not result and "case 2 of" in repr(result)


def test_greedy_step_fails_when_the_sequence_is_returned_instead_of_the_token():
    def whole_sequence(model, ids):
        return torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)

    assert not check("07.greedy_step", whole_sequence)


def test_beam_score_passes_with_the_reference():
    def beam_score(token_logprobs, length_penalty):
        return token_logprobs.sum().item() / len(token_logprobs) ** length_penalty

    assert check("07.beam_score", beam_score)
    assert check("07.beam_score", lambda lp, a: lp.sum() / math.pow(lp.numel(), a))  # a 0-d tensor is fine too


def test_beam_score_fails_for_the_usual_mistakes():
    wrong = {
        "always the mean": lambda lp, a: lp.mean().item(),
        "multiplied": lambda lp, a: lp.sum().item() * len(lp) ** a,
        "eos not counted": lambda lp, a: lp.sum().item() / max(len(lp) - 1, 1) ** a,
        "penalty as a factor": lambda lp, a: lp.sum().item() / (a * len(lp)) if a else lp.sum().item(),
        "product of probabilities": lambda lp, a: lp.exp().prod().item() / len(lp) ** a,
    }
    for name, fn in wrong.items():
        assert not check("07.beam_score", fn), name
