"""lmlab.decoding: each filter against hand-computed cases and a per-row reference, and the searches
against exhaustive search, each other, and themselves (batch vs single, cached vs recomputed)."""

import itertools
import math

import pytest
import torch

from lmlab import decoding as d
from lmlab.models import GPT, GPTConfig

NEG_INF = float("-inf")


def kept(logits):
    """Boolean mask of the tokens a filter kept."""
    return logits > NEG_INF


def random_logits(batch=4, vocab=13, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vocab, generator=g) * scale


def row_probs(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


# --- per-row references, written the plain way: one row, Python lists -----------------------------


def ref_top_k(row, k, keep=1):
    k = min(max(k, keep), len(row))
    kth = sorted(row, reverse=True)[k - 1]
    return [x >= kth for x in row]


def ref_top_p(row, p, keep=1):
    probs = row_probs(row)
    order = sorted(range(len(row)), key=lambda i: (-probs[i], i))
    mask, mass = [False] * len(row), 0.0
    for rank, i in enumerate(order):
        if rank >= keep and mass >= p:
            break
        mask[i] = True
        mass += probs[i]
    return mask


def ref_min_p(row, p, keep=1):
    probs = row_probs(row)
    top = sorted(range(len(row)), key=lambda i: -probs[i])[:keep]
    return [probs[i] >= p * max(probs) or i in top for i in range(len(row))]


def ref_typical(row, mass, keep=1):
    probs = row_probs(row)
    entropy = -sum(q * math.log(q) for q in probs if q > 0)
    distance = [abs(-math.log(q) - entropy) for q in probs]
    order = sorted(range(len(row)), key=lambda i: distance[i])
    total, last = 0.0, order[-1]
    for i in order:
        total += probs[i]
        if total >= mass:
            last = i
            break
    cut = distance[last]
    return [distance[i] <= cut or i in order[:keep] for i in range(len(row))]


def ref_repetition(row, history, penalty):
    return [(x * penalty if x < 0 else x / penalty) if i in history else x for i, x in enumerate(row)]


def ref_no_repeat(row, history, n):
    banned = set()
    for s in range(len(history) - n + 1):
        if n == 1 or history[s : s + n - 1] == history[len(history) - n + 1 :]:
            banned.add(history[s + n - 1])
    return [i not in banned for i in range(len(row))]


# --- filters: hand-computed cases -----------------------------------------------------------------


def test_temperature_divides_logits():
    logits = torch.tensor([[1.0, 2.0, -4.0], [0.5, 0.0, 3.0], [2.0, 2.0, 2.0]])
    torch.testing.assert_close(d.apply_temperature(logits, 2.0), logits / 2)
    torch.testing.assert_close(d.apply_temperature(logits, 1.0), logits)


def test_temperature_zero_is_one_hot_at_first_argmax():
    logits = torch.tensor([[1.0, 3.0, 3.0], [5.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    out = d.apply_temperature(logits, 0)
    expected = torch.tensor([[NEG_INF, 0.0, NEG_INF], [0.0, NEG_INF, NEG_INF], [0.0, NEG_INF, NEG_INF]])
    assert torch.equal(out, expected)
    assert torch.equal(out.softmax(-1), torch.tensor([[0.0, 1, 0], [1, 0, 0], [1, 0, 0]]))


@pytest.mark.parametrize("temperature", [1e-3, 1e-30, 1e-300, 5e-324])
def test_tiny_temperature_never_gives_nan(temperature):
    logits = torch.tensor([[1.0, 3.0, 2.0], [-5.0, -1.0, -2.0], [80.0, 79.0, 0.0]])
    probs = d.apply_temperature(logits, temperature).softmax(-1)
    assert not probs.isnan().any()
    assert torch.equal(probs.argmax(-1), torch.tensor([1, 1, 0]))
    assert torch.allclose(probs.max(-1).values, torch.ones(3))


def test_top_k_keeps_k_largest_per_row_and_ties_at_kth():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 2.0, 0.0]])
    out = d.top_k_filter(logits, 2)
    assert kept(out).tolist() == [[False, True, False, True], [True, True, False, False], [False, True, True, False]]
    assert torch.equal(out[kept(out)], logits[kept(out)])  # kept logits are unchanged
    ties = d.top_k_filter(torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]]), 2)  # k-th value is tied three times
    assert kept(ties).tolist() == [[False, True, True, True, False]]


@pytest.mark.parametrize("k", [5, 6, 100])
def test_top_k_at_least_vocab_keeps_everything(k):
    logits = random_logits(3, 5)
    assert torch.equal(d.top_k_filter(logits, k), logits)


def test_top_p_hand_computed():
    logits = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]]).log()
    assert kept(d.top_p_filter(logits, 0.8)).tolist() == [[True, True, False], [False, True, True], [True, False, True]]
    assert kept(d.top_p_filter(logits, 0.5)).sum(-1).tolist() == [1, 1, 1]  # exactly the top token's mass
    assert kept(d.top_p_filter(logits, 0.81)).sum(-1).tolist() == [3, 3, 3]
    assert kept(d.top_p_filter(logits, 0.01)).sum(-1).tolist() == [1, 1, 1]


