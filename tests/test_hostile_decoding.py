"""lmlab.decoding under hostile input: rows that must not leak into each other, NaN from a model,
probabilities that underflow, half precision, absurd sizes, and streaming text that splits characters."""

import re

import pytest
import torch

from lmlab import decoding as d
from lmlab.models import GPT, GPTConfig
from lmlab.tokenizers import BPETokenizer, CharTokenizer, WordPieceTokenizer

NEG_INF, INF, NAN = float("-inf"), float("inf"), float("nan")


def kept(logits):
    return logits > NEG_INF


def toy_gpt(vocab=5, block_size=64, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model.eval()


def one_sentence_naming(err, name):
    message = str(err.value)
    assert message.startswith(name), message
    assert "\n" not in message and ". " not in message, message


# --- 1. temperature works row by row ---------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1e-30])
def test_a_row_that_overflows_becomes_greedy_alone(temperature):
    logits = torch.tensor([[1.0, 2.0, 3.0], [3e38, -3e38, 1e38], [-3e38, -3.3e38, -3.1e38], [0.5, 0.0, -1.0]])
    out = d.apply_temperature(logits, temperature)
    # rows 1 and 2 overflow (to +inf, and every logit to -inf) at 0.5: their limit is greedy
    assert out[1].tolist() == [0.0, NEG_INF, NEG_INF] and out[2].tolist() == [0.0, NEG_INF, NEG_INF]
    for i in (0, 3):  # the ordinary rows are divided, whatever the others hold
        assert torch.equal(out[i], logits[i] / temperature)


@pytest.mark.parametrize("bad,what", [(INF, "+inf"), (NAN, "NaN")])
def test_nan_or_inf_logits_raise_and_name_the_row(bad, what):
    logits = torch.zeros(3, 4)
    logits[1, 2] = bad
    for fn in (lambda x: d.apply_temperature(x, 0.7), lambda x: d.apply_temperature(x, 0),
               lambda x: d.top_k_filter(x, 2), lambda x: d.top_p_filter(x, 0.9), lambda x: d.min_p_filter(x, 0.1),
               lambda x: d.typical_filter(x, 0.9), lambda x: d.filter_logits(x, temperature=0.8),
               lambda x: d.repetition_penalty(x, torch.zeros(3, 2, dtype=torch.long), 1.2)):
        with pytest.raises(ValueError, match=rf"^logits contain {re.escape(what)} \(row 1\)") as err:
            fn(logits)
        one_sentence_naming(err, "logits")


def test_a_row_with_every_token_removed_raises_instead_of_becoming_token_0():
    logits = torch.tensor([[1.0, 2.0, 3.0], [NEG_INF, NEG_INF, NEG_INF]])
    for t in (0, 0.8, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"^logits row 1 has every token removed") as err:
            d.apply_temperature(logits, t)
        one_sentence_naming(err, "logits")
    with pytest.raises(ValueError, match="^logits row 1"):
        d.top_p_filter(logits, 0.5)


def bigram(ids, vocab=3):
    """Logits that depend on the last token only: after token a, a + 1 is likely, a + 2 less so."""
    table = torch.tensor([[1.0, 3.0, 2.0], [2.0, 1.0, 3.0], [3.0, 2.0, 1.0]])
    return table[ids]


@pytest.mark.parametrize("temperature", [0, 0.8, 1.0, 1.5])
def test_no_repeat_ngram_bans_at_every_temperature_and_a_full_ban_raises(temperature):
    # a vocabulary of 3 has 9 bigrams: banning repeats runs out of tokens within 10 steps, in every row
    seen = []
    prompts = torch.tensor([[0], [1], [2], [0]])
    with pytest.raises(ValueError, match=r"^no_repeat_ngram_size=2 has banned every token of row \d") as err:
        d.sample(bigram, prompts, 20, temperature=temperature, no_repeat_ngram_size=2, seed=0, streamer=seen.append)
    one_sentence_naming(err, "no_repeat_ngram_size")
    rows = torch.cat([prompts, torch.stack(seen, 1)], 1).tolist()
    for row in rows:  # what came out before the error repeats no bigram
        pairs = list(zip(row, row[1:]))
        assert len(pairs) == len(set(pairs)), (temperature, row)


@pytest.mark.parametrize("temperature", [0, 0.8, 1.0, 1.5])
def test_no_repeat_ngram_keeps_banning_in_a_longer_run(temperature):
    model = toy_gpt(vocab=17, seed=1)
    prompts = torch.tensor([[1, 2, 3], [4, 4, 0], [2, 2, 1]])
    out = d.sample(model, prompts, 30, temperature=temperature, no_repeat_ngram_size=2, seed=3)
    for row in out.tolist():
        pairs = list(zip(row, row[1:]))
        assert len(pairs) == len(set(pairs)), (temperature, row)


def test_filter_logits_raises_on_a_fully_banned_row_at_any_temperature():
    logits = torch.zeros(2, 3)
    ids = torch.tensor([[0, 0, 1, 0, 2, 0], [0, 1, 2, 0, 1, 2]])  # row 0 ends in 0: 0 0, 0 1 and 0 2 were seen
    for t in (0, 0.8, 1.0):
        with pytest.raises(ValueError, match="^no_repeat_ngram_size=2 has banned every token of row 0"):
            d.filter_logits(logits, ids, temperature=t, no_repeat_ngram_size=2)
    with pytest.raises(ValueError, match="^n=2 has banned every token of row 0"):
        d.no_repeat_ngram(logits, ids, 2)


# --- 2. NaN from a model -------------------------------------------------------------------------


class NaNAfter:
    """A model that returns NaN logits for row `row` once the sequence is `length` long (a diverged model)."""

    def __init__(self, row=1, length=4, value=NAN, vocab=5):
        self.row, self.length, self.value, self.vocab = row, length, value, vocab

    def __call__(self, ids):
        logits = torch.arange(self.vocab, dtype=torch.float32).expand(*ids.shape, self.vocab).clone()
        if ids.shape[1] >= self.length:
            logits[self.row, -1] = self.value
        return logits


class Chars:
    chars = "abcde"

    def encode(self, text):
        return [self.chars.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


SEARCHES = {
    "greedy": lambda m, x: d.greedy(m, x, 6),
    "sample": lambda m, x: d.sample(m, x, 6, seed=0),
    "sample_filtered": lambda m, x: d.sample(m, x, 6, temperature=0.7, top_k=3, top_p=0.9, min_p=0.05, seed=0),
    "sample_t0": lambda m, x: d.sample(m, x, 6, temperature=0, seed=0),
    "beam": lambda m, x: d.beam_search(m, x, 2, 6),
    "generate": lambda m, x: d.generate(m, Chars(), ["ab", "cd"], "sample", 6, seed=0),
    "stream": lambda m, x: list(d.stream(m, Chars(), "ab", "greedy", 6)),
}


@pytest.mark.parametrize("name", SEARCHES)
@pytest.mark.parametrize("value,what", [(NAN, "NaN"), (INF, r"\+inf"), (NEG_INF, "-inf for every token")])
def test_nan_from_a_model_raises_instead_of_emitting_token_0(name, value, what):
    row = 0 if name == "stream" else 1
    model = NaNAfter(row=row, length=4, value=value)
    with pytest.raises(ValueError, match=f"^model returned {what}") as err:
        SEARCHES[name](model, torch.tensor([[0, 1], [2, 3]]))
    one_sentence_naming(err, "model")


def test_nan_is_caught_through_the_kv_cache_too():
    model = toy_gpt()
    with torch.no_grad():
        model.blocks[1].mlp.fc.weight[0, 0] = NAN
    for use_cache in (True, False):
        with pytest.raises(ValueError, match="^model returned NaN"):
            d.greedy(model, torch.tensor([[1, 2], [3, 4]]), 3, use_cache=use_cache)


# --- 3. underflow, keep and half precision ---------------------------------------------------------


def test_min_tokens_to_keep_never_keeps_a_removed_token_when_probabilities_underflow():
    # exp(-200) underflows to 0 in float32: the real tokens tie with the removed (-inf) ones in probability
    logits = torch.tensor([
        [0.0, NEG_INF, -200.0, -300.0, NEG_INF, -250.0],
        [NEG_INF, -300.0, NEG_INF, 0.0, -200.0, -250.0],
        [-250.0, NEG_INF, -200.0, NEG_INF, -300.0, 0.0],
    ])
    best3 = [[0, 2, 5], [3, 4, 5], [0, 2, 5]]  # the three largest logits of each row
    for out in (d.top_p_filter(logits, 0.5, min_tokens_to_keep=3), d.min_p_filter(logits, 0.5, min_tokens_to_keep=3),
                d.top_k_filter(logits, 1, min_tokens_to_keep=3), d.typical_filter(logits, 0.5, min_tokens_to_keep=3)):
        assert [kept(row).nonzero().flatten().tolist() for row in out] == best3
        assert torch.equal(out[kept(out)], logits[kept(out)])


@pytest.mark.parametrize("name,fn", [
    ("top_p", lambda x, p, keep: d.top_p_filter(x, p, keep)),
    ("min_p", lambda x, p, keep: d.min_p_filter(x, p, keep)),
    ("typical", lambda x, p, keep: d.typical_filter(x, p, keep)),
    ("top_k", lambda x, p, keep: d.top_k_filter(x, max(1, int(p * 20)), keep)),
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_are_filtered_as_their_float32_values(name, fn, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 40, generator=g) * 4 + 8).to(dtype)  # large logits: coarse half-precision spacing
    x32 = logits.float()
    for p in torch.linspace(0.02, 0.98, 49).tolist():
        for keep in (1, 3):
            out = fn(logits, p, keep)
            assert out.dtype == dtype
            assert torch.equal(kept(out), kept(fn(x32, p, keep))), (name, p, keep)


def test_repetition_penalty_never_overflows_a_finite_logit():
    logits = torch.tensor([[1e10, 0.0, 1.0], [-1e10, -1e10, -1e10], [2.0, 1.0, 0.0]])
    ids = torch.tensor([[0, 0], [0, 1], [0, 1]])
    for penalty in (1e-30, 1e30):
        out = d.repetition_penalty(logits, ids, penalty)
        assert out.isfinite().all(), penalty
        assert out[2, 2] == 0.0 and out[1, 2] == -1e10  # unseen tokens are untouched
    # a tiny penalty turns a huge logit into the largest float, and sampling still works (no NaN)
    out = d.sample(lambda ids: torch.tensor([[1e10, 0.0, 1.0]]).expand(*ids.shape, 3), torch.tensor([[0], [1]]), 5,
                   repetition_penalty=1e-30, seed=0)
    assert out.shape == (2, 6) and out[:, 1:].eq(0).all()
    banned = d.repetition_penalty(torch.tensor([[NEG_INF, 0.0, 1.0]]), torch.tensor([[0]]), 1e-30)
    assert banned[0, 0] == NEG_INF  # a removed token stays removed


# --- 5. absurd sizes and values -------------------------------------------------------------------


BAD_CALLS = [
    (lambda m, x: d.greedy(m, x, 10**15), "max_new_tokens"),
    (lambda m, x: d.sample(m, x, 10**15, seed=0), "max_new_tokens"),
    (lambda m, x: d.beam_search(m, x, 2, 10**15), "max_new_tokens"),
    (lambda m, x: d.generate(m, Chars(), "ab", max_new_tokens=10**15), "max_new_tokens"),
    (lambda m, x: d.stream(m, Chars(), "ab", max_new_tokens=10**15), "max_new_tokens"),
    (lambda m, x: d.greedy(m, x[:1].expand(1000, -1), 400_000), "max_new_tokens"),  # 4e8 ids: 3 GiB
    (lambda m, x: d.beam_search(m, x, 10**11, 5), "num_beams"),
    (lambda m, x: d.beam_search(m, x, 10_001, 5), "num_beams"),
    (lambda m, x: d.beam_search(m, x[:1].expand(1000, -1), 1000, 300), "max_new_tokens"),  # 3e8 ids
    (lambda m, x: d.beam_search(lambda ids: torch.zeros(*ids.shape, 10**6), x, 100, 5), "num_beams"),
    (lambda m, x: d.greedy(m, x, True), "max_new_tokens"),
    (lambda m, x: d.beam_search(m, x, True, 5), "num_beams"),
    (lambda m, x: d.beam_search(m, x, 2, 5, early_stopping=1), "early_stopping"),
    (lambda m, x: d.beam_search(m, x, 2, 5, num_return_sequences=True), "num_return_sequences"),
    (lambda m, x: d.sample(m, x, 5, top_k=True), "top_k"),
    (lambda m, x: d.sample(m, x, 5, seed=True), "seed"),
    (lambda m, x: d.sample(m, x, 5, seed=2**64), "seed"),
    (lambda m, x: d.sample(m, x, 5, no_repeat_ngram_size=True), "no_repeat_ngram_size"),
    (lambda m, x: d.greedy(m, x, 5, eos_token_id=True), "eos_token_id"),
    (lambda m, x: d.greedy(m, x, 5, eos_token_id=10**30), "eos_token_id"),  # overflowed int64 inside torch
    (lambda m, x: d.beam_search(m, x, 2, 5, eos_token_id=2**63), "eos_token_id"),
    (lambda m, x: d.beam_search(m, x, 2, 5, length_penalty=1e300), "length_penalty"),  # OverflowError
    (lambda m, x: d.beam_search(m, x, 2, 5, length_penalty=-11.0), "length_penalty"),  # ZeroDivisionError at -1e300
    (lambda m, x: d.top_k_filter(torch.zeros(2, 3), 2, min_tokens_to_keep=True), "min_tokens_to_keep"),
    (lambda m, x: d.generate(m, Chars(), "ab", "greedy", 5, num_beams=4), "options"),  # was a TypeError
    (lambda m, x: d.generate(m, Chars(), "ab", "beam", 5, temperature=0.5), "options"),
    (lambda m, x: d.generate(m, Chars(), "ab", "sample", 5, input_ids=x), "options"),
    (lambda m, x: d.stream(m, Chars(), "ab", "sample", 5, num_beams=2), "options"),
]
for _name in ("temperature", "top_p", "min_p", "typical_p", "repetition_penalty"):
    for _value in (NAN, INF, NEG_INF):
        BAD_CALLS.append((lambda m, x, n=_name, v=_value: d.sample(m, x, 5, **{n: v}), _name))
for _value in (NAN, INF, NEG_INF):
    BAD_CALLS.append((lambda m, x, v=_value: d.beam_search(m, x, 2, 5, length_penalty=v), "length_penalty"))
    BAD_CALLS.append((lambda m, x, v=_value: d.filter_logits(torch.zeros(2, 3), temperature=v), "temperature"))


@pytest.mark.parametrize("call,name", BAD_CALLS, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_CALLS)])
def test_absurd_sizes_and_values_are_refused_in_one_sentence(call, name):
    model, x = toy_gpt(), torch.tensor([[1, 2, 3], [3, 2, 1], [0, 0, 0]])
    with pytest.raises(ValueError) as err:
        call(model, x)
    one_sentence_naming(err, name)


def test_large_but_sane_requests_still_run():
    model = toy_gpt(vocab=5, block_size=8)
    x = torch.tensor([[1, 2]])
    assert d.greedy(model, x, 40).shape == (1, 42)  # far past block_size: the window slides
    assert d.beam_search(model, x, 125, 3, num_return_sequences=125).sequences.shape == (125, 5)  # 125 = 5 ** 3


# --- 7. streaming text ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def byte_bpe():
    # trained on ASCII only: every accented letter and emoji is spelled from single bytes, so a token
    # holds part of a character and decoding one token alone gives U+FFFD
    return BPETokenizer.train("the cat sat on the mat and the dog sat on the log " * 20, 300)


class Scripted:
    """A model that emits a fixed list of tokens, one per step (logits: 0 for it, -10 elsewhere)."""

    def __init__(self, tokens, vocab):
        self.tokens, self.vocab, self.start = tokens, vocab, None

    def __call__(self, ids):
        if self.start is None:
            self.start = ids.shape[1]
        logits = torch.full((*ids.shape, self.vocab), -10.0)
        step = ids.shape[1] - self.start
        logits[:, -1, self.tokens[min(step, len(self.tokens) - 1)]] = 0.0
        return logits


@pytest.mark.parametrize("text", ["café ☕ naïve 😀😀 über", "😀", "é", "a\u0301 — ünïcödé ✓\n🎉x"])
def test_stream_pieces_join_to_generate_and_never_split_a_character(byte_bpe, text):
    tokens = byte_bpe.encode(text)
    assert any("\ufffd" in byte_bpe.decode([t]) for t in tokens)  # pieces really split characters
    pieces = list(d.stream(Scripted(tokens, byte_bpe.vocab_size), byte_bpe, "the cat", max_new_tokens=len(tokens)))
    generated = d.generate(Scripted(tokens, byte_bpe.vocab_size), byte_bpe, "the cat", max_new_tokens=len(tokens))
    assert "".join(pieces) == generated == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) > 1 or len(text) == 1


