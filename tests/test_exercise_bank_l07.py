"""Lesson 07's exercises pass with their solutions and fail with the mistakes learners make."""

import math

import pytest
import torch

from lmlab import exercises
from lmlab.exercises import check


@pytest.fixture(autouse=True)
def first_hints():
    """Each test starts with no hint shown yet (a repeated failure shows the next level)."""
    exercises._SHOWN.clear()


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


def test_stubs_fail_cleanly_with_a_nudge_that_gives_no_code():
    def stub(*args):
        raise NotImplementedError("your code here")

    for name in ("07.greedy_step", "07.greedy_loop", "07.beam_step", "07.beam_score"):
        message = repr(check(name, stub))
        assert "NotImplementedError" in message and "hint 1 of 3" in message, name
        assert "return " not in message and "argmax(" not in message, name


# --- 07.greedy_loop: cropping the context ---------------------------------------------------------------------


def greedy_loop(model, ids, max_new_tokens):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = model(ids[:, -model.config.block_size :])[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    model.train(was_training)
    return ids


def test_greedy_loop_passes_with_the_reference_and_with_lmlab_greedy_without_cache():
    from lmlab.decoding import greedy

    assert check("07.greedy_loop", greedy_loop)
    assert check("07.greedy_loop", lambda m, ids, n: greedy(m, ids, n, use_cache=False))


def test_greedy_loop_fails_as_the_seed_wrote_it_and_for_the_usual_mistakes():
    def seed_greedy_decode(model, input_ids, max_length):  # never crops, leaves the model in eval mode
        model.eval()
        with torch.no_grad():
            for _ in range(max_length):
                next_token = model(input_ids)[:, -1, :].argmax(dim=-1, keepdim=True)
                input_ids = torch.cat([input_ids, next_token], dim=1)
        return input_ids

    result = check("07.greedy_loop", seed_greedy_decode)
    assert not result and "case 1 of 5" in repr(result) and "context" in repr(result)

    def cropped_but_left_in_eval(model, ids, max_new_tokens):
        out = greedy_loop(model, ids, max_new_tokens)
        model.eval()
        return out

    def dropout_on(model, ids, max_new_tokens):
        with torch.no_grad():
            for _ in range(max_new_tokens):
                ids = torch.cat([ids, model(ids[:, -model.config.block_size :])[:, -1].argmax(-1, keepdim=True)], 1)
        return ids

    def only_the_new_tokens(model, ids, max_new_tokens):
        return greedy_loop(model, ids, max_new_tokens)[:, ids.shape[1] :]

    def cropped_to_the_prompt_length(model, ids, max_new_tokens):  # a window that never slides
        n = min(ids.shape[1], model.config.block_size)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                ids = torch.cat([ids, model(ids[:, :n])[:, -1].argmax(-1, keepdim=True)], 1)
        return ids

    for wrong, words in {cropped_but_left_in_eval: "train mode afterwards", dropout_on: "dropout",
                         only_the_new_tokens: "shape", cropped_to_the_prompt_length: ""}.items():
        result = check("07.greedy_loop", wrong)
        assert not result and words in repr(result), wrong.__name__


# --- 07.beam_step ----------------------------------------------------------------------------------------------


def beam_step(scores, log_probs, k):
    batch, num_beams = scores.shape
    vocab = log_probs.shape[-1]
    top = (scores.view(-1, 1) + log_probs).view(batch, -1).topk(k, dim=-1)
    rows = top.indices // vocab + num_beams * torch.arange(batch)[:, None]
    return top.values, rows, top.indices % vocab


def test_beam_step_passes_with_the_reference_and_a_loop_over_prompts():
    assert check("07.beam_step", beam_step)

    def prompt_by_prompt(scores, log_probs, k):
        batch, num_beams = scores.shape
        out = [beam_step(scores[b : b + 1], log_probs[b * num_beams : (b + 1) * num_beams], k) for b in range(batch)]
        return (torch.cat([o[0] for o in out]), torch.cat([o[1] + b * num_beams for b, o in enumerate(out)]),
                torch.cat([o[2] for o in out]))

    assert check("07.beam_step", prompt_by_prompt)


def test_beam_step_fails_for_the_usual_mistakes():
    def over_the_whole_batch(scores, log_probs, k):  # prompts compete with each other
        batch, _ = scores.shape
        vocab = log_probs.shape[-1]
        top = (scores.view(-1, 1) + log_probs).view(-1).topk(k * batch)
        return top.values.view(batch, k), (top.indices // vocab).view(batch, k), (top.indices % vocab).view(batch, k)

    def beam_within_the_prompt(scores, log_probs, k):
        values, rows, tokens = beam_step(scores, log_probs, k)
        return values, rows % scores.shape[1], tokens

    def per_beam_top(scores, log_probs, k):  # each beam keeps its own best: not beam search
        values, tokens = (scores.view(-1, 1) + log_probs).topk(1, dim=-1)
        batch, num_beams = scores.shape
        values = values.view(batch, num_beams)
        rows = torch.arange(batch * num_beams).view(batch, num_beams)
        return values[:, :k], rows[:, :k], tokens.view(batch, num_beams)[:, :k]

    def log_probs_only(scores, log_probs, k):  # forgets the beams' scores so far
        return beam_step(torch.zeros_like(scores), log_probs, k)

    for wrong in (over_the_whole_batch, beam_within_the_prompt, per_beam_top, log_probs_only):
        assert not check("07.beam_step", wrong), wrong.__name__
