"""Lesson 04's exercises pass with their solutions and fail with the mistakes learners make."""

import math

from lmlab.corpus import shakespeare
from lmlab.exercises import check
from lmlab.tokenizers import CharTokenizer


def test_clm_targets_passes_with_the_reference():
    def clm_targets(ids, pad_id):
        targets = ids[:, 1:].clone()
        targets[targets == pad_id] = -100
        return ids[:, :-1], targets

    assert check("04.clm_targets", clm_targets)


def test_clm_targets_fails_without_the_shift():
    def unshifted(ids, pad_id):  # every position would be asked for the token it already reads
        return ids, ids.masked_fill(ids == pad_id, -100)

    assert not check("04.clm_targets", unshifted)


def test_clm_targets_fails_when_shifted_the_wrong_way():
    def backwards(ids, pad_id):  # predicts the previous token
        return ids[:, 1:], ids[:, :-1].masked_fill(ids[:, :-1] == pad_id, -100)

    result = check("04.clm_targets", backwards)
    assert not result and "case 1 of" in repr(result)


def test_clm_targets_fails_when_padding_is_kept_as_a_target():
    def padding_kept(ids, pad_id):
        return ids[:, :-1], ids[:, 1:]

    result = check("04.clm_targets", padding_kept)
    assert not result and "case 3 of" in repr(result)


def test_clm_targets_fails_when_the_padding_id_is_assumed_to_be_0():
    def pad_is_zero(ids, pad_id):
        return ids[:, :-1], ids[:, 1:].masked_fill(ids[:, 1:] == 0, -100)

    result = check("04.clm_targets", pad_is_zero)
    assert not result and "case 4 of" in repr(result)


def test_uniform_loss_is_the_log_of_the_lesson_vocabulary():
    tokenizer = CharTokenizer.train(shakespeare("train"))
    assert check("04.uniform_loss", math.log(tokenizer.vocab_size))


def test_uniform_loss_fails_for_the_usual_mistakes():
    v = CharTokenizer.train(shakespeare("train")).vocab_size
    for wrong in (1 / v, math.log2(v), -math.log(v), float(v), None):
        assert not check("04.uniform_loss", wrong), wrong
