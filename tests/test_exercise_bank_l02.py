"""Lesson 02's exercises pass with their solutions and fail, with a useful message, with the usual mistakes."""

import tokenizers as hf

from lmlab.corpus import shakespeare
from lmlab.exercise_bank.l02 import _TOY_VOCAB, _lesson02_wordpiece_vocab, _wordpiece_tokens
from lmlab.exercises import check, names


def stub(*args):
    raise NotImplementedError("your code here")


def test_lesson_02_has_its_exercises():
    assert names("02.") == ["02.char_encode", "02.compression_ratio", "02.pad_batch", "02.wordpiece_tokens"]


def test_every_stub_fails_cleanly_with_the_nudge_only():
    for name in names("02."):
        message = repr(check(name, stub))
        assert "case 1 of" in message and "NotImplementedError: your code here" in message, name
        assert "hint 1 of 3" in message and "return" not in message.split("Hint")[1], name


def test_char_encode():
    assert check("02.char_encode", lambda text, vocab: [vocab.index(ch) for ch in text])
    result = check("02.char_encode", lambda text, vocab: [vocab.index(ch) + 1 for ch in text])
    assert not result and "case 1 of 4" in repr(result)


def test_compression_ratio_passes_pooled():
    def ratio(tokenizer, texts):
        n_tokens = sum(len(tokenizer.encode(t)) for t in texts)
        return sum(map(len, texts)) / n_tokens

    assert check("02.compression_ratio", ratio)


def test_compression_ratio_fails_as_a_mean_of_per_line_ratios():
    def mean_of_ratios(tokenizer, texts):
        ratios = [len(t) / len(tokenizer.encode(t)) for t in texts if t]
        return sum(ratios) / len(ratios)

    result = check("02.compression_ratio", mean_of_ratios)
    assert not result and "case 2 of 4" in repr(result) and "BPETokenizer" in repr(result)


def test_compression_ratio_fails_when_an_empty_line_is_divided_by():
    def per_line(tokenizer, texts):  # right on the first three cases, where no line is empty
        n_tokens = [len(tokenizer.encode(t)) for t in texts]
        ratios = [len(t) / n for t, n in zip(texts, n_tokens)]  # weighted by tokens, this is the pooled ratio
        return sum(r * n for r, n in zip(ratios, n_tokens)) / sum(n_tokens)

    result = check("02.compression_ratio", per_line)
    assert not result and "case 4 of 4" in repr(result) and "ZeroDivisionError" in repr(result)


def test_compression_ratio_fails_upside_down_or_as_an_integer():
    assert not check("02.compression_ratio",
                     lambda tok, texts: sum(len(tok.encode(t)) for t in texts) / sum(map(len, texts)))
    result = check("02.compression_ratio",
                   lambda tok, texts: sum(map(len, texts)) // sum(len(tok.encode(t)) for t in texts))
    assert not result and "case 2 of 4" in repr(result)


def test_pad_batch_passes_written_another_way():
    def pad_batch(sequences, pad_id):
        n = max(len(s) for s in sequences)
        return ([s + [pad_id] * (n - len(s)) for s in sequences],
                [[int(i < len(s)) for i in range(n)] for s in sequences])

    assert check("02.pad_batch", pad_batch)


def test_pad_batch_fails_when_it_extends_the_given_lists():
    def in_place(sequences, pad_id):
        n = max(len(s) for s in sequences)
        mask = [[1] * len(s) + [0] * (n - len(s)) for s in sequences]
        for s in sequences:
            s.extend([pad_id] * (n - len(s)))
        return sequences, mask

    result = check("02.pad_batch", in_place)
    assert not result and "in place" in repr(result)


def test_pad_batch_fails_with_a_mask_read_from_the_ids():
    def mask_from_ids(sequences, pad_id):
        n = max(len(s) for s in sequences)
        padded = [s + [pad_id] * (n - len(s)) for s in sequences]
        return padded, [[int(i != pad_id) for i in s] for s in padded]

    result = check("02.pad_batch", mask_from_ids)
    assert not result and "case 5 of 5" in repr(result) and "id 0 is a real token" in repr(result)


def test_pad_batch_fails_when_padding_goes_in_front_or_the_pad_id_is_assumed():
    def left(sequences, pad_id):
        n = max(len(s) for s in sequences)
        return ([[pad_id] * (n - len(s)) + s for s in sequences],
                [[0] * (n - len(s)) + [1] * len(s) for s in sequences])

    def zero(sequences, pad_id):
        n = max(len(s) for s in sequences)
        return [s + [0] * (n - len(s)) for s in sequences], [[1] * len(s) + [0] * (n - len(s)) for s in sequences]

    assert not check("02.pad_batch", left)
    result = check("02.pad_batch", zero)
    assert not result and "case 4 of 5" in repr(result)


def library_tokens(word, vocab):
    model = hf.models.WordPiece({piece: i for i, piece in enumerate(sorted(vocab | {"[UNK]"}))}, unk_token="[UNK]")
    return hf.Tokenizer(model).encode(word).tokens


def test_the_reference_wordpiece_encoding_is_the_librarys():
    vocab = set(_lesson02_wordpiece_vocab())
    words = {w for w, _ in hf.pre_tokenizers.BertPreTokenizer().pre_tokenize_str(shakespeare("val")[:20_000])}
    words |= {"abc", "abd", "bc", "wherefore", "Café", "a"}
    for word in sorted(words):
        for v in (vocab, set(_TOY_VOCAB)):
            assert _wordpiece_tokens(word, v) == library_tokens(word, v), word


def test_wordpiece_tokens_passes_written_another_way():
    def tokens(word, vocab):
        out = []
        while word:
            prefix = "##" if out else ""
            match = next((word[:n] for n in range(len(word), 0, -1) if prefix + word[:n] in vocab), None)
            if match is None:
                return ["[UNK]"]
            out.append(prefix + match)
            word = word[len(match):]
        return out

    assert check("02.wordpiece_tokens", tokens)


def shortest_first(word, vocab, unk_part=False, prefix="##"):
    out, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
        else:
            if unk_part:
                out.append("[UNK]")
                break
            return ["[UNK]"]
        out.append(piece)
        start = end
    return out


def longest_first(word, vocab, unk_part=False, prefix="##"):
    out, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
        else:
            if unk_part:
                return out + ["[UNK]"]
            return ["[UNK]"]
        out.append(piece)
        start = end
    return out


def test_wordpiece_tokens_fails_shortest_first():
    result = check("02.wordpiece_tokens", shortest_first)
    assert not result and "case 1 of 8" in repr(result) and "LONGEST" in repr(result)


def test_wordpiece_tokens_fails_without_the_prefix():
    result = check("02.wordpiece_tokens", lambda w, v: longest_first(w, v, prefix=""))
    assert not result and "case 1 of 8" in repr(result) and "expected: ['ab', '##c']" in repr(result)


def test_wordpiece_tokens_fails_when_only_the_rest_of_the_word_is_unknown():
    result = check("02.wordpiece_tokens", lambda w, v: longest_first(w, v, unk_part=True))
    assert not result and "case 5 of 8" in repr(result) and "the whole word becomes [UNK]" in repr(result)
