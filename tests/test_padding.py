"""Batches of prompts of unequal lengths: left padding plus an attention mask gives each prompt exactly
what it gets alone, for GPT and Llama, in the model, greedy, sample, beam_search, generate and
token_logprobs; and bad masks or prompt lists are one sentence."""

import pytest
import torch

from lmlab import decoding, pretrained
from lmlab.llama import Llama, LlamaConfig
from lmlab.models import GPT, GPTConfig
from lmlab.probability import token_logprobs

VOCAB = 50
PAD = 7  # any id: padded positions are masked, so these tests pad with an id that also occurs in prompts


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


def tiny_llama():
    torch.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                             intermediate_size=48, rope_theta=1000.0)).eval()


def _scaled(model):
    # random init gives logits of order 0.1 where every token is nearly equally likely: scale the
    # embedding (the tied head too) so that logits are of order 10 and a padding leak would show
    with torch.no_grad():
        model.tok_emb.weight.mul_(15)
    return model


@pytest.fixture(scope="module", params=["gpt", "llama"])
def model(request):
    return _scaled(tiny_gpt() if request.param == "gpt" else tiny_llama())


def prompts(seed=0, lengths=(3, 9, 1, 6)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(VOCAB, (n,), generator=g) for n in lengths]


def pad_left(rows, pad_id=PAD):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    return ids, mask


# ---------------------------------------------------------------------------------------- the model
def test_padded_logits_equal_each_prompt_alone(model):
    rows = prompts()
    ids, mask = pad_left(rows)
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        for i, r in enumerate(rows):
            alone = model(r[None])[0]
            assert alone.abs().max() > 3  # logits of order 10: the tolerance below is relative to that
            torch.testing.assert_close(out[i, ids.shape[1] - len(r) :], alone, atol=1e-4, rtol=1e-4)


def test_the_cache_remembers_each_rows_padding_for_the_steps_that_follow(model):
    rows = prompts(1)
    ids, mask = pad_left(rows)
    nxt = torch.randint(VOCAB, (len(rows), 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = model.new_cache(len(rows))
        model(ids, cache=cache, attention_mask=mask)
        steps = torch.cat([model(nxt[:, t : t + 1], cache=cache) for t in range(5)], dim=1)
        cache.reorder(torch.tensor([3, 0, 0, 2]))  # rows move (beam search): their padding moves with them
        moved = model(nxt[:, :1], cache=cache)[:, 0]
        for i, r in enumerate(rows):
            alone = model(torch.cat([r, nxt[i]])[None])[0, len(r) :]
            torch.testing.assert_close(steps[i], alone, atol=1e-4, rtol=1e-4)
        for i, src in enumerate([3, 0, 0, 2]):
            alone = model(torch.cat([rows[src], nxt[src], nxt[i, :1]])[None])[0, -1]
            torch.testing.assert_close(moved[i], alone, atol=1e-4, rtol=1e-4)


def test_an_all_ones_mask_is_the_unmasked_model(model):
    ids = torch.randint(VOCAB, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=torch.ones_like(ids)), model(ids))


# ---------------------------------------------------------------------------------------- the searches
def test_padded_greedy_gives_each_prompt_its_tokens_alone(model):
    rows = prompts(4)
    ids, mask = pad_left(rows)
    for use_cache in (True, False):
        out = decoding.greedy(model, ids, 12, attention_mask=mask, use_cache=use_cache)
        assert torch.equal(out[:, : ids.shape[1]], ids)  # the caller's padding comes back as it was
        for i, r in enumerate(rows):
            alone = decoding.greedy(model, r[None], 12, use_cache=use_cache)[0, len(r) :]
            assert torch.equal(out[i, ids.shape[1] :], alone), (i, use_cache)


def test_padded_sampling_with_a_seed_per_row_gives_each_prompt_its_tokens_alone(model):
    rows = prompts(5)
    ids, mask = pad_left(rows)
    seeds = [11, 12, 13, 14]
    for options in (dict(temperature=0.9, top_k=20, repetition_penalty=1.3), dict(temperature=0, no_repeat_ngram_size=2)):
        out = decoding.sample(model, ids, 15, attention_mask=mask, seed=seeds, **options)
        for i, r in enumerate(rows):
            alone = decoding.sample(model, r[None], 15, seed=seeds[i], **options)[0, len(r) :]
            assert torch.equal(out[i, ids.shape[1] :], alone), (i, options)


def test_padded_beam_search_gives_each_prompt_its_beams_alone(model):
    rows = prompts(6, lengths=(2, 7, 4))
    ids, mask = pad_left(rows)
    out = decoding.beam_search(model, ids, num_beams=3, max_new_tokens=8, attention_mask=mask, num_return_sequences=2)
    for i, r in enumerate(rows):
        alone = decoding.beam_search(model, r[None], num_beams=3, max_new_tokens=8, num_return_sequences=2)
        for j in range(2):
            assert torch.equal(out.sequences[2 * i + j, ids.shape[1] :], alone.sequences[j, len(r) :]), (i, j)
        torch.testing.assert_close(out.scores[2 * i : 2 * i + 2], alone.scores, atol=1e-4, rtol=1e-4)


def test_padded_token_logprobs_equal_each_text_alone(model):
    rows = prompts(7, lengths=(5, 12, 2))
    ids, mask = pad_left(rows)
    scores = token_logprobs(model, ids, attention_mask=mask)
    for i, r in enumerate(rows):
        alone = token_logprobs(model, r[None])[0]
        start = ids.shape[1] - len(r)
        torch.testing.assert_close(scores[i, start:], alone, atol=1e-4, rtol=1e-4)
        assert (scores[i, :start] == 0).all()  # padding and the first token have no conditional


class Tok:
    """Characters a..z as ids 1..26; a pad id that is a real token, to show it does not matter."""

    pad_token_id = 3

    def encode(self, text):
        return [ord(c) - 96 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 96) if 1 <= i <= 26 else "?" for i in ids)


