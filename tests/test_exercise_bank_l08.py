"""Lesson 08's exercises pass with their solutions and fail with the mistakes learners make."""

import torch.nn.functional as F

from lmlab.exercises import check


def test_temperature_probs_passes_with_a_one_hot_at_zero():
    def temperature_probs(logits, temperature):
        if temperature == 0:
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        return (logits / temperature).softmax(-1)

    assert check("08.temperature_probs", temperature_probs)


def test_temperature_probs_fails_with_a_plain_division_at_zero():
    def divides_by_zero(logits, temperature):  # NaN at T = 0
        return (logits / temperature).softmax(-1)

    result = check("08.temperature_probs", divides_by_zero)
    assert not result and "case 4 of" in repr(result)


def test_temperature_probs_fails_when_multiplying_or_when_returning_logits():
    assert not check("08.temperature_probs", lambda logits, t: (logits * t).softmax(-1) if t else F.one_hot(
        logits.argmax(-1), logits.shape[-1]).float())
    assert not check("08.temperature_probs", lambda logits, t: logits / max(t, 1e-9))


def test_temperature_probs_fails_with_the_argmax_index_at_zero():
    def index_not_distribution(logits, temperature):
        return logits.argmax(-1) if temperature == 0 else (logits / temperature).softmax(-1)

    assert not check("08.temperature_probs", index_not_distribution)


def straightforward_top_p(logits, p):
    probs = logits.softmax(-1)
    sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
    remove = sorted_probs.cumsum(-1) - sorted_probs >= p
    return logits.masked_fill(remove.scatter(-1, sorted_indices, remove), float("-inf"))


def test_top_p_rows_passes_with_a_straightforward_row_wise_filter():
    assert check("08.top_p_rows", straightforward_top_p)


def test_top_p_rows_fails_with_the_batch_indexing_bug_on_the_first_batch_of_two():
    def flattened_indices(logits, p):
        probs = logits.softmax(-1)
        sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
        mask = sorted_probs.cumsum(-1) - sorted_probs >= p
        out = logits.clone()
        out[:, sorted_indices[mask]] = float("-inf")
        return out

    result = check("08.top_p_rows", flattened_indices)
    assert not result and "case 2 of" in repr(result)


def test_top_p_rows_fails_without_mapping_the_mask_back_to_token_order():
    def mask_left_in_rank_order(logits, p):
        sorted_probs, _ = logits.softmax(-1).sort(dim=-1, descending=True)
        return logits.masked_fill(sorted_probs.cumsum(-1) - sorted_probs >= p, float("-inf"))

    assert not check("08.top_p_rows", mask_left_in_rank_order)


def test_top_p_rows_fails_when_the_token_that_crosses_p_is_dropped():
    def one_token_short(logits, p):  # keeps the tokens with cumulative mass <= p, then at least one
        probs = logits.softmax(-1)
        sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
        remove = sorted_probs.cumsum(-1) > p
        remove[:, 0] = False
        return logits.masked_fill(remove.scatter(-1, sorted_indices, remove), float("-inf"))

    assert not check("08.top_p_rows", one_token_short)


def test_top_p_rows_fails_when_removed_tokens_get_the_logit_0_instead_of_minus_inf():
    def zeroed(logits, p):  # logit 0 is not probability 0: the removed tokens could still be drawn
        out = straightforward_top_p(logits, p)
        return out.masked_fill(out.isinf(), 0.0)

    assert not check("08.top_p_rows", zeroed)


def test_the_unanswered_starter_fails_with_a_hint():
    def temperature_probs(logits, temperature):
        raise NotImplementedError("your code here")

    result = check("08.temperature_probs", temperature_probs)
    assert not result and "NotImplementedError" in repr(result) and "Hint:" in repr(result)
