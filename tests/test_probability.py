import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from lmlab.models import GPT, GPTConfig
from lmlab.probability import NGramModel, perplexity, sequence_logprob, token_logprobs


def small_gpt(vocab_size=5, block_size=8):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():  # larger weights than the init, so the distributions are far from uniform
        for p in model.parameters():
            p.mul_(20.0)
    return model.eval()


def all_sequences(vocab_size, length):
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))


CORPUS = [[0, 1, 2, 1, 2], [2, 1], [3]]  # vocabulary of 4


# --- the chain rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [small_gpt(), NGramModel(5, n=3).fit([[0, 1, 2, 3, 4, 0, 1, 1, 2]])], ids=["gpt", "trigram"])
def test_chain_rule_distribution_over_all_sequences_sums_to_one(model):
    # for every first token a: sum over all (b, c) of P(b | a) P(c | a, b) = 1
    seqs = all_sequences(5, 3)  # 125 sequences, in one batch
    probs = sequence_logprob(model, seqs).double().exp()
    per_first_token = probs.view(5, 25).sum(dim=1)
    torch.testing.assert_close(per_first_token, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-5)
    assert probs.max() > 3 / 25  # far from uniform: the check is not passing because all are equal


def test_sequence_logprob_is_the_sum_of_token_logprobs():
    model, seqs = small_gpt(), all_sequences(5, 4)[::7]
    lp = token_logprobs(model, seqs)
    assert lp.shape == (len(seqs), 3) and (lp <= 0).all()
    torch.testing.assert_close(sequence_logprob(model, seqs), lp.sum(dim=1))
    # a longer prompt scores the continuation only: log P(w2, w3 | w0, w1)
    torch.testing.assert_close(sequence_logprob(model, seqs, prompt_len=2), lp[:, 1:].sum(dim=1))


def test_token_logprobs_match_the_softmax_of_the_logits():
    model, x = small_gpt(), all_sequences(5, 3)[10:14]
    probs = model(x).softmax(-1)
    expected = torch.stack([probs[b, t, x[b, t + 1]] for b in range(4) for t in range(2)]).view(4, 2).log()
    torch.testing.assert_close(token_logprobs(model, x), expected, rtol=1e-4, atol=1e-4)  # log of softmax vs log_softmax