def test_generate_takes_a_list_of_prompts_of_unequal_lengths(model):
    texts = ["ab", "hellothere", "z", "abcdef"]
    for strategy, options in [("greedy", {}), ("sample", {"temperature": 0.8}), ("beam", {"num_beams": 2})]:
        seeds = {"seed": [1, 2, 3, 4]} if strategy == "sample" else {}
        batch = decoding.generate(model, Tok(), texts, strategy, 10, **options, **seeds)
        alone = [decoding.generate(model, Tok(), t, strategy, 10, **options, **({"seed": s} if seeds else {}))
                 for t, s in zip(texts, [1, 2, 3, 4])]
        assert batch == alone, strategy


def test_shakespeare_char_padded_batch_equals_each_prompt_alone():
    model, tok = pretrained.load("shakespeare-char")
    texts = ["ROMEO:", "First Citizen:\nBefore we", "O"]
    assert decoding.generate(model, tok, texts, "greedy", 40) == [decoding.generate(model, tok, t, "greedy", 40) for t in texts]
    seeds = [5, 6, 7]
    batch = decoding.generate(model, tok, texts, "sample", 40, temperature=0.8, top_p=0.9, seed=seeds)
    assert batch == [decoding.generate(model, tok, t, "sample", 40, temperature=0.8, top_p=0.9, seed=s)
                     for t, s in zip(texts, seeds)]


@pytest.mark.slow
def test_smollm2_padded_batch_equals_each_prompt_alone():
    model, tok = pretrained.load("smollm2-135m", progress=False)
    texts = ["The cat sat on the", "Paris is the capital of", "Once upon a time, in a small village by the sea,"]
    greedy = decoding.generate(model, tok, texts, "greedy", 20)
    assert greedy == [decoding.generate(model, tok, t, "greedy", 20) for t in texts]
    seeds = [0, 1, 2]
    batch = decoding.generate(model, tok, texts, "sample", 20, temperature=0.8, top_k=50, seed=seeds)
    assert batch == [decoding.generate(model, tok, t, "sample", 20, temperature=0.8, top_k=50, seed=s)
                     for t, s in zip(texts, seeds)]
    rows = [torch.tensor(tok.encode(t)) for t in texts]
    ids, mask = pad_left(rows, pad_id=0)
    scores = token_logprobs(model, ids, attention_mask=mask)
    for i, r in enumerate(rows):
        torch.testing.assert_close(scores[i, ids.shape[1] - len(r) :], token_logprobs(model, r[None])[0],
                                   atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------- bad input
def _bad_masks(ids):
    ones = torch.ones_like(ids)
    right = ones.clone()
    right[0, -1] = 0
    empty = ones.clone()
    empty[1] = 0
    twos = ones * 2
    return [
        (ones[:, :-1], "shape"),
        (ones.float(), "integer"),
        (twos, "only 0"),
        (right, "right padding"),
        (empty, "padding only"),
        ([[1, 1]], "tensor"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_a_bad_attention_mask_is_one_sentence_naming_it(model, case):
    ids = torch.randint(VOCAB, (2, 4), generator=torch.Generator().manual_seed(8))
    mask, words = _bad_masks(ids)[case]
    calls = [lambda: model(ids, attention_mask=mask),
             lambda: decoding.greedy(model, ids, 3, attention_mask=mask),
             lambda: decoding.sample(model, ids, 3, attention_mask=mask, seed=0),
             lambda: decoding.beam_search(model, ids, 2, 3, attention_mask=mask),
             lambda: token_logprobs(model, ids, attention_mask=mask)]
    for call in calls:
        with pytest.raises(ValueError, match="attention_mask") as err:
            call()
        assert words in str(err.value) and str(err.value).count(". ") == 0


def test_padding_after_the_first_cached_call_is_refused(model):
    ids = torch.randint(VOCAB, (2, 4), generator=torch.Generator().manual_seed(9))
    cache = model.new_cache(2)
    with torch.no_grad():
        model(ids, cache=cache)
        with pytest.raises(ValueError, match="attention_mask may pad only the first call"):
            model(ids, cache=cache, attention_mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))


def test_a_padded_batch_refuses_what_it_cannot_do(model):
    ids, mask = pad_left(prompts(10, lengths=(2, 5)))
    with pytest.raises(ValueError, match="stride"):
        token_logprobs(model, ids, stride=2, attention_mask=mask)

    def plain(input_ids):  # a model that knows nothing of padding
        return model(input_ids)

    with pytest.raises(ValueError, match="takes no attention_mask"):
        decoding.greedy(plain, ids, 3, attention_mask=mask)


@pytest.mark.parametrize("prompt, words", [(["ab", [1, 2]], "list of strings"), (["ab", ""], "empty string"),
                                           ([], "empty list")])
def test_a_bad_list_of_prompts_is_one_sentence(model, prompt, words):
    with pytest.raises(ValueError, match="prompt") as err:
        decoding.generate(model, Tok(), prompt)
    assert words in str(err.value)