def test_stream_of_a_sampled_byte_level_model_equals_generate(byte_bpe):
    # a random model produces arbitrary byte sequences, invalid UTF-8 included: still the same text
    model = toy_gpt(vocab=byte_bpe.vocab_size, seed=2)
    for seed in range(3):
        opts = dict(temperature=1.5, seed=seed)
        pieces = list(d.stream(model, byte_bpe, "the", "sample", 40, **opts))
        assert "".join(pieces) == d.generate(model, byte_bpe, "the", "sample", 40, **opts)


def test_stream_with_a_char_tokenizer_and_eos():
    tok = CharTokenizer.train("abcdé😀 \n")
    model = toy_gpt(vocab=tok.vocab_size, seed=4)
    for eos in (None, tok.token_to_id(" ")):
        pieces = list(d.stream(model, tok, "ab😀", "sample", 30, eos_token_id=eos, seed=1))
        assert "".join(pieces) == d.generate(model, tok, "ab😀", "sample", 30, eos_token_id=eos, seed=1)
        assert all(len(p) == 1 for p in pieces)  # one character per token, as soon as it is generated


class CountingDecode:
    """Wraps a tokenizer and counts the ids it is asked to decode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded = tokenizer, 0

    def encode(self, text):
        return self.tokenizer.encode(text)

    def decode(self, ids):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids)


def test_stream_decodes_a_short_window_per_token_not_the_whole_text():
    tok = CountingDecode(CharTokenizer.train("abcde"))
    model = toy_gpt(vocab=5)
    n = 200
    pieces = list(d.stream(model, tok, "ab", "sample", n, seed=0))
    assert len("".join(pieces)) == n
    assert tok.decoded <= 4 * n  # whole-text decoding would decode n * (n + 1) / 2 ids


def test_stream_with_wordpiece_joins_continuation_pieces_as_generate_does():
    tok = WordPieceTokenizer.train("playing player played plays the game games gamer " * 20, 60)
    text_ids = tok.encode("playing the games played")
    assert any(tok.id_to_token(i).startswith("##") for i in text_ids)
    for tokens in (text_ids, text_ids[1:]):  # the second starts with a ## piece
        pieces = list(d.stream(Scripted(tokens, tok.vocab_size), tok, "the", max_new_tokens=len(tokens)))
        assert "".join(pieces) == d.generate(Scripted(tokens, tok.vocab_size), tok, "the", max_new_tokens=len(tokens))