@pytest.mark.parametrize("model", [small_gpt(), NGramModel(4, n=2).fit(CORPUS)], ids=["gpt", "bigram"])
def test_token_logprobs_of_a_batch_equal_each_row_alone(model):
    x = torch.randint(0, 4, (5, 7), generator=torch.Generator().manual_seed(3))
    batched = token_logprobs(model, x)
    for i in range(5):
        # batched and single-row matmuls round differently: ~1e-5 relative in float32, and small_gpt's
        # log-probs reach -150 (a difference of 3e-5 was seen with two threads); a bug differs by far more
        torch.testing.assert_close(batched[i : i + 1], token_logprobs(model, x[i : i + 1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_logits_from_a_model_raise_instead_of_a_nan_perplexity(bad):
    def broken(ids):  # row 1 at position 2 is broken, the rest is a uniform model
        logits = torch.zeros(*ids.shape, 5)
        logits[1, 2] = bad
        return logits

    x = torch.zeros(3, 6, dtype=torch.long)
    for fn in (token_logprobs, sequence_logprob, perplexity):
        with pytest.raises(ValueError, match="^model returned logits with NaN or \\+inf, or only -inf, for row 1 at position 2"):
            fn(broken, x)
    assert perplexity(broken, x[:, :3]) == pytest.approx(5.0)  # position 2 predicts token 3: not scored here


def test_a_single_minus_inf_logit_is_a_probability_of_zero_not_an_error():
    def banning(ids):  # token 1 is impossible
        logits = torch.zeros(*ids.shape, 4)
        logits[..., 1] = float("-inf")
        return logits

    lp = token_logprobs(banning, torch.tensor([[0, 1, 2], [2, 3, 0]]))
    assert lp[0, 0] == float("-inf") and lp[1].tolist() == pytest.approx([-math.log(3)] * 2)


def test_token_logprobs_restores_training_mode():
    model = small_gpt().train()
    token_logprobs(model, torch.zeros(2, 3, dtype=torch.long))
    assert model.training


# --- perplexity ----------------------------------------------------------------------------------


def uniform(vocab_size):
    return lambda ids: torch.zeros(*ids.shape, vocab_size)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    x = torch.randint(0, 7, (3, 10))
    assert perplexity(uniform(7), x) == pytest.approx(7.0)
    assert perplexity(NGramModel(7, n=2), x) == pytest.approx(7.0, rel=1e-6)  # no counts: add-k gives uniform


def test_perplexity_is_exp_of_mean_negative_logprob_over_the_batch():
    model, x = small_gpt(), all_sequences(5, 5)[::50]
    assert perplexity(model, x) == pytest.approx(math.exp(-token_logprobs(model, x).mean().item()), rel=1e-6)


def test_perplexity_of_unsmoothed_unseen_bigram_is_infinite():
    model = NGramModel(4, n=2, k=0).fit(CORPUS)
    assert perplexity(model, torch.tensor([[0, 1, 2]])) < math.inf
    assert perplexity(model, torch.tensor([[0, 3, 2]])) == math.inf  # 0 -> 3 never seen


# --- context limit and sliding window ------------------------------------------------------------


def test_input_longer_than_the_context_needs_a_stride():
    model = small_gpt(block_size=8)
    x = torch.randint(0, 5, (2, 20))
    with pytest.raises(ValueError, match="^input_ids has 20 positions.*stride"):
        token_logprobs(model, x)
    with pytest.raises(ValueError, match="^stride"):
        token_logprobs(model, x, stride=8)
    lp = token_logprobs(model, x, stride=3)
    assert lp.shape == (2, 19)
    torch.testing.assert_close(lp[:, :7], token_logprobs(model, x[:, :8]))  # first window: the exact conditionals


class WithContextLimit:
    """A model that refuses more than block_size tokens, like a GPT."""

    def __init__(self, model, block_size):
        self.model, self.config = model, SimpleNamespace(block_size=block_size)

    def __call__(self, input_ids):
        assert input_ids.shape[1] <= self.config.block_size
        return self.model(input_ids)


@pytest.mark.parametrize("stride", [1, 3, 7])
def test_sliding_window_is_exact_for_a_model_with_short_memory(stride):
    # a bigram model needs one token of context, which every window keeps: windowing changes nothing
    bigram = NGramModel(4, n=2).fit(CORPUS)
    windowed = WithContextLimit(bigram, block_size=8)
    x = torch.randint(0, 4, (3, 23), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(token_logprobs(windowed, x, stride=stride), token_logprobs(bigram, x))


# --- n-gram model --------------------------------------------------------------------------------


def test_bigram_counts_equal_a_hand_count():
    model = NGramModel(4, n=2).fit(CORPUS)
    expected = torch.zeros(4, 4, dtype=torch.long)
    # pairs: 0 1, 1 2, 2 1, 1 2 | 2 1 | (none in [3]); no pair crosses from one list into the next
    expected[0, 1], expected[1, 2], expected[2, 1] = 1, 2, 2
    assert torch.equal(model.counts, expected)
    assert torch.equal(model.tables[0], torch.tensor([1, 3, 3, 1]))  # unigram counts


def test_trigram_counts_equal_a_hand_count_and_tensor_input_works():
    model = NGramModel(4, n=3).fit(torch.tensor([[0, 1, 2, 1, 2], [1, 2, 1, 3, 3]]))
    expected = torch.zeros(4, 4, 4, dtype=torch.long)
    for a, b, c in [(0, 1, 2), (1, 2, 1), (2, 1, 2), (1, 2, 1), (2, 1, 3), (1, 3, 3)]:
        expected[a, b, c] += 1
    assert torch.equal(model.counts, expected)


def test_fit_replaces_previous_counts():
    model = NGramModel(4, n=2).fit(CORPUS).fit([0, 1])
    assert int(model.counts.sum()) == 1 and model.counts[0, 1] == 1


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0])
def test_add_k_smoothing_formula(k):
    model = NGramModel(4, n=2, k=k).fit(CORPUS)
    # after token 1: counts [0, 0, 2, 0], total 2
    assert model.prob([1], 2) == pytest.approx((2 + k) / (2 + 4 * k))
    assert model.prob([1], 0) == pytest.approx(k / (2 + 4 * k))
    assert model.prob([0, 5 - 4], 2) == model.prob([1], 2)  # only the last n - 1 tokens count
    assert model.prob([], 1) == pytest.approx((3 + k) / (8 + 4 * k))  # empty context: unigram
    assert sum(model.prob([3], w) for w in range(4)) == pytest.approx(1.0)  # 3 is never followed
    # the model's logits are these log-probabilities
    logits = model(torch.tensor([[1, 3], [0, 1]]))
    assert logits.shape == (2, 2, 4)
    for (b, t), ctx in {(0, 0): 1, (0, 1): 3, (1, 0): 0, (1, 1): 1}.items():
        for w in range(4):
            assert math.exp(logits[b, t, w]) == pytest.approx(model.prob([ctx], w), rel=1e-5, abs=1e-12)


def test_trigram_falls_back_to_bigram_counts_at_the_start():
    model = NGramModel(4, n=3, k=0.5).fit(CORPUS)
    logits = model(torch.tensor([[2, 1, 2], [1, 2, 1]]))
    for b, row in enumerate([[2, 1, 2], [1, 2, 1]]):
        for t in range(3):
            for w in range(4):
                assert math.exp(logits[b, t, w]) == pytest.approx(model.prob(row[: t + 1], w), rel=1e-5)
    assert model.prob([2], 1) != pytest.approx(model.prob([0, 2], 1))  # the two orders do differ here


def test_unigram_model_ignores_the_context():
    model = NGramModel(4, n=1, k=0).fit(CORPUS)
    logits = model(torch.tensor([[0, 1, 2], [3, 3, 3]]))
    expected = torch.tensor([1, 3, 3, 1]) / 8
    torch.testing.assert_close(logits.exp(), expected.expand(2, 3, 4))


@pytest.mark.parametrize(
    "kwargs, name",
    [({"vocab_size": 0}, "vocab_size"), ({"vocab_size": 4, "n": 0}, "n"), ({"vocab_size": 4, "k": -1}, "k"),
     ({"vocab_size": 5000, "n": 3}, "n"), ({"vocab_size": 4, "k": float("nan")}, "k")],
)
def test_ngram_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        NGramModel(**kwargs)


@pytest.mark.parametrize("ids", [[[0, 4]], [0, "a"], [], torch.tensor([[0, 1]]).float(), "0 1"])
def test_ngram_bad_fit_input(ids):
    with pytest.raises(ValueError, match="^ids"):
        NGramModel(4).fit(ids)


def test_ngram_bad_call_and_prob_input():
    model = NGramModel(4).fit(CORPUS)
    with pytest.raises(ValueError, match="^input_ids"):
        model(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="^context and token"):
        model.prob([0], 4)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_to_probability_functions():
    model = small_gpt()
    with pytest.raises(ValueError, match="^input_ids must hold at least 2"):
        token_logprobs(model, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="^input_ids"):
        perplexity(model, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="^input_ids"):
        token_logprobs(uniform(3), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="^prompt_len"):
        sequence_logprob(model, torch.zeros(2, 3, dtype=torch.long), prompt_len=3)
    with pytest.raises(ValueError, match="^model"):
        token_logprobs(lambda ids: torch.zeros(ids.shape[0], 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="^stride"):
        token_logprobs(uniform(3), torch.zeros(2, 3, dtype=torch.long), stride=1)  # no context limit
