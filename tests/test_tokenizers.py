import json
import random

import pytest
import torch

from lmlab import tokenizers
from lmlab.corpus import shakespeare
from lmlab.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordPieceTokenizer

SAMPLE = "HAMLET:\nTo be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer\n"


@pytest.fixture(scope="module")
def corpus():
    return shakespeare("all")


@pytest.fixture(scope="module")
def char():
    return CharTokenizer.train(shakespeare("train"))


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(shakespeare("train"), 1000, special_tokens=("[PAD]", "[MASK]"))


@pytest.fixture(scope="module")
def wordpiece():
    return WordPieceTokenizer.train(shakespeare("train"), 1000)


@pytest.fixture(scope="module")
def all_three(char, bpe, wordpiece):
    return {"char": char, "bpe": bpe, "wordpiece": wordpiece}


def test_char_vocabulary_is_the_sorted_characters(char):
    text = shakespeare("train")
    assert char.vocab == sorted(set(text))
    assert char.vocab_size == len(set(text)) and char.special_ids == {}
    assert char.encode("ab") == [char.vocab.index("a"), char.vocab.index("b")]
    assert char.tokens("to be") == list("to be")


def test_char_round_trip_over_the_whole_corpus(char, corpus):
    ids = char.encode(corpus)
    assert len(ids) == len(corpus)
    assert char.decode(ids) == corpus


@pytest.mark.slow  # a few seconds alone, more on a busy machine
def test_bpe_round_trip_over_the_whole_corpus(bpe, corpus):
    ids = bpe.encode(corpus)
    assert len(ids) < len(corpus) / 2  # merges really compress
    assert bpe.decode(ids) == corpus


def test_bpe_round_trip_is_exact_on_any_text(bpe):
    text = "naïve café — 😀\ttabs\r\n  two spaces\n\n\nand [MASK] inside"
    assert bpe.decode(bpe.encode(text)) == text


def test_long_text_gives_the_same_ids_as_one_library_call(bpe, wordpiece):
    text = shakespeare("val")[:60_000]  # long enough to be encoded in several pieces
    assert bpe.encode(text) == bpe.hf.encode(text, add_special_tokens=False).ids
    assert wordpiece.encode(text) == wordpiece.hf.encode(text, add_special_tokens=False).ids


@pytest.mark.slow
def test_wordpiece_round_trip_keeps_every_non_space_character(wordpiece, corpus):
    ids = wordpiece.encode(corpus)
    assert wordpiece.special_ids["[UNK]"] not in ids  # every character of the corpus is in the vocabulary
    decoded = wordpiece.decode(ids)
    assert "".join(decoded.split()) == "".join(corpus.split())
    assert wordpiece.decode(wordpiece.encode("To be, or not")) == "To be , or not"


def test_wordpiece_maps_a_word_with_an_unseen_character_to_unk(wordpiece):
    unk = wordpiece.special_ids["[UNK]"]
    assert wordpiece.encode("to café") == [wordpiece.token_to_id("to"), unk]


def test_special_tokens_take_the_first_ids_and_are_matched_in_text(bpe, wordpiece):
    assert bpe.special_ids == {"[PAD]": 0, "[MASK]": 1}
    assert wordpiece.special_ids == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert bpe.vocab_size == 1000
    for tok in (bpe, wordpiece):
        ids = tok.encode("to be [MASK] not")
        assert ids.count(tok.special_ids["[MASK]"]) == 1
        assert "[MASK]" not in tok.decode(ids, skip_special_tokens=True)
    char = CharTokenizer.train("abc", special_tokens=("[PAD]", "[MASK]"))
    assert char.vocab == ["[PAD]", "[MASK]", "a", "b", "c"]
    assert char.encode("a[MASK]b") == [2, 1, 3]
    assert char.decode([2, 1, 0, 3]) == "a[MASK][PAD]b"
    assert char.decode([2, 1, 0, 3], skip_special_tokens=True) == "ab"


def test_wordpiece_adds_unk_when_missing():
    tok = WordPieceTokenizer.train("the cat sat on the mat", 60, special_tokens=("[PAD]", "[MASK]"))
    assert tok.special_ids == {"[PAD]": 0, "[MASK]": 1, "[UNK]": 2}


def test_unseen_character_error_names_it(char):
    with pytest.raises(ValueError, match=r"2 character\(s\) the tokenizer never saw \('é', '€'\)"):
        char.encode("café costs €")


def test_unseen_character_maps_to_unk_when_trained_with_it():
    tok = CharTokenizer.train("abc", special_tokens=("[UNK]",))
    assert tok.encode("abz") == [1, 2, 0]
    assert tok.decode(tok.encode("abz")) == "ab[UNK]"


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_save_and_load_give_the_same_tokenizer(all_three, kind, tmp_path):
    tok = all_three[kind]
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    loaded = tokenizers.load(path)
    assert type(loaded) is type(tok)
    assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)
    assert loaded.decode(tok.encode(SAMPLE)) == tok.decode(tok.encode(SAMPLE))
    assert loaded.vocab_size == tok.vocab_size and loaded.special_ids == tok.special_ids
    assert loaded.to_dict() == tok.to_dict()
    assert type(tok).load(path).encode(SAMPLE) == tok.encode(SAMPLE)
    # to_dict is plain JSON, so a checkpoint can embed it
    assert tokenizers.from_dict(json.loads(json.dumps(tok.to_dict()))).encode(SAMPLE) == tok.encode(SAMPLE)
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_encode_batch_equals_encode_on_each_text(all_three, kind):
    tok = all_three[kind]
    texts = [SAMPLE, "", "O Romeo, Romeo! wherefore art thou Romeo?", shakespeare("val")[:20_000]]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts[:3]) == [tok.encode(t) for t in texts[:3]]


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_common_interface(all_three, kind):
    tok = all_three[kind]
    assert isinstance(tok, Tokenizer)
    ids = tok.encode(SAMPLE)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(torch.tensor(ids)) == tok.decode(ids)
    assert tok.token_to_id(tok.id_to_token(ids[3])) == ids[3]
    assert "".join(tok.tokens("To be, or not")).replace(" ", "") == "Tobe,ornot"
    assert kind.replace("wordpiece", "WordPiece").lower() in repr(tok).lower()


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_bad_ids_and_tokens_are_refused(all_three, kind):
    tok = all_three[kind]
    with pytest.raises(ValueError, match=r"ids must be in \[0, "):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError, match=r"ids must be in \[0, "):
        tok.decode([-1])
    with pytest.raises(ValueError, match="ids must be a list of int"):
        tok.decode([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="ids must be a list of int"):
        tok.decode("abc")
    with pytest.raises(ValueError, match="text must be a str"):
        tok.encode(None)
    with pytest.raises(ValueError, match="texts must be a list of str"):
        tok.encode_batch("one text")
    with pytest.raises(ValueError, match="texts must be a list of str"):
        tok.encode_batch(["a", 1])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.token_to_id("no such token here")
    with pytest.raises(ValueError, match="id must be an int"):
        tok.id_to_token(tok.vocab_size)


@pytest.mark.parametrize("vocab_size", [0, -5, 2.5, "1000", True, None, 255])
def test_bpe_refuses_bad_vocab_size(vocab_size):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("some text", vocab_size)


def test_vocab_size_minimum_counts_the_special_tokens():
    with pytest.raises(ValueError, match="at least 258"):
        BPETokenizer.train("some text", 257, special_tokens=("[PAD]", "[MASK]"))
    with pytest.raises(ValueError, match="vocab_size must be more than the 5 special tokens"):
        WordPieceTokenizer.train("some text", 5)
    with pytest.raises(ValueError, match="vocab_size"):
        WordPieceTokenizer.train("some text", 0)


@pytest.mark.parametrize("train", [
    lambda text, **kw: CharTokenizer.train(text, **kw),
    lambda text, **kw: BPETokenizer.train(text, 300, **kw),
    lambda text, **kw: WordPieceTokenizer.train(text, 300, **kw),
])
def test_training_refuses_bad_text_and_special_tokens(train):
    with pytest.raises(ValueError, match="text must not be empty"):
        train("")
    with pytest.raises(ValueError, match="text must be a str"):
        train(["a list", "of texts"])
    with pytest.raises(ValueError, match="special_tokens must be distinct"):
        train("abc", special_tokens=("[PAD]", "[PAD]"))
    with pytest.raises(ValueError, match="special_tokens must be a list of non-empty str"):
        train("abc", special_tokens="[PAD]")


def test_load_refuses_missing_broken_and_mismatched_files(tmp_path, char):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenizers.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        tokenizers.load(broken)
    path = tmp_path / "char.json"
    char.save(path)
    with pytest.raises(ValueError, match="BPETokenizer was asked for"):
        BPETokenizer.load(path)
    with pytest.raises(ValueError, match="d\\['type'\\] must be one of 'char', 'bpe', 'wordpiece'"):
        tokenizers.from_dict({"type": "sentencepiece"})
    with pytest.raises(ValueError, match="not a valid 'bpe' tokenizer"):
        tokenizers.from_dict({"type": "bpe", "special_tokens": []})
    with pytest.raises(ValueError, match="path must be a str or a path"):
        char.save(123)


# --- hostile input: long texts, rare characters, long words, absurd sizes ---------------------------


def whitespace_soup(n_lines, seed):
    """Lines of words ending in every kind of whitespace run, joined by every kind of line break."""
    rng = random.Random(seed)
    words = ["the", "king", "said", "Why", "no", "1601", "o'er", "naïve", "café", ":", "—", "!"]
    trailing = ["", " ", "  ", "\t", " \t ", "\u00a0", "\u3000", "   "]
    breaks = ["\n", "\r\n", "\n\n", "\n \n", "\n  ", " \n", "  \n\n", "\t\n", "\n\t"]
    return "".join(" ".join(rng.choices(words, k=rng.randint(1, 8))) + rng.choice(trailing) + rng.choice(breaks)
                   for _ in range(n_lines))


@pytest.fixture(scope="module")
def soup_tokenizers():
    text = whitespace_soup(3000, seed=0)  # merges of whitespace runs (" \n", "\t\n", "  ") get learned
    return BPETokenizer.train(text, 400), WordPieceTokenizer.train(text, 200)


def test_long_texts_with_whitespace_runs_give_the_ids_of_one_library_call(soup_tokenizers):
    bpe, wordpiece = soup_tokenizers
    for seed in range(1, 4):
        text = whitespace_soup(2500, seed)
        assert len(text) > 10 * tokenizers._CHUNK and len(list(tokenizers._chunks(text))) > 5
        for tok in (bpe, wordpiece):
            assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids, (type(tok).__name__, seed)
            assert tok.encode_batch([text, text[:100]])[0] == tok.encode(text)
    # a cut that would fall inside a run of spaces and a newline, right at the chunk size
    line = "x" * (tokenizers._CHUNK - 3) + "  \nNext\n"
    text = (line * 3) + "end"
    assert bpe.encode(text) == bpe.hf.encode(text, add_special_tokens=False).ids
    assert bpe.decode(bpe.encode(text)) == text


def test_a_special_token_spanning_a_newline_is_never_cut():
    bpe = BPETokenizer.train("to be or not to be\n" * 50, 300, special_tokens=("<end\nof>",))
    text = ("to be or not to be <end\nof>\n" * 400)
    assert bpe.encode(text) == bpe.hf.encode(text, add_special_tokens=False).ids
    assert bpe.encode(text).count(bpe.special_ids["<end\nof>"]) == 400


def test_wordpiece_spells_characters_seen_only_at_word_starts():
    # in this text 1, 2 and z only ever start a word: the library gives them no ##1, ##2, ##z
    text = "1 2 z 1 2 z ab ab abc " * 10
    tok = WordPieceTokenizer.train(text, 40)
    unk = tok.special_ids["[UNK]"]
    for word in ("12", "21", "az", "z1", "ba", "cab"):
        ids = tok.encode(word)
        assert unk not in ids and tok.decode(ids) == word, (word, tok.tokens(word))
    vocab = tok.hf.get_vocab()
    assert all("##" + c in vocab for c in "12zabc")


def test_wordpiece_keeps_its_vocabulary_size_when_completing_the_alphabet():
    sample = shakespeare("train")[:300_000]
    tok = WordPieceTokenizer.train(sample, 1000)
    assert tok.vocab_size == 1000
    words = "".join(sample.split())
    chars = {c for c in words}
    vocab = tok.hf.get_vocab()
    assert all(c in vocab and "##" + c in vocab for c in chars)
    # J and Q only start words in these plays (names): without ##J and ##Q these were [UNK]
    assert not any(a.isalpha() and b in "JQ" for a, b in zip(sample, sample[1:]))
    for word in ("HAJ", "aQu", "QJ", "Juliet"):
        assert tok.decode(tok.encode(word)) == word


def test_wordpiece_words_longer_than_100_characters_become_unk(wordpiece):
    unk = wordpiece.special_ids["[UNK]"]
    assert tokenizers.MAX_WORD_CHARS == 100
    assert unk not in wordpiece.encode("a" * 100)
    assert wordpiece.encode("a" * 101) == [unk]
    to, be = wordpiece.token_to_id("to"), wordpiece.token_to_id("be")
    assert wordpiece.encode("to " + "b" * 101 + " be") == [to, unk, be]


@pytest.mark.parametrize("vocab_size", [10**12, 1_000_001, 2**64])
@pytest.mark.parametrize("cls", [BPETokenizer, WordPieceTokenizer])
def test_absurd_vocab_size_is_refused_before_the_library_sees_it(cls, vocab_size):
    # the library aborts the whole process (a Rust panic) on 10**12
    with pytest.raises(ValueError, match=r"^vocab_size must .*1,000,000.*, got") as err:
        cls.train("some text", vocab_size)
    assert "\n" not in str(err.value)