def test_top_p_mass_exactly_p_keeps_smallest_set_despite_rounding():
    # every split of 100 % into three two-decimal probabilities, p = the mass of the first two:
    # a float32 cumulative sum lands just below or above p; the answer must be 2 tokens every time
    # (transformers' TopPLogitsWarper keeps 3 in about a fifth of these cases)
    rows, ps = [], []
    for a in range(34, 99):
        for b in range(1, min(a, 100 - a) + 1):
            c = 100 - a - b
            if 1 <= c <= b:
                rows.append([a / 100, b / 100, c / 100])
                ps.append(round((a + b) / 100, 2))
    logits = torch.tensor(rows).log()
    counts = [kept(d.top_p_filter(logits[i : i + 1], p)).sum().item() for i, p in enumerate(ps)]
    assert len(counts) > 800 and set(counts) == {2}


def test_top_p_one_keeps_everything_even_tiny_tail():
    logits = torch.tensor([[0.0, -30.0, -60.0, -90.0], [5.0, 0.0, -100.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert torch.equal(d.top_p_filter(logits, 1.0), logits)


def test_top_p_ties_broken_by_lowest_token_id():
    logits = torch.zeros(3, 4)
    assert kept(d.top_p_filter(logits, 0.5)).tolist() == [[True, True, False, False]] * 3


def test_min_p_hand_computed():
    logits = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]]).log()
    # 0.3 / 0.6 is exactly 0.5: the boundary is kept
    assert kept(d.min_p_filter(logits, 0.5)).tolist() == [[True, True, False], [False, True, True], [True, True, True]]
    assert kept(d.min_p_filter(logits, 0.51)).tolist() == [[True, False, False], [False, True, False], [True, True, False]]
    assert torch.equal(d.min_p_filter(logits, 0.0), logits)
    assert kept(d.min_p_filter(logits, 1.0)).sum(-1).tolist() == [1, 1, 2]  # only the maximum and its ties


def test_typical_hand_computed():
    # probs 0.5, 0.25, 0.125, 0.125: entropy 1.75 bits; surprisals 1, 2, 3, 3 bits;
    # distances to the entropy 0.75, 0.25, 1.25, 1.25 (bits) -> order: token 1, token 0, then 2 and 3 (tied)
    logits = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.125, 0.125, 0.25, 0.5]]).log()
    assert kept(d.typical_filter(logits, 0.2)).tolist() == [[False, True, False, False], [False, False, True, False]]
    assert kept(d.typical_filter(logits, 0.75)).tolist() == [[True, True, False, False], [False, False, True, True]]
    assert kept(d.typical_filter(logits, 0.8)).sum(-1).tolist() == [4, 4]  # the tie at the cut is kept
    assert torch.equal(d.typical_filter(logits, 1.0), logits)


def test_repetition_penalty_divides_positive_multiplies_negative_once():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.0], [2.0, -2.0, 1.0, 0.0], [2.0, -2.0, 1.0, 0.0]])
    ids = torch.tensor([[0, 1, 0, 0], [2, 2, 2, 2], [3, 3, 1, 1]])
    out = d.repetition_penalty(logits, ids, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.0], [2.0, -2.0, 0.5, 0.0], [2.0, -4.0, 1.0, 0.0]]
    assert torch.equal(d.repetition_penalty(logits, ids, 1.0), logits)
    assert d.repetition_penalty(logits, ids, 0.5)[0, :2].tolist() == [4.0, -1.0]  # < 1 rewards repeats


def test_no_repeat_ngram_hand_computed():
    logits = torch.zeros(3, 5)
    ids = torch.tensor([[1, 2, 3, 1, 2], [1, 2, 3, 4, 1], [4, 4, 4, 4, 4]])
    # bigrams: row 0 ends in 2, and "2 3" happened -> 3 banned; row 1 ends in 1, "1 2" -> 2; row 2: "4 4" -> 4
    assert (~kept(d.no_repeat_ngram(logits, ids, 2))).nonzero().tolist() == [[0, 3], [1, 2], [2, 4]]
    # trigrams: row 0 ends in "1 2", "1 2 3" happened -> 3; row 1 ends in "4 1": never followed -> nothing
    assert (~kept(d.no_repeat_ngram(logits, ids, 3))).nonzero().tolist() == [[0, 3], [2, 4]]
    assert (~kept(d.no_repeat_ngram(logits, ids, 1))).sum(-1).tolist() == [3, 4, 1]  # every token seen
    assert torch.equal(d.no_repeat_ngram(logits, ids, 6), logits)  # no 6-gram yet


# --- filters: random batches against the per-row reference ---------------------------------------

FILTER_CASES = [
    ("top_k", lambda x, ids, a, keep: d.top_k_filter(x, a, keep), ref_top_k, [1, 2, 3, 7, 20]),
    ("top_p", lambda x, ids, a, keep: d.top_p_filter(x, a, keep), ref_top_p, [0.05, 0.3, 0.5, 0.9, 0.99]),
    ("min_p", lambda x, ids, a, keep: d.min_p_filter(x, a, keep), ref_min_p, [0.0, 0.05, 0.2, 0.5, 1.0]),
    ("typical", lambda x, ids, a, keep: d.typical_filter(x, a, keep), ref_typical, [0.1, 0.5, 0.9, 0.95]),
]


