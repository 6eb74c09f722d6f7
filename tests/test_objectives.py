import math

import pytest
import torch

from lmlab.objectives import clm_loss, mask_tokens, mlm_loss

PAD, MASK, CLS, SEP = 0, 1, 2, 3
V = 50


def gen(seed):
    return torch.Generator().manual_seed(seed)


def corpus(batch=100, seq=1000):
    """10^5 token ids with [CLS] ... [SEP] on every row and right padding on every other row."""
    ids = torch.randint(4, V, (batch, seq), generator=gen(0))
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[::2, -200:] = PAD
    return ids


def mask(ids, seed=0, **kw):
    kw = {"mask_token_id": MASK, "vocab_size": V, "special_token_ids": (CLS, SEP), "pad_token_id": PAD, **kw}
    return mask_tokens(ids, generator=gen(seed), **kw)


# --- mask_tokens ---------------------------------------------------------------------------------


def test_mask_tokens_rates_on_1e5_tokens():
    ids = corpus()
    masked, labels = mask(ids)
    candidates = ~torch.isin(ids, torch.tensor([PAD, MASK, CLS, SEP]))
    selected = labels != -100
    n_sel = int(selected.sum())
    # the binomial standard deviations are ~0.0012 (selection) and ~0.003 (80/10/10): 4-5 sigma margins
    assert abs(n_sel / int(candidates.sum()) - 0.15) < 0.006
    became_mask = (masked == MASK) & selected
    kept = (masked == ids) & selected
    changed = selected & ~became_mask & ~kept
    assert abs(int(became_mask.sum()) / n_sel - 0.8) < 0.015
    # a random draw hits the original token with probability 1 / (number of ordinary tokens)
    hit = 1 / (V - 4)
    assert abs(int(changed.sum()) / n_sel - 0.1 * (1 - hit)) < 0.012
    assert abs(int(kept.sum()) / n_sel - (0.1 + 0.1 * hit)) < 0.012
    # random replacements come from the ordinary vocabulary, and cover it
    assert not torch.isin(masked[changed], torch.tensor([PAD, MASK, CLS, SEP])).any()
    assert set(masked[changed].tolist()) == set(range(4, V))


def test_labels_hold_the_original_ids_at_selected_positions_only():
    ids = corpus(8, 200)
    masked, labels = mask(ids)
    selected = labels != -100
    assert selected.any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])  # nothing else is touched
    assert labels.dtype == torch.long and masked.dtype == ids.dtype


def test_special_and_padding_positions_are_never_selected():
    ids = corpus(20, 100)
    ids[:, 50] = MASK  # a [MASK] already in the text is not selected either
    _, labels = mask(ids, select_rate=1.0)
    special = torch.isin(ids, torch.tensor([PAD, MASK, CLS, SEP]))
    assert (labels[special] == -100).all()
    assert (labels[~special] != -100).all()  # select_rate=1 selects every other position


def test_same_seed_same_mask_different_seed_different_mask():
    ids = corpus(4, 100)
    a, b, c = mask(ids, seed=7), mask(ids, seed=7), mask(ids, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_input_is_not_modified():
    ids = corpus(4, 100)
    before = ids.clone()
    mask(ids, select_rate=1.0)
    assert torch.equal(ids, before)


def test_replacement_rates_are_parameters():
    ids = corpus(20, 100)
    masked, labels = mask(ids, select_rate=1.0, mask_rate=0.0, random_rate=0.0)
    assert torch.equal(masked, ids) and (labels != -100).any()
    masked, labels = mask(ids, select_rate=1.0, mask_rate=1.0, random_rate=0.0)
    assert (masked[labels != -100] == MASK).all()


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"select_rate": 1.5}, "select_rate"),
        ({"mask_rate": -0.1}, "mask_rate"),
        ({"random_rate": "0.1"}, "random_rate"),
        ({"mask_rate": 0.8, "random_rate": 0.3}, "mask_rate \\+ random_rate"),
        ({"mask_token_id": V}, "mask_token_id"),
        ({"pad_token_id": -1}, "pad_token_id"),
        ({"special_token_ids": 2}, "special_token_ids"),
        ({"special_token_ids": ["[CLS]"]}, "special_token_ids"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 10**12}, "vocab_size must be at most 1,000,000"),  # would allocate a 1 TB mask
        ({"vocab_size": True}, "vocab_size"),
        ({"select_rate": float("nan")}, "select_rate"),
        ({"random_rate": float("inf")}, "random_rate"),
        ({"mask_token_id": True}, "mask_token_id"),
        ({"vocab_size": 10}, "input_ids"),  # ids up to 49 do not fit a vocabulary of 10
    ],
)
def test_mask_tokens_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        mask(corpus(2, 10), **kw)


