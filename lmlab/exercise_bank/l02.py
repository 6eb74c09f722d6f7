"""Lesson 02: tokenization — a character vocabulary, compression, padding a batch, WordPiece's encoding."""

import functools

from lmlab.exercises import Case, function_exercise


@functools.lru_cache(maxsize=1)
def _lesson02_tokenizers():
    """A char, a BPE and a WordPiece tokenizer trained on part of the course corpus (a second or so)."""
    from lmlab.corpus import shakespeare
    from lmlab.tokenizers import BPETokenizer, CharTokenizer, WordPieceTokenizer

    text = shakespeare("train")
    part = text[:300_000]
    return (CharTokenizer.train(text), BPETokenizer.train(part, 500), WordPieceTokenizer.train(part, 500))


def _lesson02_lines() -> list[str]:
    from lmlab.corpus import shakespeare

    val = shakespeare("val")
    return [val[:120], "To be, or not to be: that is the question.", val[-200:]]


def _char_encode_cases():
    from lmlab.corpus import shakespeare

    small = sorted(set("To be, or not to be"))
    return [
        Case(("To be", small), "a short text, a vocabulary of 9 characters"),
        Case(("", small), "the empty text has no tokens"),
        Case(("or not to be, to be", small), "characters that repeat get the same id each time"),
        Case(("HAMLET:\nWhat a piece of work is a man!", sorted(set(shakespeare("train")))),
             "the lesson's vocabulary of 69 characters, a newline included"),
    ]


@function_exercise("02.char_encode", cases=_char_encode_cases, hints=(
    "A character's id is where it stands in vocab. Every character of the text becomes one id, in order.",
    "Build a dict {character: position in vocab} once, then look up each character of text; an empty text "
    "gives an empty list.",
    "stoi = {ch: i for i, ch in enumerate(vocab)}; return [stoi[ch] for ch in text]",
))
def _char_encode(text: str, vocab: list[str]) -> list[int]:
    stoi = {ch: i for i, ch in enumerate(vocab)}
    return [stoi[ch] for ch in text]


def _compression_cases():
    char, bpe, wordpiece = _lesson02_tokenizers()
    lines = _lesson02_lines()
    uneven = ["To be, or not to be: that is the question.", "Ay.", "", "O, woe is me!"]
    return [
        Case((char, lines), "the character tokenizer: exactly 1.0"),
        Case((bpe, lines), "BPE with 500 tokens on three held-out texts of different lengths"),
        Case((wordpiece, lines), "WordPiece with 500 tokens on the same texts"),
        Case((bpe, uneven), "a long line, a short one and an empty one: pooled over all characters and tokens, "
                            "an empty line adds nothing (and must not be divided by its 0 tokens)"),
    ]


@function_exercise("02.compression_ratio", cases=_compression_cases, hints=(
    "One number for the whole list: all the characters against all the tokens. A short line should weigh "
    "less than a long one, and an empty line should not break anything.",
    "Add up the characters of every text, add up the tokens the tokenizer makes of every text, and divide "
    "the first total by the second; averaging one ratio per line gives short lines too much weight.",
    "return sum(len(t) for t in texts) / sum(len(tokenizer.encode(t)) for t in texts)",
))
def _compression_ratio(tokenizer, texts: list[str]) -> float:
    return sum(len(t) for t in texts) / sum(len(ids) for ids in tokenizer.encode_batch(texts))


def _pad_cases():
    return [
        Case(([[2, 7, 9, 3], [2, 5, 3]], 0), "two sequences of lengths 4 and 3"),
        Case(([[1, 2], [3, 4, 5, 6, 7], [8]], 0), "three sequences: every one is padded to the longest"),
        Case(([[4, 4, 4], [5, 5, 5]], 0), "sequences of equal length: nothing to pad, the mask is all 1"),
        Case(([[6, 1, 2], []], 9), "an empty sequence, and a padding id that is not 0"),
        Case(([[0, 3, 0], [7]], 0), "id 0 is a real token here: only the added positions are padding in the mask"),
    ]


@function_exercise("02.pad_batch", cases=_pad_cases, hints=(
    "Every sequence must end up as long as the longest one; the mask says, position by position, what is a "
    "real token (1) and what was added (0). Leave the lists you were given as they are.",
    "Find the longest length once. For each sequence, a new list: its ids followed by (longest - its length) "
    "copies of pad_id, and a mask of len(ids) ones followed by as many zeros. Build the mask from the lengths, "
    "not from the ids: a real token may have the padding id.",
    "n = max(map(len, sequences)); padded = [ids + [pad_id] * (n - len(ids)) for ids in sequences]; "
    "mask = [[1] * len(ids) + [0] * (n - len(ids)) for ids in sequences]; return padded, mask",
))
def _pad_batch(sequences: list[list[int]], pad_id: int):
    longest = max(len(ids) for ids in sequences)
    padded = [list(ids) + [pad_id] * (longest - len(ids)) for ids in sequences]
    mask = [[1] * len(ids) + [0] * (longest - len(ids)) for ids in sequences]
    return padded, mask


class _Pieces(frozenset):
    """A vocabulary of pieces, shown sorted: a set's order changes from run to run, a check's message must not."""

    def __repr__(self):
        return "{" + ", ".join(map(repr, sorted(self))) + "}"


_TOY_VOCAB = _Pieces({"a", "ab", "##b", "##bc", "##c", "w", "##h", "##e", "##re", "##fore", "where"})


@functools.lru_cache(maxsize=1)
def _lesson02_wordpiece_vocab() -> frozenset:
    """The pieces of a WordPiece tokenizer trained as in the lesson (1,000 pieces on 300,000 characters)."""
    from lmlab.corpus import shakespeare
    from lmlab.tokenizers import WordPieceTokenizer

    return frozenset(WordPieceTokenizer.train(shakespeare("train")[:300_000], 1000).hf.get_vocab())


def _wordpiece_cases():
    vocab, toy = _Pieces(_lesson02_wordpiece_vocab()), _TOY_VOCAB
    return [
        Case(("abc", toy), "greedy: the LONGEST piece that starts the word first ('ab', not 'a')"),
        Case(("where", toy), "a word that is a piece of its own"),
        Case(("wherefore", toy), "after the first piece, only ## pieces may continue the word"),
        Case(("bc", toy), "'##bc' is in the vocabulary, but a ## piece cannot start a word, and 'b' is not there"),
        Case(("abd", toy), "'ab' matches, then nothing spells 'd': the whole word becomes [UNK], not part of it"),
        Case(("morrow", vocab), "the lesson's WordPiece vocabulary (1,000 pieces)"),
        Case(("Dunsinane", vocab), "a name from Macbeth, a held-out play: many short pieces"),
        Case(("Café", vocab), "a character the vocabulary never saw"),
    ]


@function_exercise("02.wordpiece_tokens", cases=_wordpiece_cases, hints=(
    "Work from the left. At each point, which piece does WordPiece take: the shortest one that fits, or the "
    "longest? How does a piece inside a word differ from one at its start? And what if no piece fits?",
    "Start with the whole rest of the word and shorten it one character at a time until it is in the "
    "vocabulary (inside a word, look it up with '##' in front); take it and continue after it. If even a "
    "single character is not in the vocabulary, the answer is ['[UNK]'] for the whole word.",
    "pieces, start = [], 0; while start < len(word): find the largest end with (word[start:end] if start == 0 "
    "else '##' + word[start:end]) in vocab, else return ['[UNK]']; append it; start = end. return pieces",
))
def _wordpiece_tokens(word: str, vocab) -> list[str]:
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:  # not even one character is a piece here: the word cannot be spelled
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces
