"""Lesson 02: tokenization."""

import functools

from lmlab.exercises import function_exercise

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
    return [("To be", small), ("", small), ("or not to be, to be", small),
            ("HAMLET:\nWhat a piece of work is a man!", sorted(set(shakespeare("train"))))]


@function_exercise("02.char_encode", cases=_char_encode_cases,
                   hint="a character's id is its position in vocab: build a dict {character: position} once, "
                        "then look up every character of text in order (an empty text gives an empty list).")
def _char_encode(text: str, vocab: list[str]) -> list[int]:
    stoi = {ch: i for i, ch in enumerate(vocab)}
    return [stoi[ch] for ch in text]


@function_exercise("02.compression_ratio",
                   cases=lambda: [(tok, line) for tok in _lesson02_tokenizers() for line in _lesson02_lines()],
                   hint="count the tokens with len(tokenizer.encode(text)) and divide the number of characters, "
                        "len(text), by it; the answer is a float, exactly 1.0 for the character tokenizer.")
def _compression_ratio(tokenizer, text: str) -> float:
    return len(text) / len(tokenizer.encode(text))
