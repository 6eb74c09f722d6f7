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


def test_expected_counts_and_masked_loss_stubs_fail_with_a_nudge_that_gives_no_code():
    def stub(*args):
        raise NotImplementedError("your code here")

    for name in ("05.expected_counts", "05.masked_loss"):
        message = repr(check(name, stub))
        assert "NotImplementedError" in message and "hint 1 of 3" in message
        assert "F.cross_entropy(" not in message and "return (" not in message


# --- 05.mask_tokens: the seed's masking routine, fixed -------------------------------------------------------

SPECIAL = [0, 1, 2, 3]  # the exercise's [PAD], [UNK], [CLS], [SEP]; 4 is [MASK]


def mask_tokens(ids, mask_token_id, vocab_size, special_ids, generator):
    never = torch.tensor(special_ids + [mask_token_id])
    selected = (torch.rand(ids.shape, generator=generator) < 0.15) & ~torch.isin(ids, never)
    kind = torch.rand(ids.shape, generator=generator)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in never.tolist()])
    random_ids = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator)]
    masked = ids.clone()
    masked[selected & (kind < 0.8)] = mask_token_id
    to_random = selected & (kind >= 0.8) & (kind < 0.9)
    masked[to_random] = random_ids[to_random]
    return masked, torch.where(selected, ids, -100)


def test_mask_tokens_passes_with_a_reference_and_with_lmlab_objectives():
    from lmlab.objectives import mask_tokens as lmlab_mask_tokens

    assert check("05.mask_tokens", mask_tokens)
    assert check("05.mask_tokens", lambda ids, m, v, s, g: lmlab_mask_tokens(
        ids, mask_token_id=m, vocab_size=v, special_token_ids=s, generator=g))


def test_mask_tokens_fails_as_the_seed_wrote_it():
    def seed_style(ids, mask_token_id, vocab_size, special_ids, generator):  # in place, no labels
        chosen = torch.rand(ids.shape, generator=generator) < 0.15
        ids[chosen] = mask_token_id
        return ids

    def no_labels(ids, mask_token_id, vocab_size, special_ids, generator):
        return mask_tokens(ids, mask_token_id, vocab_size, special_ids, generator)[0]

    assert "in place" in repr(check("05.mask_tokens", seed_style))
    assert "return two tensors, (masked_ids, labels)" in repr(check("05.mask_tokens", no_labels))


def test_mask_tokens_fails_for_the_usual_mistakes():
    def always_mask(ids, mask_token_id, vocab_size, special_ids, generator):
        masked, labels = mask_tokens(ids, mask_token_id, vocab_size, special_ids, generator)
        return masked.masked_fill(labels != -100, mask_token_id), labels

    def random_of_the_rest(ids, mask_token_id, vocab_size, special_ids, generator):  # 10 % of the other 20 %
        never = torch.tensor(special_ids + [mask_token_id])
        selected = (torch.rand(ids.shape, generator=generator) < 0.15) & ~torch.isin(ids, never)
        to_mask = selected & (torch.rand(ids.shape, generator=generator) < 0.8)
        to_random = selected & ~to_mask & (torch.rand(ids.shape, generator=generator) < 0.1)
        masked = ids.clone()
        masked[to_mask] = mask_token_id
        masked[to_random] = torch.randint(5, vocab_size, ids.shape, generator=generator)[to_random]
        return masked, torch.where(selected, ids, -100)

    def specials_selected(ids, mask_token_id, vocab_size, special_ids, generator):
        return mask_tokens(ids, mask_token_id, vocab_size, [], generator)

    def global_generator(ids, mask_token_id, vocab_size, special_ids, generator):
        return mask_tokens(ids, mask_token_id, vocab_size, special_ids, None)

    def labels_are_the_masked_ids(ids, mask_token_id, vocab_size, special_ids, generator):
        masked, labels = mask_tokens(ids, mask_token_id, vocab_size, special_ids, generator)
        return masked, torch.where(labels != -100, masked, -100)

    def one_draw_for_all_rows(ids, mask_token_id, vocab_size, special_ids, generator):
        masked, labels = mask_tokens(ids[:1].expand_as(ids), mask_token_id, vocab_size, special_ids, generator)
        return torch.where(labels != -100, masked[:1], ids), torch.where(labels[:1] != -100, ids, -100)

    expected = {always_mask: "became [MASK]", random_of_the_rest: "got a random token",
                specials_selected: "special", global_generator: "generator=generator",
                labels_are_the_masked_ids: "original token", one_draw_for_all_rows: ""}
    for wrong, words in expected.items():
        result = check("05.mask_tokens", wrong)
        assert not result and words in repr(result), (wrong.__name__, repr(result))


# --- 05.bert_selection: BERT's exact count per sequence ------------------------------------------------------


def bert_select(ids, special_ids, pad_id, generator):
    scores = torch.rand(ids.shape, generator=generator).masked_fill(torch.isin(ids, torch.tensor(special_ids)), 2.0)
    rank = scores.argsort(-1).argsort(-1)
    counts = torch.tensor([max(1, round(0.15 * n)) for n in (ids != pad_id).sum(1).tolist()])
    return rank < counts[:, None]


def test_bert_selection_passes_with_a_reference_and_a_loop_over_rows():
    assert check("05.bert_selection", bert_select)

    def row_by_row(ids, special_ids, pad_id, generator):
        out = torch.zeros_like(ids, dtype=torch.bool)
        for r, row in enumerate(ids):
            candidates = (~torch.isin(row, torch.tensor(special_ids))).nonzero().flatten()
            count = max(1, round(0.15 * int((row != pad_id).sum())))
            out[r, candidates[torch.randperm(len(candidates), generator=generator)[:count]]] = True
        return out

    assert check("05.bert_selection", row_by_row)


def test_bert_selection_fails_for_the_usual_mistakes():
    def coin_flip(ids, special_ids, pad_id, generator):  # Hugging Face's rule, not BERT's
        return (torch.rand(ids.shape, generator=generator) < 0.15) & ~torch.isin(ids, torch.tensor(special_ids))

    def padding_counted(ids, special_ids, pad_id, generator):
        return bert_select(ids, special_ids, pad_id=-1, generator=generator)

    def first_positions(ids, special_ids, pad_id, generator):
        ordinary = ~torch.isin(ids, torch.tensor(special_ids))
        counts = torch.tensor([max(1, round(0.15 * n)) for n in (ids != pad_id).sum(1).tolist()])
        return ordinary & (ordinary.long().cumsum(1) <= counts[:, None])

    def one_order_for_all_rows(ids, special_ids, pad_id, generator):
        scores = torch.rand(ids.shape[1], generator=generator).expand_as(ids)
        scores = scores.masked_fill(torch.isin(ids, torch.tensor(special_ids)), 2.0)
        counts = torch.tensor([max(1, round(0.15 * n)) for n in (ids != pad_id).sum(1).tolist()])
        return scores.argsort(-1).argsort(-1) < counts[:, None]

    expected = {coin_flip: "BERT selects", padding_counted: "padding", first_positions: "different selections",
                one_order_for_all_rows: "different selections"}
    for wrong, words in expected.items():
        result = check("05.bert_selection", wrong)
        assert not result and words in repr(result), (wrong.__name__, repr(result))


def test_the_property_checks_fail_cleanly_for_a_stub_and_for_a_non_function():
    def stub(*args):
        raise NotImplementedError("your code here")

    for name in ("05.mask_tokens", "05.bert_selection"):
        result = check(name, stub)
        assert not result and "NotImplementedError" in repr(result) and "Hint" in repr(result)
        assert "expected a function" in repr(check(name, 3))
