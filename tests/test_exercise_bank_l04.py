"""Lesson 04's exercises pass with their solutions and fail, with a useful message, with the usual mistakes."""

import math

import torch

from lmlab.corpus import shakespeare
from lmlab.exercises import check, names
from lmlab.tokenizers import CharTokenizer


def stub(*args):
    raise NotImplementedError("your code here")


def test_lesson_04_has_its_exercises():
    assert names("04.") == ["04.clm_loss", "04.clm_targets", "04.uniform_loss"]


def test_every_stub_fails_cleanly_with_the_nudge_only():
    for name in ("04.clm_targets", "04.clm_loss"):
        message = repr(check(name, stub))
        assert "case 1 of" in message and "NotImplementedError: your code here" in message, name
        assert "hint 1 of 3" in message and "return" not in message.split("Hint")[1], name
    message = repr(check("04.uniform_loss", None))
    assert "got NoneType" in message and "hint 1 of 3" in message and "math.log" not in message


def targets_by_hand(sequences, pad_id, mask_from="lengths", shift=1):
    n = max(len(s) for s in sequences)
    padded = torch.tensor([s + [pad_id] * (n - len(s)) for s in sequences])
    if mask_from == "lengths":
        real = torch.tensor([[i < len(s) for i in range(n)] for s in sequences])
    elif mask_from == "ids":  # the classic bug: every token equal to the padding id is taken for padding
        real = padded != pad_id
    else:
        real = torch.ones_like(padded, dtype=torch.bool)
    if shift == 1:
        return padded[:, :-1], padded[:, 1:].masked_fill(~real[:, 1:], -100)
    return padded[:, 1:], padded[:, :-1].masked_fill(~real[:, :-1], -100)  # predicts the previous token


def test_clm_targets_passes_written_out():
    assert check("04.clm_targets", targets_by_hand)


def test_clm_targets_fails_when_the_mask_is_read_from_the_ids():
    result = check("04.clm_targets", lambda s, p: targets_by_hand(s, p, mask_from="ids"))
    assert not result and "case 4 of 6" in repr(result) and "GPT-2's end-of-text" in repr(result)


def test_clm_targets_fails_when_padding_is_kept_as_a_target():
    result = check("04.clm_targets", lambda s, p: targets_by_hand(s, p, mask_from="nothing"))
    assert not result and "case 2 of 6" in repr(result)


def test_clm_targets_fails_when_shifted_the_wrong_way_or_not_at_all():
    result = check("04.clm_targets", lambda s, p: targets_by_hand(s, p, shift=-1))
    assert not result and "case 1 of 6" in repr(result)

    def unshifted(sequences, pad_id):
        n = max(len(s) for s in sequences)
        padded = torch.tensor([s + [pad_id] * (n - len(s)) for s in sequences])
        return padded, padded

    result = check("04.clm_targets", unshifted)
    assert not result and "expected shape" in repr(result)


def test_clm_targets_fails_when_it_pads_the_given_lists_in_place():
    def in_place(sequences, pad_id):
        n = max(len(s) for s in sequences)
        lengths = [len(s) for s in sequences]
        for s in sequences:
            s.extend([pad_id] * (n - len(s)))
        padded = torch.tensor(sequences)
        real = torch.arange(n) < torch.tensor(lengths)[:, None]
        return padded[:, :-1], padded[:, 1:].masked_fill(~real[:, 1:], -100)

    result = check("04.clm_targets", in_place)
    assert not result and "in place" in repr(result)


def loss_by_hand(logits, targets, per_row=False, stable=True):
    keep = targets != -100
    if stable:
        logp = logits.log_softmax(-1)
    else:
        e = logits.exp()
        logp = (e / e.sum(-1, keepdim=True)).log()
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    if per_row:
        rows = [-picked[r][keep[r]].mean() for r in range(len(targets)) if keep[r].any()]
        return torch.stack(rows).mean()
    return -picked[keep].mean()


def test_clm_loss_passes_written_out():
    assert check("04.clm_loss", loss_by_hand)


def test_clm_loss_fails_as_a_mean_of_row_means():
    result = check("04.clm_loss", lambda lg, t: loss_by_hand(lg, t, per_row=True))
    assert not result and "case 2 of 3" in repr(result) and "11 real targets" in repr(result)


def test_clm_loss_fails_when_exp_overflows():
    result = check("04.clm_loss", lambda lg, t: loss_by_hand(lg, t, stable=False))
    assert not result and "case 3 of 3" in repr(result) and "overflows" in repr(result)


def test_clm_loss_fails_when_the_ignored_targets_are_indexed():
    def gather_all(logits, targets):
        return -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()

    result = check("04.clm_loss", gather_all)
    assert not result and "case 2 of 3" in repr(result) and "raised RuntimeError" in repr(result)


def test_clm_loss_fails_without_the_minus_sign_or_as_a_sum():
    assert not check("04.clm_loss", lambda lg, t: -loss_by_hand(lg, t))
    result = check("04.clm_loss", lambda lg, t: loss_by_hand(lg, t) * (t != -100).sum())
    assert not result and "case 1 of 3" in repr(result)


def test_uniform_loss_is_the_log_of_the_lesson_vocabulary():
    tokenizer = CharTokenizer.train(shakespeare("train"))
    assert check("04.uniform_loss", math.log(tokenizer.vocab_size))


def test_uniform_loss_fails_for_the_usual_mistakes_without_saying_which_way():
    v = CharTokenizer.train(shakespeare("train")).vocab_size
    for wrong in (1 / v, math.log2(v), -math.log(v), float(v)):
        message = repr(check("04.uniform_loss", wrong))
        assert message.startswith("❌") and "high" not in message and "low" not in message, wrong
    assert not check("04.uniform_loss", None)