@pytest.mark.parametrize("name,fn,ref,args", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
@pytest.mark.parametrize("keep", [1, 3])
def test_filters_match_per_row_reference_on_random_batches(name, fn, ref, args, keep):
    for seed in range(6):
        logits = random_logits(batch=5, vocab=11, seed=seed, scale=[0.5, 2.0, 6.0][seed % 3])
        for a in args:
            out = fn(logits, None, a, keep)
            expected = [ref(row, a, keep) for row in logits.tolist()]
            assert kept(out).tolist() == expected, (name, seed, a)
            assert torch.equal(out[kept(out)], logits[kept(out)])
            # a batch gives each row what that row gives alone (the classic batch-of-one bug)
            assert torch.equal(torch.cat([fn(logits[i : i + 1], None, a, keep) for i in range(5)]), out)


def test_penalties_match_per_row_reference_on_random_batches():
    for seed in range(6):
        logits = random_logits(batch=4, vocab=6, seed=seed)
        ids = torch.randint(0, 3, (4, 9), generator=torch.Generator().manual_seed(seed))
        for penalty in (0.5, 1.3, 3.0):
            expected = [ref_repetition(r, h, penalty) for r, h in zip(logits.tolist(), ids.tolist())]
            torch.testing.assert_close(d.repetition_penalty(logits, ids, penalty), torch.tensor(expected))
        for n in (1, 2, 3, 4):
            expected = [ref_no_repeat(r, h, n) for r, h in zip(logits.tolist(), ids.tolist())]
            assert kept(d.no_repeat_ngram(logits, ids, n)).tolist() == expected


def test_min_tokens_to_keep_overrides_every_filter():
    logits = torch.tensor([[10.0, 0.0, -1.0, -2.0], [0.0, -2.0, 10.0, -1.0], [-1.0, -2.0, 0.0, 10.0]])
    for out in (
        d.top_k_filter(logits, 1, min_tokens_to_keep=3),
        d.top_p_filter(logits, 0.1, min_tokens_to_keep=3),
        d.min_p_filter(logits, 0.9, min_tokens_to_keep=3),
    ):
        assert kept(out).sum(-1).tolist() == [3, 3, 3]
        assert kept(out)[torch.arange(3), torch.tensor([3, 1, 1])].tolist() == [False] * 3  # the least probable goes
    assert kept(d.typical_filter(logits, 0.01, min_tokens_to_keep=3)).sum(-1).tolist() == [3, 3, 3]
    assert torch.equal(d.top_k_filter(logits, 1, min_tokens_to_keep=9), logits)


def test_filters_never_modify_their_input():
    logits = random_logits(3, 8)
    ids = torch.tensor([[1, 2, 1], [0, 0, 0], [7, 6, 7]])
    before, ids_before = logits.clone(), ids.clone()
    outputs = [
        d.apply_temperature(logits, 0), d.apply_temperature(logits, 0.5), d.top_k_filter(logits, 2),
        d.top_k_filter(logits, 8), d.top_p_filter(logits, 0.5), d.top_p_filter(logits, 1.0),
        d.min_p_filter(logits, 0.3), d.min_p_filter(logits, 0.0), d.typical_filter(logits, 0.5),
        d.repetition_penalty(logits, ids, 1.5), d.repetition_penalty(logits, ids, 1.0),
        d.no_repeat_ngram(logits, ids, 2), d.filter_logits(logits, ids, temperature=0.7, top_k=3, repetition_penalty=2.0),
    ]
    assert torch.equal(logits, before) and torch.equal(ids, ids_before)
    for out in outputs:  # a fresh tensor each time, even when nothing was filtered
        assert out.data_ptr() != logits.data_ptr()


def test_filter_logits_composes_in_transformers_order():
    logits = random_logits(4, 10, seed=3)
    ids = torch.randint(0, 10, (4, 6), generator=torch.Generator().manual_seed(1))
    out = d.filter_logits(logits, ids, temperature=0.7, top_k=6, top_p=0.9, min_p=0.05, typical_p=0.95,
                          repetition_penalty=1.5, no_repeat_ngram_size=2)
    x = d.repetition_penalty(logits, ids, 1.5)
    x = d.no_repeat_ngram(x, ids, 2)
    x = d.apply_temperature(x, 0.7)
    x = d.min_p_filter(d.top_p_filter(d.top_k_filter(x, 6), 0.9), 0.05)
    assert torch.equal(out, d.typical_filter(x, 0.95))
    assert torch.equal(d.filter_logits(logits), logits)
    # the order matters: temperature 3 flattens [2, 1, 0] first, so the nucleus needs all three tokens
    flat = d.filter_logits(torch.tensor([[2.0, 1.0, 0.0]] * 3), temperature=3.0, top_p=0.8)
    assert kept(flat).sum(-1).tolist() == [3, 3, 3]
    assert kept(d.top_p_filter(torch.tensor([[2.0, 1.0, 0.0]]), 0.8)).sum().item() == 2


BAD_FILTER_CALLS = [
    (lambda: d.apply_temperature(torch.zeros(2, 3), -1.0), "temperature"),
    (lambda: d.apply_temperature(torch.zeros(2, 3), float("nan")), "temperature"),
    (lambda: d.apply_temperature(torch.zeros(2, 3), float("inf")), "temperature"),
    (lambda: d.top_k_filter(torch.zeros(2, 3), 0), "k"),
    (lambda: d.top_k_filter(torch.zeros(2, 3), 2.5), "k"),
    (lambda: d.top_k_filter(torch.zeros(2, 3), 2, min_tokens_to_keep=0), "min_tokens_to_keep"),
    (lambda: d.top_p_filter(torch.zeros(2, 3), 0.0), "p"),
    (lambda: d.top_p_filter(torch.zeros(2, 3), 1.5), "p"),
    (lambda: d.top_p_filter(torch.zeros(2, 3), -0.1), "p"),
    (lambda: d.min_p_filter(torch.zeros(2, 3), 1.5), "p"),
    (lambda: d.min_p_filter(torch.zeros(2, 3), -0.5), "p"),
    (lambda: d.typical_filter(torch.zeros(2, 3), 0.0), "mass"),
    (lambda: d.repetition_penalty(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long), 0.0), "penalty"),
    (lambda: d.repetition_penalty(torch.zeros(2, 3), torch.zeros(3, 1, dtype=torch.long), 1.2), "input_ids"),
    (lambda: d.repetition_penalty(torch.zeros(2, 3), torch.full((2, 1), 3), 1.2), "input_ids"),
    (lambda: d.no_repeat_ngram(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.long), 0), "n"),
    (lambda: d.no_repeat_ngram(torch.zeros(2, 3), torch.zeros(2, 2), 2), "input_ids"),
    (lambda: d.top_k_filter(torch.zeros(3), 2), "logits"),
    (lambda: d.top_p_filter(torch.zeros(2, 3, dtype=torch.long), 0.5), "logits"),
    (lambda: d.top_p_filter([[0.0, 1.0]], 0.5), "logits"),
    (lambda: d.filter_logits(torch.zeros(2, 3), top_p=2.0), "top_p"),
    (lambda: d.filter_logits(torch.zeros(2, 3), top_k=0), "top_k"),
    (lambda: d.filter_logits(torch.zeros(2, 3), min_p=1.5), "min_p"),
    (lambda: d.filter_logits(torch.zeros(2, 3), repetition_penalty=1.2), "input_ids"),
]


