"""Lesson 05's exercises pass with their solutions and fail with the mistakes learners make."""

import torch
import torch.nn.functional as F

from lmlab.exercises import check


def test_expected_counts_passes_with_the_reference():
    def expected_counts(n_tokens, n_special, select_rate, mask_rate, random_rate):
        n = (n_tokens - n_special) * select_rate
        return [n * mask_rate, n * random_rate, n - n * mask_rate - n * random_rate]

    assert check("05.expected_counts", expected_counts)


def test_expected_counts_fails_when_special_tokens_are_counted():
    def with_specials(n_tokens, n_special, select_rate, mask_rate, random_rate):
        n = n_tokens * select_rate
        return n * mask_rate, n * random_rate, n * (1 - mask_rate - random_rate)

    result = check("05.expected_counts", with_specials)
    assert not result and "case 2 of 5" in repr(result)


def test_expected_counts_fails_when_the_rates_are_taken_of_all_tokens():
    def unconditional(n_tokens, n_special, select_rate, mask_rate, random_rate):
        n = n_tokens - n_special
        return n * mask_rate, n * random_rate, n * (1 - mask_rate - random_rate)

    assert not check("05.expected_counts", unconditional)


def test_expected_counts_fails_when_80_10_10_is_hard_coded():
    def hard_coded(n_tokens, n_special, select_rate, mask_rate, random_rate):
        n = (n_tokens - n_special) * select_rate
        return n * 0.8, n * 0.1, n * 0.1

    result = check("05.expected_counts", hard_coded)
    assert not result and "case 4 of 5" in repr(result)


def test_masked_loss_passes_by_hand_and_with_ignore_index():
    def by_hand(logits, labels):
        chosen = labels != -100
        return F.cross_entropy(logits[chosen], labels[chosen])

    def with_ignore_index(logits, labels):
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()

    assert check("05.masked_loss", by_hand)
    assert check("05.masked_loss", with_ignore_index)


def test_masked_loss_fails_when_every_position_counts():
    def every_position(logits, labels):  # unselected positions scored as if their target were token 0
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp_min(0))

    assert not check("05.masked_loss", every_position)


def test_masked_loss_fails_for_a_mean_of_row_means():
    def row_means(logits, labels):
        losses = [F.cross_entropy(lg[lb != -100], lb[lb != -100]) for lg, lb in zip(logits, labels)]
        return torch.stack(losses).mean()

    assert not check("05.masked_loss", row_means)


def test_masked_loss_fails_for_a_sum():
    def total(logits, labels):
        chosen = labels != -100
        return F.cross_entropy(logits[chosen], labels[chosen], reduction="sum")

    assert not check("05.masked_loss", total)