def test_mask_tokens_bad_ids_and_generator():
    with pytest.raises(ValueError, match="^input_ids"):
        mask_tokens(torch.zeros(2, 3), mask_token_id=MASK, vocab_size=V)
    with pytest.raises(ValueError, match="^generator"):
        mask_tokens(corpus(2, 10), mask_token_id=MASK, vocab_size=V, generator=0)


# --- clm_loss ------------------------------------------------------------------------------------


def hand_cross_entropy(logits_row, target):
    return math.log(sum(math.exp(v) for v in logits_row)) - logits_row[target]


def test_clm_loss_equals_hand_computed_cross_entropy():
    logits = torch.tensor(
        [
            [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [3.0, 0.0, 0.0]],
            [[0.0, 0.0, 0.0], [-2.0, 1.0, 0.0], [1.0, 1.0, 1.0]],
        ]
    )
    ids = torch.tensor([[0, 2, 1], [1, 0, 2]])
    # logits at t predict ids at t + 1; the last position predicts nothing
    terms = [hand_cross_entropy(logits[b, t].tolist(), int(ids[b, t + 1])) for b in range(2) for t in range(2)]
    assert clm_loss(logits, ids).item() == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_clm_loss_ignores_padding_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.tensor([[3, 4, 5, 0, 0], [3, 1, 2, 6, 5]])  # row 0 padded with 0
    real = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]  # (row, t) whose target is not padding
    expected = sum(hand_cross_entropy(logits[b, t].tolist(), int(ids[b, t + 1])) for b, t in real) / len(real)
    assert clm_loss(logits, ids, pad_token_id=0).item() == pytest.approx(expected, rel=1e-5)
    changed = logits.clone()
    changed[0, 2:] += torch.randn(3, 7)  # the positions that predict padding
    assert clm_loss(changed, ids, pad_token_id=0).item() == pytest.approx(expected, rel=1e-5)
    assert clm_loss(logits, ids).item() != pytest.approx(expected, rel=1e-3)  # without pad_token_id they count


def test_clm_loss_all_padding_is_zero_with_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = clm_loss(logits, torch.zeros(2, 3, dtype=torch.long), pad_token_id=0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize(
    "logits, ids, name",
    [
        (torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long), "logits"),  # seq differs
        (torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.long), "logits"),  # rank 2
        (torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), "logits"),  # not float
        (torch.randn(2, 4, 5), torch.full((2, 4), 5), "input_ids"),  # id past the vocabulary
        (torch.randn(2, 4, 5), torch.zeros(2, 4), "input_ids"),  # float ids
        (torch.randn(2, 1, 5), torch.zeros(2, 1, dtype=torch.long), "input_ids"),  # nothing to predict
    ],
)
def test_clm_loss_bad_input(logits, ids, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        clm_loss(logits, ids)


# --- mlm_loss ------------------------------------------------------------------------------------


def test_mlm_loss_counts_selected_positions_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, V)
    _, labels = mask(corpus(3, 6), select_rate=0.5)
    selected = labels != -100
    assert 0 < int(selected.sum()) < selected.numel()
    expected = torch.nn.functional.cross_entropy(logits[selected], labels[selected])
    loss = mlm_loss(logits, labels)
    torch.testing.assert_close(loss, expected)
    noise = torch.randn(3, 6, V)
    unselected_changed = logits + noise * (~selected)[..., None]
    torch.testing.assert_close(mlm_loss(unselected_changed, labels), loss)
    selected_changed = logits + noise * selected[..., None]
    assert mlm_loss(selected_changed, labels).item() != pytest.approx(loss.item(), rel=1e-3)


def test_mlm_loss_with_nothing_selected_is_zero_with_gradient():
    logits = torch.randn(2, 4, V, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 4), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize(
    "logits, labels, name",
    [
        (torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long), "logits"),
        (torch.randn(2, 4, 5), torch.zeros(2, 4), "labels"),
        (torch.randn(2, 4, 5), torch.zeros(8, dtype=torch.long), "labels"),
        (torch.randn(2, 4, 5), torch.full((2, 4), 5), "labels"),
        (torch.randn(2, 4, 5), torch.full((2, 4), -3), "labels"),
    ],
)
def test_mlm_loss_bad_input(logits, labels, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        mlm_loss(logits, labels)