@pytest.mark.parametrize("call,name", BAD_FILTER_CALLS, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_FILTER_CALLS)])
def test_filter_bad_input_raises_one_sentence_naming_the_argument(call, name):
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert message.startswith(name + " ") and message.count(". ") == 0 and "\n" not in message


# --- search --------------------------------------------------------------------------------------


def toy_gpt(vocab=5, block_size=32, seed=0, sharpness=4.0, dropout=0.0):
    """A tiny GPT whose distributions depend on the context (weights scaled up: no near-ties)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=dropout))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(sharpness)
    return model.eval()


def log_prob_of(model, prompt, continuation):
    """Sum of log P(continuation token | everything before), computed in one full forward."""
    ids = torch.tensor([prompt + continuation])
    log_probs = model(ids)[0].log_softmax(-1)
    return sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(continuation))


@pytest.fixture(scope="module")
def model():
    return toy_gpt()


@pytest.fixture(scope="module")
def prompts():
    return torch.tensor([[1, 2, 3], [4, 0, 0], [2, 2, 1]])


def test_beam_search_with_every_beam_is_exhaustive_search(model):
    vocab, length = 3, 3  # num_beams = 27 = V ** L: nothing is ever pruned
    m = toy_gpt(vocab=vocab, seed=1)
    prompt = [1, 0]
    everything = sorted(
        ((log_prob_of(m, prompt, list(c)), list(c)) for c in itertools.product(range(vocab), repeat=length)),
        reverse=True,
    )
    out = d.beam_search(m, torch.tensor([prompt]), num_beams=27, max_new_tokens=length, num_return_sequences=27)
    assert out.sequences[:, 2:].tolist() == [c for _, c in everything]
    torch.testing.assert_close(out.scores, torch.tensor([s / length for s, _ in everything]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_with_eos_is_exhaustive_search_over_finished_sequences(length_penalty, early_stopping):
    vocab, length, eos = 3, 3, 0
    m = toy_gpt(vocab=vocab, seed=2)
    prompt = [2, 1]
    # every possible output: ends at the first eos, or runs to max_new_tokens
    outputs = [list(c) for n in range(1, length + 1) for c in itertools.product(range(vocab), repeat=n)
               if (eos not in c[:-1]) and (c[-1] == eos or n == length)]
    ranked = sorted(((log_prob_of(m, prompt, c) / len(c) ** length_penalty, c) for c in outputs), reverse=True)
    out = d.beam_search(m, torch.tensor([prompt]), num_beams=27, max_new_tokens=length, length_penalty=length_penalty,
                        eos_token_id=eos, early_stopping=early_stopping, num_return_sequences=len(outputs))
    got = [row[2:] for row in out.sequences.tolist()]
    expected = [c + [eos] * (length - len(c)) for _, c in ranked]  # shorter ones are padded with eos
    assert got == expected
    torch.testing.assert_close(out.scores, torch.tensor([s for s, _ in ranked]), rtol=0, atol=1e-4)


# a bigram model given by its table, P(next | last token); token 0 is eos, 1 = A, 2 = B, 3 = C
TABLE = [
    [0.05, 0.05, 0.10, 0.80],  # after eos: C
    [0.55, 0.30, 0.10, 0.05],  # after A: eos
    [0.40, 0.50, 0.06, 0.04],  # after B: A, but eos is close
    [0.10, 0.10, 0.10, 0.70],  # after C: C again
]


# step 2 from token 3 ranks [1, eos], [2, 2], [2, eos], [1, 1]: an eos at rank 2 >= num_beams = 2
TABLE_2 = [
    [0.25, 0.25, 0.25, 0.25],
    [0.60, 0.20, 0.15, 0.05],
    [0.42, 0.08, 0.45, 0.05],
    [0.15, 0.50, 0.30, 0.05],
]


def bigram(ids, table=TABLE):
    return torch.tensor(table).log()[ids]


def lp(*path, start=2, table=TABLE):
    """log P of a path of tokens after the token `start`, by the table."""
    return sum(math.log(table[a][b]) for a, b in zip((start,) + path, path))


def test_greedy_pads_finished_rows_with_eos():
    out = d.greedy(bigram, torch.tensor([[2], [3]]), 4, eos_token_id=0)
    assert out.tolist() == [[2, 1, 0, 0, 0], [3, 3, 3, 3, 3]]  # after eos the model would say C, not eos
    assert d.greedy(bigram, torch.tensor([[2], [1]]), 4, eos_token_id=0).tolist() == [[2, 1, 0], [1, 0, 0]]


def test_beam_search_hand_computed():
    one = d.beam_search(bigram, torch.tensor([[2]]), 1, 4, eos_token_id=0)
    # eos ranks second at step 1 (0.4 < 0.5): outside the top num_beams, so it is not a hypothesis
    assert one.sequences.tolist() == [[2, 1, 0]]
    assert one.scores.item() == pytest.approx(lp(1, 0) / 2)
    # 2 beams: [eos] (step 1) and [A, eos] (step 2) finish; True and False stop there
    for stop in (True, False):
        two = d.beam_search(bigram, torch.tensor([[2]]), 2, 3, eos_token_id=0, early_stopping=stop, num_return_sequences=2)
        assert two.sequences.tolist() == [[2, 1, 0], [2, 0, 0]]  # as wide as the longest, eos-padded
        torch.testing.assert_close(two.scores, torch.tensor([lp(1, 0) / 2, lp(0) / 1]))
    # "never": the running [A, A] could still reach -1.897 / 3 > lp(eos) at full length, so search goes on
    never = d.beam_search(bigram, torch.tensor([[2]]), 2, 3, eos_token_id=0, early_stopping="never", num_return_sequences=2)
    assert never.sequences.tolist() == [[2, 1, 0, 0], [2, 1, 1, 0]]
    torch.testing.assert_close(never.scores, torch.tensor([lp(1, 0) / 2, lp(1, 1, 0) / 3]))
    # length_penalty 0 ranks by total log-probability: the one-token [eos] wins
    short = d.beam_search(bigram, torch.tensor([[2]]), 2, 3, eos_token_id=0, length_penalty=0.0)
    assert short.sequences.tolist() == [[2, 0]] and short.scores.item() == pytest.approx(lp(0))
    # an eos candidate ranked below the top num_beams is dropped, as in transformers: [2, eos] never
    # finishes, so search goes on to step 3, where the top two candidates finish at full length
    out = d.beam_search(lambda ids: bigram(ids, TABLE_2), torch.tensor([[3]]), 2, 3, eos_token_id=0, num_return_sequences=2)
    assert out.sequences.tolist() == [[3, 1, 0, 0], [3, 2, 2, 2]]
    expected = [lp(1, 0, start=3, table=TABLE_2) / 2, lp(2, 2, 2, start=3, table=TABLE_2) / 3]
    torch.testing.assert_close(out.scores, torch.tensor(expected))


def test_beam_search_beats_greedy_and_returns_sorted_hypotheses(model, prompts):
    out = d.beam_search(model, prompts, num_beams=4, max_new_tokens=6, num_return_sequences=3)
    assert out.sequences.shape == (9, 9) and out.scores.shape == (9,)
    assert torch.equal(out.sequences[::3, :3], prompts)
    scores = out.scores.view(3, 3)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    for i in range(9):
        prompt, new = out.sequences[i, :3].tolist(), out.sequences[i, 3:].tolist()
        assert out.scores[i].item() == pytest.approx(log_prob_of(model, prompt, new) / 6, abs=1e-4)


@pytest.mark.parametrize("with_eos", [False, True])
def test_greedy_equals_one_beam_equals_temperature_zero(model, prompts, with_eos):
    eos = d.greedy(model, prompts, 12)[0, 6].item() if with_eos else None  # a token greedy does produce
    g = d.greedy(model, prompts, 12, eos_token_id=eos)
    assert g.shape[1] < 15 or not with_eos
    s = d.sample(model, prompts, 12, temperature=0, top_k=3, top_p=0.9, seed=5, eos_token_id=eos)
    assert torch.equal(g, s)
    b = d.beam_search(model, prompts, num_beams=1, max_new_tokens=12, eos_token_id=eos)
    assert torch.equal(b.sequences, torch.nn.functional.pad(g, (0, b.sequences.shape[1] - g.shape[1]), value=eos or 0))


def test_greedy_picks_argmax_of_full_forward_each_step(model, prompts):
    out = d.greedy(model, prompts, 5)
    for t in range(3, 8):
        assert torch.equal(out[:, t], model(out[:, :t])[:, -1].argmax(-1))


def test_same_seed_same_output_different_seed_different(model, prompts):
    opts = dict(temperature=1.5, top_k=4, top_p=0.95, min_p=0.01)
    a = d.sample(model, prompts, 20, seed=7, **opts)
    assert torch.equal(a, d.sample(model, prompts, 20, seed=7, **opts))
    assert torch.equal(a, d.sample(model, prompts, 20, generator=torch.Generator().manual_seed(7), **opts))
    assert not torch.equal(a, d.sample(model, prompts, 20, seed=8, **opts))
    torch.manual_seed(3)
    b = d.sample(model, prompts, 20, **opts)
    torch.manual_seed(3)
    assert torch.equal(b, d.sample(model, prompts, 20, **opts))


def test_sample_respects_filters(model, prompts):
    out = d.sample(model, prompts, 15, top_k=1, seed=0)  # top-1 is greedy
    assert torch.equal(out, d.greedy(model, prompts, 15))
    banned = d.sample(model, prompts, 15, no_repeat_ngram_size=2, seed=0, temperature=2.0)
    for row in banned.tolist():
        bigrams = list(zip(row, row[1:]))
        assert len(bigrams) == len(set(bigrams))  # no bigram repeats (the prompts have none)


@pytest.mark.parametrize("options,allowed", [({}, [0, 1, 2, 3]), ({"top_k": 2}, [0, 1]), ({"top_p": 0.85}, [0, 1])])
def test_sample_draws_from_the_filtered_distribution(options, allowed):
    n = 20000
    out = d.sample(bigram, torch.full((n, 1), 2), 1, seed=0, **options)[:, 1]
    counts = torch.bincount(out, minlength=4).double()
    p = torch.tensor(TABLE[2], dtype=torch.float64) * torch.isin(torch.arange(4), torch.tensor(allowed))
    p /= p.sum()
    assert counts[p == 0].sum() == 0  # filtered tokens never come out
    # within 5 standard deviations of the expected counts
    assert ((counts - n * p).abs() <= 5 * (n * p * (1 - p)).sqrt() + 1e-9).all(), (counts / n, p)


def test_sample_never_draws_a_filtered_token_even_on_a_zero_noise_draw(monkeypatch):
    # the exponential noise can be exactly 0 (about once in 2**24 draws): make every draw 0
    monkeypatch.setattr(torch.Tensor, "exponential_", lambda self, generator=None: self.zero_())
    out = d.sample(bigram, torch.tensor([[2], [3], [0]]), 3, top_k=1, seed=0)
    assert torch.equal(out, d.greedy(bigram, torch.tensor([[2], [3], [0]]), 3))


def test_batch_equals_each_prompt_alone(model, prompts):
    g = d.greedy(model, prompts, 10)
    b = d.beam_search(model, prompts, num_beams=3, max_new_tokens=8, num_return_sequences=2)
    s = d.sample(model, prompts, 10, temperature=1.3, top_p=0.95, seed=[10, 11, 12])
    for i in range(3):
        one = prompts[i : i + 1]
        assert torch.equal(g[i : i + 1], d.greedy(model, one, 10))
        alone = d.beam_search(model, one, num_beams=3, max_new_tokens=8, num_return_sequences=2)
        assert torch.equal(b.sequences[2 * i : 2 * i + 2], alone.sequences)
        # different batch shapes round differently (~1e-5 relative in float32): not a tighter tolerance
        torch.testing.assert_close(b.scores[2 * i : 2 * i + 2], alone.scores, rtol=1e-4, atol=1e-4)
        assert torch.equal(s[i : i + 1], d.sample(model, one, 10, temperature=1.3, top_p=0.95, seed=[10 + i]))


def test_cached_equals_recomputed_within_block(model, prompts):
    # 3 + 29 = 32 = block_size: everything fits
    assert torch.equal(d.greedy(model, prompts, 29), d.greedy(model, prompts, 29, use_cache=False))
    opts = dict(temperature=0.9, top_k=4, repetition_penalty=1.2, seed=1)
    assert torch.equal(d.sample(model, prompts, 29, **opts), d.sample(model, prompts, 29, use_cache=False, **opts))
    a = d.beam_search(model, prompts, 3, 29, eos_token_id=4)
    c = d.beam_search(model, prompts, 3, 29, eos_token_id=4, use_cache=False)
    assert torch.equal(a.sequences, c.sequences)
    torch.testing.assert_close(a.scores, c.scores, rtol=1e-4, atol=1e-4)  # cached and full forwards round differently


def contexts_by_rule(prompt_len, total, block, cached):
    """The documented context windows: start position of the context that predicts each new token."""
    starts, start = [], max(0, prompt_len - block)
    for t in range(prompt_len, total):
        if cached:
            if t - start > block:
                start = t - (block + 1) // 2
        else:
            start = max(0, t - block)
        starts.append(start)
    return starts


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("prompt_len", [3, 11])
def test_context_is_cropped_by_the_documented_rule_past_block_size(use_cache, prompt_len):
    block = 8
    m = toy_gpt(vocab=5, block_size=block, seed=3)
    prompt = torch.randint(0, 5, (3, prompt_len), generator=torch.Generator().manual_seed(0))
    out = d.greedy(m, prompt, 20, use_cache=use_cache)
    for t, start in zip(range(prompt_len, out.shape[1]), contexts_by_rule(prompt_len, out.shape[1], block, use_cache)):
        assert torch.equal(out[:, t], m(out[:, start:t])[:, -1].argmax(-1)), t
    b = d.beam_search(m, prompt, 2, 20, use_cache=use_cache)  # beams crop too
    assert b.sequences.shape == (3, prompt_len + 20)


def test_any_callable_model_works(model, prompts):
    calls = []

    def plain(ids):  # no cache, no config: recomputed each step, never cropped
        calls.append(ids.shape[1])
        return model(ids)

    assert torch.equal(d.greedy(plain, prompts, 6), d.greedy(model, prompts, 6))
    assert calls == [3, 4, 5, 6, 7, 8]
    table = torch.randn(5, 5)
    bigram = lambda ids: table[ids]  # noqa: E731  logits depend on the last token only
    out = d.greedy(bigram, prompts, 4)
    assert torch.equal(out[:, 3], table[prompts[:, -1]].argmax(-1))
    assert d.beam_search(bigram, prompts, 2, 4).sequences.shape == (3, 7)
    assert d.sample(bigram, prompts, 4, seed=0).shape == (3, 7)


def test_eos_finishes_rows_and_stops_when_all_finished(model, prompts):
    free = d.greedy(model, prompts, 12)
    for eos in free[0, 3:].unique().tolist():
        out = d.greedy(model, prompts, 12, eos_token_id=eos)
        cuts = []
        for row, free_row in zip(out[:, 3:].tolist(), free[:, 3:].tolist()):
            cut = free_row.index(eos) + 1 if eos in free_row else 12
            assert row[:cut] == free_row[:cut] and set(row[cut:]) <= {eos}  # finished rows are eos-padded
            cuts.append(cut)
        assert out.shape[1] == 3 + max(cuts)  # stops as soon as every row has finished


def test_streamer_sees_each_step(model, prompts):
    seen = []
    out = d.sample(model, prompts, 7, seed=0, streamer=seen.append)
    assert len(seen) == 7 and all(s.shape == (3,) for s in seen)
    assert torch.equal(torch.stack(seen, 1), out[:, 3:])
    seen.clear()
    out = d.greedy(model, prompts, 4, streamer=seen.append)
    assert torch.equal(torch.stack(seen, 1), out[:, 3:])


def test_generation_leaves_training_mode_and_grad_alone(prompts):
    m = toy_gpt(dropout=0.5)
    expected = d.greedy(m, prompts, 8)
    m.train()
    assert torch.equal(d.greedy(m, prompts, 8), expected)  # dropout off while generating
    assert m.training
    pieces = d.stream(m, CharTok(), "abc", max_new_tokens=3)
    next(pieces)
    assert torch.is_grad_enabled() and m.training  # nothing leaks into the caller between pieces


class CharTok:
    """The smallest tokenizer: five letters."""

    chars = "abcde"

    def encode(self, text):
        return [self.chars.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


def test_generate_and_stream_text(model):
    tok = CharTok()
    text = d.generate(model, tok, "abc", max_new_tokens=9)
    assert len(text) == 9 and text == tok.decode(d.greedy(model, torch.tensor([[0, 1, 2]]), 9)[0, 3:].tolist())
    assert "".join(d.stream(model, tok, "abc", max_new_tokens=9)) == text
    opts = dict(temperature=1.4, top_k=3, seed=4)
    sampled = d.generate(model, tok, "abc", "sample", 12, **opts)
    assert list(d.stream(model, tok, "abc", "sample", 12, **opts)) == list(sampled)
    beam = d.generate(model, tok, "abc", "beam", 6, num_beams=3)
    best = d.beam_search(model, torch.tensor([[0, 1, 2]]), 3, 6).sequences[0, 3:].tolist()
    assert beam == tok.decode(best)
    eos = tok.encode(text[4])[0]
    cut = d.generate(model, tok, "abc", max_new_tokens=9, eos_token_id=eos)
    assert cut == text[: text.index(text[4])]
    assert "".join(d.stream(model, tok, "abc", max_new_tokens=9, eos_token_id=eos)) == cut
    batch = d.generate(model, tok, ["abc", "dea"], max_new_tokens=4)
    assert batch == [text[:4], d.generate(model, tok, "dea", max_new_tokens=4)]


BAD_SEARCH_CALLS = [
    (lambda m, x: d.beam_search(m, x, 0, 5), "num_beams"),
    (lambda m, x: d.beam_search(m, x, 2, 5, num_return_sequences=3), "num_return_sequences"),
    (lambda m, x: d.beam_search(m, x, 2, -1), "max_new_tokens"),
    (lambda m, x: d.beam_search(m, x, 2, 5, early_stopping="sometimes"), "early_stopping"),
    (lambda m, x: d.beam_search(m, x, 2, 5, length_penalty=float("nan")), "length_penalty"),
    (lambda m, x: d.greedy(m, x, -1), "max_new_tokens"),
    (lambda m, x: d.greedy(m, x, 2.5), "max_new_tokens"),
    (lambda m, x: d.greedy(m, x[:, :0], 5), "input_ids"),
    (lambda m, x: d.greedy(m, x[:0], 5), "input_ids"),
    (lambda m, x: d.greedy(m, x[0], 5), "input_ids"),
    (lambda m, x: d.greedy(m, x.float(), 5), "input_ids"),
    (lambda m, x: d.greedy(m, x + 10, 5), "input_ids"),
    (lambda m, x: d.greedy(m, x, 5, eos_token_id=-1), "eos_token_id"),
    (lambda m, x: d.sample(m, x, 5, temperature=-0.5), "temperature"),
    (lambda m, x: d.sample(m, x, 5, top_p=0.0), "top_p"),
    (lambda m, x: d.sample(m, x, 5, top_p=1.01), "top_p"),
    (lambda m, x: d.sample(m, x, 5, top_k=0), "top_k"),
    (lambda m, x: d.sample(m, x, 5, min_p=1.5), "min_p"),
    (lambda m, x: d.sample(m, x, 5, typical_p=0.0), "typical_p"),
    (lambda m, x: d.sample(m, x, 5, repetition_penalty=0.0), "repetition_penalty"),
    (lambda m, x: d.sample(m, x, 5, no_repeat_ngram_size=0), "no_repeat_ngram_size"),
    (lambda m, x: d.sample(m, x, 5, seed=1, generator=torch.Generator()), "seed"),
    (lambda m, x: d.sample(m, x, 5, seed=[1, 2]), "seed"),
    (lambda m, x: d.sample(m, x, 5, seed=-3), "seed"),
    (lambda m, x: d.sample(m, x, 5, generator=7), "generator"),
    (lambda m, x: d.sample(m, x, 40, no_repeat_ngram_size=1), "no_repeat_ngram_size"),
    (lambda m, x: d.greedy(lambda ids: ids.float(), x, 5), "model"),
    (lambda m, x: d.generate(m, CharTok(), ""), "prompt"),
    (lambda m, x: d.generate(m, CharTok(), ["ab", [1, 2]]), "prompt"),
    (lambda m, x: d.generate(m, CharTok(), "abc", strategy="magic"), "strategy"),
    (lambda m, x: d.stream(m, CharTok(), "abc", strategy="beam"), "strategy"),
    (lambda m, x: d.stream(m, CharTok(), "abc", temperature=0.5), "options"),
]


@pytest.mark.parametrize("call,name", BAD_SEARCH_CALLS, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_SEARCH_CALLS)])
def test_search_bad_input_raises_one_sentence_naming_the_argument(model, prompts, call, name):
    with pytest.raises(ValueError) as err:
        call(model, prompts)
    message = str(err.value)
    assert message.startswith(name + " ") or message.startswith(name + ":") or message.startswith(name + "="), message
    assert "\n" not in message


def test_zero_new_tokens_returns_the_prompt(model, prompts):
    assert torch.equal(d.greedy(model, prompts, 0), prompts)
    assert torch.equal(d.sample(model, prompts, 0, seed=0), prompts)
    out = d.beam_search(model, prompts, 2, 0, num_return_sequences=2)
    assert torch.equal(out.sequences, prompts.repeat_interleave(2, 0)) and out.scores.tolist() == [0.0] * 6


def test_outputs_are_ordinary_tensors_that_can_be_trained_on(model, prompts):
    seen = []
    outputs = [
        d.greedy(model, prompts, 3, streamer=seen.append), d.sample(model, prompts, 3, seed=0),
        d.beam_search(model, prompts, 2, 3).sequences, d.beam_search(model, prompts, 2, 3).scores, *seen,
    ]
    assert not any(t.is_inference() for t in outputs)
    m = toy_gpt()
    m(outputs[0]).sum().backward()  # generated ids feed a training step
    assert m.tok_emb.weight.grad is not None


# ---- beam search with the repetition options ----------------------------------------------------------------


@torch.no_grad()
def test_one_beam_with_the_repetition_options_is_greedy_on_the_processed_log_probs(model, prompts):
    """With one beam, each step takes the argmax of log_softmax(logits) after the penalty and the ban: the
    rule written out here, row by row, for a batch of 3."""
    options = dict(repetition_penalty=1.8, no_repeat_ngram_size=2)
    out = d.beam_search(model, prompts, num_beams=1, max_new_tokens=10, **options).sequences
    seq = prompts.clone()
    for _ in range(10):
        log_probs = model(seq)[:, -1].log_softmax(-1)
        log_probs = d.no_repeat_ngram(d.repetition_penalty(log_probs, seq, 1.8), seq, 2)
        seq = torch.cat([seq, log_probs.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    assert not torch.equal(out, d.beam_search(model, prompts, num_beams=1, max_new_tokens=10).sequences)


@pytest.mark.parametrize("n", [2, 3])
def test_beam_search_with_no_repeat_ngram_size_never_repeats_an_ngram(model, prompts, n):
    def repeats(row):
        grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
        return len(grams) - len(set(grams))

    plain = d.beam_search(model, prompts, num_beams=3, max_new_tokens=15, num_return_sequences=3).sequences
    assert sum(repeats(r) for r in plain.tolist()) > 0  # the toy model does repeat itself: the ban has work
    out = d.beam_search(model, prompts, num_beams=3, max_new_tokens=15, num_return_sequences=3,
                        no_repeat_ngram_size=n)
    assert out.sequences.shape == (9, 18) and all(repeats(r) == 0 for r in out.sequences.tolist())


def test_padded_beam_search_with_the_repetition_options_gives_each_prompt_its_beams_alone(model):
    """Left padding is neither a seen token (penalty) nor part of an n-gram (ban); the caller's padding ids
    come back in the sequences."""
    rows = [torch.tensor([1, 2, 3, 1, 2]), torch.tensor([4, 0]), torch.tensor([2, 2, 1, 0])]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.full((width - len(r),), 3), r]) for r in rows])  # 3: a padding id the penalty must not see
    mask = torch.stack([torch.cat([torch.zeros(width - len(r)), torch.ones(len(r))]) for r in rows]).long()
    options = dict(num_beams=3, max_new_tokens=8, num_return_sequences=2, repetition_penalty=1.5,
                   no_repeat_ngram_size=2)
    out = d.beam_search(model, ids, attention_mask=mask, **options)
    assert torch.equal(out.sequences[::2, :width], ids)
    for i, r in enumerate(rows):
        alone = d.beam_search(model, r[None], **options)
        for j in range(2):
            assert torch.equal(out.sequences[2 * i + j, width:], alone.sequences[j, len(r):]), (i, j)
        torch.testing.assert_close(out.scores[2 * i : 2 * i + 2], alone.scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("option, value", [("repetition_penalty", 0.0), ("repetition_penalty", float("nan")),
                                           ("no_repeat_ngram_size", 0), ("no_repeat_ngram_size", 1.5)])
def test_beam_search_refuses_a_bad_repetition_option_in_one_sentence(model, prompts, option, value):
    with pytest.raises(ValueError, match=option):
        d.beam_search(model, prompts, num_beams=2, max_new_tokens=3, **{option: value})
