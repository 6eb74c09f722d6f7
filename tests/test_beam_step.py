"""`decoding.beam_step`: one step of beam search, the one `beam_search` itself takes (lesson 07's exercise)."""

import itertools

import pytest
import torch

from lmlab import decoding
from lmlab.decoding import beam_step
from lmlab.models import GPT, GPTConfig


def brute_force(scores, log_probs, k):
    """Every (beam, token) of each prompt scored one by one, sorted: what a beam step must return."""
    batch, num_beams = scores.shape
    vocab = log_probs.shape[1]
    out = []
    for b in range(batch):
        cands = [(float(scores[b, j] + log_probs[b * num_beams + j, t]), b * num_beams + j, t)
                 for j, t in itertools.product(range(num_beams), range(vocab))]
        out.append(sorted(cands, key=lambda c: -c[0])[:k])
    return (torch.tensor([[c[0] for c in row] for row in out]), torch.tensor([[c[1] for c in row] for row in out]),
            torch.tensor([[c[2] for c in row] for row in out]))


def test_beam_step_keeps_the_k_best_extensions_of_each_prompt_separately():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([[-0.5, -1.0, -4.0], [-10.0, -10.2, -10.1]])  # prompts on very different scales
    log_probs = torch.randn(6, 7, generator=g).log_softmax(-1)
    got = beam_step(scores, log_probs, 4)
    expected = brute_force(scores, log_probs, 4)
    assert torch.allclose(got[0], expected[0]) and torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    assert got[1][1].min() >= 3  # prompt 1's candidates extend prompt 1's beams only, in global row numbers


def test_beam_step_on_a_batch_equals_each_prompt_alone():
    g = torch.Generator().manual_seed(1)
    scores = -torch.rand(3, 4, generator=g) * 5
    log_probs = torch.randn(12, 9, generator=g).log_softmax(-1)
    batched = beam_step(scores, log_probs, 8)
    for b in range(3):
        alone = beam_step(scores[b : b + 1], log_probs[4 * b : 4 * b + 4], 8)
        assert torch.equal(batched[0][b], alone[0][0]) and torch.equal(batched[2][b], alone[2][0])
        assert torch.equal(batched[1][b], alone[1][0] + 4 * b)


def test_dead_beams_are_never_extended_while_live_candidates_remain():
    scores = torch.tensor([[0.0, float("-inf"), float("-inf")]])  # the first step: one live beam
    log_probs = torch.randn(3, 5).log_softmax(-1)
    _, rows, _ = beam_step(scores, log_probs, 5)
    assert rows.eq(0).all()


def test_beam_search_takes_its_steps_with_beam_step(monkeypatch):
    calls = []
    real = decoding._beam_step

    def spy(scores, log_probs, k):
        calls.append((tuple(scores.shape), k))
        return real(scores, log_probs, k)

    monkeypatch.setattr(decoding, "_beam_step", spy)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    decoding.beam_search(model, torch.randint(11, (2, 3)), num_beams=3, max_new_tokens=4)
    assert calls == [((2, 3), 6)] * 4


@pytest.mark.parametrize("args, words", [
    ((torch.zeros(2), torch.zeros(2, 5), 1), "scores must be a non-empty float tensor"),
    ((torch.zeros(1, 2), torch.zeros(3, 5), 1), "one row per beam"),
    ((torch.zeros(1, 2), torch.zeros(2, 5, dtype=torch.long), 1), "log_probs must be a non-empty float tensor"),
    ((torch.zeros(1, 2), torch.full((2, 5), float("nan")), 1), "must not hold NaN"),
    ((torch.zeros(1, 2), torch.zeros(2, 5), 11), "at most num_beams * vocab = 10"),
    ((torch.zeros(1, 2), torch.zeros(2, 5), 0), "k must be a positive integer"),
])
def test_bad_arguments_are_one_clear_sentence(args, words):
    with pytest.raises(ValueError, match=words.replace("*", r"\*")):
        beam_step(*args)
