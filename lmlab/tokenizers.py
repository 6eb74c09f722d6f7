"""Three ways to turn text into token ids, behind one small interface.

- `CharTokenizer`: one token per character; written here, in a few lines.
- `BPETokenizer`: byte-level BPE as in GPT-2, trained with the Hugging Face `tokenizers` library. Text
  is first seen as UTF-8 bytes, so any string can be encoded and `decode(encode(s)) == s` exactly.
- `WordPieceTokenizer`: WordPiece as in BERT, trained with the same library. Text is split at
  whitespace and punctuation and each word into pieces (`##` marks a piece that continues a word).
  The whitespace itself is not kept: `decode` puts one space between words and punctuation marks, so
  the round trip keeps every other character, in order: `"".join(decode(encode(s)).split()) ==
  "".join(s.split())`, for text whose words use only characters seen in training, anywhere in a word,
  and are at most 100 characters long. A word with an unseen character, or longer than 100 characters
  (the library's `max_input_chars_per_word`, as in BERT), becomes one `[UNK]` as a whole.

All three share: `encode(text) -> list[int]`, `decode(ids) -> str`, `encode_batch(texts)`,
`vocab_size`, `special_ids` (e.g. `{"[PAD]": 0, "[MASK]": 1}`), `token_to_id`, `id_to_token`,
`tokens(text)` (each token as text, for display), `save(path)` / `load(path)` (JSON) and `to_dict()` /
`from_dict(d)` (so a checkpoint can embed its tokenizer). Special tokens take the first ids, in the
order given, and a special token written in a text is encoded as that one token, as the library does.

A character `CharTokenizer` never saw in training raises a `ValueError` that names it, unless the
tokenizer was trained with an `"[UNK]"` special token, to which such characters are then mapped.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import tokenizers as hf  # the Hugging Face library (this module is lmlab.tokenizers)

from lmlab._checks import MAX_VOCAB_SIZE

UNK = "[UNK]"
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # WordPiece: a longer word is one [UNK] (the library's default, as in BERT)
_CHUNK = 1 << 12  # long texts are encoded in pieces of about this many characters (see encode)


class Tokenizer:
    """The interface shared by the tokenizers; `load` / `from_dict` rebuild any of them from JSON."""

    type = ""  # names the subclass in the saved JSON
    special_tokens: tuple[str, ...] = ()

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int:
        raise NotImplementedError

    def id_to_token(self, id: int) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def encode_batch(self, texts) -> list[list[int]]:
        """Encode each text of a list; the same ids as `encode` on each."""
        return [self.encode(t) for t in _check_texts(texts)]

    @property
    def special_ids(self) -> dict[str, int]:
        return {t: self.token_to_id(t) for t in self.special_tokens}

    def tokens(self, text: str) -> list[str]:
        """The text of each token of `text`, for display (`["To", " be", ","]`); a BPE token holding
        only part of a character's UTF-8 bytes shows as '\ufffd'."""
        return [self.decode([i]) for i in self.encode(text)]

    def save(self, path) -> None:
        """Write the tokenizer as JSON; atomic, so an interrupted save leaves the old file intact."""
        path = Path(_check_path(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path) -> Tokenizer:
        """Read a tokenizer written by `save`; `CharTokenizer.load` also checks that it is one."""
        path = Path(_check_path(path))
        if not path.is_file():
            raise FileNotFoundError(f"path {str(path)!r} does not exist; give a file written by Tokenizer.save")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"path {str(path)!r} is not a JSON file written by Tokenizer.save") from None
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        """Rebuild a tokenizer from `to_dict()`, dispatching on its "type" field."""
        types = {k.type: k for k in (CharTokenizer, BPETokenizer, WordPieceTokenizer)}
        kind = d.get("type") if isinstance(d, dict) else None
        if kind not in types:
            raise ValueError(f"d['type'] must be one of {', '.join(map(repr, types))}, got {kind!r}")
        if not issubclass(types[kind], cls):
            raise ValueError(f"d['type'] is {kind!r}, but {cls.__name__} was asked for")
        try:
            return types[kind]._from_dict(d)
        except Exception as err:  # a missing key, a wrong type, or the library refusing its JSON
            raise ValueError(f"d is not a valid {kind!r} tokenizer dict ({err})") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={list(self.special_tokens)})"


class CharTokenizer(Tokenizer):
    """One token per character: the vocabulary is the sorted set of characters of the training text."""

    type = "char"

    def __init__(self, vocab, special_tokens=()):
        """`vocab`: every token in id order, the special tokens first (usually made by `train`)."""
        self.special_tokens = _check_special_tokens(special_tokens)
        self.vocab = list(vocab)
        if self.vocab[:len(self.special_tokens)] != list(self.special_tokens):
            raise ValueError("vocab must start with the special tokens, in order")
        chars = self.vocab[len(self.special_tokens):]
        if len(set(self.vocab)) != len(self.vocab) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("vocab must hold the special tokens, then distinct single characters")
        self._stoi = {t: i for i, t in enumerate(self.vocab)}
        # special tokens written in a text are matched first, longest first ("[MASK]" before "[M")
        specials = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None

    @classmethod
    def train(cls, text: str, special_tokens=()) -> CharTokenizer:
        special_tokens = _check_special_tokens(special_tokens)
        chars = sorted(set(_check_text(text, nonempty=True)) - set(special_tokens))
        return cls(list(special_tokens) + chars, special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        text = _check_text(text)
        pieces = self._special_re.split(text) if self._special_re else [text]
        # with a capturing split, the odd pieces are the special tokens found in the text
        plain = pieces[::2]
        unseen = set().union(*map(set, plain)) - self._stoi.keys()
        unk = self._stoi.get(UNK)
        if unseen and unk is None:
            shown = ", ".join(map(repr, sorted(unseen)[:10])) + (", ..." if len(unseen) > 10 else "")
            raise ValueError(f"text contains {len(unseen)} character(s) the tokenizer never saw ({shown}); "
                             f"train it on text that has them, or with special_tokens=('{UNK}',) to map them to {UNK}")
        ids = []
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.append(self._stoi[piece])
            else:
                ids.extend([self._stoi.get(c, unk) for c in piece])
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = _check_ids(ids, self.vocab_size)
        first = len(self.special_tokens) if skip_special_tokens else 0
        return "".join(self.vocab[i] for i in ids if i >= first)

    def token_to_id(self, token: str) -> int:
        if token not in self._stoi:
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return self._stoi[token]

    def id_to_token(self, id: int) -> str:
        return self.vocab[_check_id(id, self.vocab_size)]

    def to_dict(self) -> dict:
        return {"type": self.type, "special_tokens": list(self.special_tokens), "vocab": self.vocab}

    @classmethod
    def _from_dict(cls, d: dict) -> CharTokenizer:
        return cls(d["vocab"], d["special_tokens"])


class _LibraryTokenizer(Tokenizer):
    """A tokenizer from the Hugging Face `tokenizers` library, wrapped in this module's interface."""

    def __init__(self, tokenizer: hf.Tokenizer, special_tokens=()):
        self.hf = tokenizer
        self.special_tokens = _check_special_tokens(special_tokens)
        # cutting a long text after a newline changes no id only for the pipelines this module builds
        # (no normalizer; GPT-2's byte-level regex without a prefix space, or BERT's split) and only if
        # no added token spans a newline; a tokenizer loaded from other JSON is given the whole text
        pre = tokenizer.pre_tokenizer
        byte_level = isinstance(pre, hf.pre_tokenizers.ByteLevel) and pre.use_regex and not pre.add_prefix_space
        bert = isinstance(pre, hf.pre_tokenizers.BertPreTokenizer)
        added = tokenizer.get_added_tokens_decoder().values()
        self._cuttable = (tokenizer.normalizer is None and (byte_level or bert)
                          and not any("\n" in t.content for t in added))

    @classmethod
    def _train(cls, text, special_tokens, model, pre_tokenizer, decoder, trainer):
        tokenizer = hf.Tokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizer
        tokenizer.decoder = decoder
        tokenizer.train_from_iterator(_chunks(text), trainer)
        return cls(tokenizer, special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        # One library call on a very long string is several times slower than the same text in
        # pieces: a long text is cut where the pre-tokenizer splits the same way with or without
        # the cut (see _chunks) and the pieces are encoded as a batch. Same ids as one call; the
        # 4.8M-character corpus takes about 2.5 s instead of 7.
        pieces = list(_chunks(_check_text(text))) if self._cuttable else [text]
        if len(pieces) == 1:
            return self.hf.encode(text, add_special_tokens=False).ids
        return [i for e in self.hf.encode_batch(pieces, add_special_tokens=False) for i in e.ids]

    def encode_batch(self, texts) -> list[list[int]]:
        texts = _check_texts(texts)
        if self._cuttable and any(len(t) > _CHUNK for t in texts):
            return [self.encode(t) for t in texts]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.hf.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int:
        i = self.hf.token_to_id(token) if isinstance(token, str) else None
        if i is None:
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return i

    def id_to_token(self, id: int) -> str:
        return self.hf.id_to_token(_check_id(id, self.vocab_size))

    def to_dict(self) -> dict:
        return {"type": self.type, "special_tokens": list(self.special_tokens),
                "tokenizer": json.loads(self.hf.to_str())}

    @classmethod
    def _from_dict(cls, d: dict):
        return cls(hf.Tokenizer.from_str(json.dumps(d["tokenizer"])), d["special_tokens"])


class BPETokenizer(_LibraryTokenizer):
    """Byte-level BPE (as GPT-2): 256 byte tokens, then the most frequent merges; exact round trip."""

    type = "bpe"

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens=()) -> BPETokenizer:
        """Learn merges until `vocab_size` tokens (at most; fewer if the text runs out of pairs)."""
        special_tokens = _check_special_tokens(special_tokens)
        _check_text(text, nonempty=True)
        low = 256 + len(special_tokens)
        if not low <= _check_vocab_size(vocab_size) <= MAX_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {low} (256 bytes + {len(special_tokens)} special tokens) "
                             f"and at most {MAX_VOCAB_SIZE:,}, got {vocab_size}")
        trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                         initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        return cls._train(text, special_tokens, hf.models.BPE(),
                          hf.pre_tokenizers.ByteLevel(add_prefix_space=False), hf.decoders.ByteLevel(), trainer)


class WordPieceTokenizer(_LibraryTokenizer):
    """WordPiece (as BERT, cased): words split at whitespace and punctuation, then into `##` pieces.

    A word longer than 100 characters (`MAX_WORD_CHARS`, the library's `max_input_chars_per_word`, as
    in BERT) is encoded as one `[UNK]`: longest-match-first spelling costs the square of the length.

    Training is not reproducible to the id: the library numbers the single-character `##x` pieces, and
    breaks ties between equally frequent pieces, in hash-map order, which changes from run to run. Save
    a trained WordPiece tokenizer with whatever is trained on its ids, and load it from there.
    """

    type = "wordpiece"

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens=BERT_SPECIAL_TOKENS) -> WordPieceTokenizer:
        """Learn a vocabulary of about `vocab_size` tokens; "[UNK]" is added to the special tokens if missing.

        Every character of the text is kept in the vocabulary in both forms, `x` (starting a word) and
        `##x` (continuing one), so any word of those characters can be spelled. A `vocab_size` below
        that alphabet gives a vocabulary the size of the alphabet.
        """
        special_tokens = _check_special_tokens(special_tokens)
        if UNK not in special_tokens:  # the model needs a token for words it cannot spell
            special_tokens += (UNK,)
        _check_text(text, nonempty=True)
        if not len(special_tokens) < _check_vocab_size(vocab_size) <= MAX_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be more than the {len(special_tokens)} special tokens and at most "
                             f"{MAX_VOCAB_SIZE:,}, got {vocab_size}")
        trainer = hf.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                               show_progress=False)
        # cleanup=False: the library's cleanup rewrites text (" do not" -> " don't"), not only spaces
        model = hf.models.WordPiece(unk_token=UNK, max_input_chars_per_word=MAX_WORD_CHARS)
        tok = cls._train(text, special_tokens, model, hf.pre_tokenizers.BertPreTokenizer(),
                         hf.decoders.WordPiece(prefix="##", cleanup=False), trainer)
        tok._complete_alphabet()
        return tok

    def _complete_alphabet(self):
        """Give every character both forms, `x` and `##x`: the library adds `##x` only for characters
        it saw inside a word, so a word with a digit seen only at word starts ("1", "12") became [UNK].
        The missing forms take the ids of the last (least frequent) merges, so the size stays the same."""
        vocab = self.hf.get_vocab(with_added_tokens=False)
        specials = set(self.special_tokens)
        chars = {t.removeprefix("##") for t in vocab if t not in specials and len(t.removeprefix("##")) == 1}
        missing = sorted({f for c in chars for f in (c, "##" + c)} - vocab.keys())
        if not missing:
            return
        by_id = sorted(vocab, key=vocab.get)
        merges = [t for t in by_id if t not in specials and len(t.removeprefix("##")) > 1]
        dropped = set(merges[len(merges) - min(len(missing), len(merges)) :])
        tokens = [t for t in by_id if t not in dropped] + missing
        self.hf.model = hf.models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token=UNK,
                                            max_input_chars_per_word=MAX_WORD_CHARS)


load = Tokenizer.load
from_dict = Tokenizer.from_dict


def _visible(c: str) -> bool:
    # not whitespace by any definition (Python's, or the Unicode White_Space of the library's regex)
    return c.isprintable() and c != " "


def _chunks(text: str, size: int = _CHUNK):
    """Cut `text` into pieces of about `size` characters, each cut after a newline that has a visible
    character on both sides ("said:\nWhy"): there the newline is a pre-token of its own, with or
    without the cut, for GPT-2's byte-level regex and for BERT's split alike. A newline next to other
    whitespace is not cut: the regex's `\\s+(?!\\S)` joins a run like "  \n" differently at the end
    of a piece than in the middle of the text."""
    start = 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while 0 <= cut < len(text) - 1 and not (_visible(text[cut - 1]) and _visible(text[cut + 1])):
            cut = text.find("\n", cut + 1)
        if cut < 0 or cut >= len(text) - 1:
            break
        yield text[start:cut + 1]
        start = cut + 1
    yield text[start:]


def _check_vocab_size(vocab_size) -> int:
    # checked before the library sees it: a size like 10**12 aborts the whole process from Rust
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 1 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an integer in [1, {MAX_VOCAB_SIZE:,}] (the largest vocabularies "
                         f"in use have about 256,000 tokens), got {vocab_size!r}")
    return vocab_size


def _check_text(text, nonempty: bool = False) -> str:
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if nonempty and not text:
        raise ValueError("text must not be empty: a tokenizer is trained on at least one character")
    return text


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a list of str, got {type(texts).__name__}")
    return list(texts)


def _check_special_tokens(special_tokens) -> tuple[str, ...]:
    if not isinstance(special_tokens, (list, tuple)) or not all(isinstance(t, str) and t for t in special_tokens):
        raise ValueError(f"special_tokens must be a list of non-empty str, got {special_tokens!r}")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens must be distinct, got {list(special_tokens)}")
    return tuple(special_tokens)


def _check_ids(ids, vocab_size: int) -> list[int]:
    if hasattr(ids, "tolist"):  # a 1-D tensor or array
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple, range)) or not all(type(i) is int for i in ids):
        raise ValueError(f"ids must be a list of int (or a 1-D tensor), got {type(ids).__name__}")
    if ids and not 0 <= min(ids) <= max(ids) < vocab_size:
        bad = min(ids) if min(ids) < 0 else max(ids)
        raise ValueError(f"ids must be in [0, {vocab_size}), got {bad}")
    return list(ids)


def _check_id(id, vocab_size: int) -> int:
    if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id < vocab_size:
        raise ValueError(f"id must be an int in [0, {vocab_size}), got {id!r}")
    return id


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or a path, got {type(path).__name__}")
    return path


class PretrainedTokenizer(_LibraryTokenizer):
    """A released model's own byte-level BPE (SmolLM2's 49,152 tokens), read from its GGUF file or tokenizer.json.

    Same interface as the tokenizers above, plus `eos_token_id`, `chat_template` and `chat_prompt`.
    `encode` returns the text's tokens only: no BOS token is put in front (SmolLM2 was trained so).
    The model's control tokens (`<|im_start|>`, `<|im_end|>`, ...) are its special tokens: written
    in a text, each is encoded as that one token. Loaded with `PretrainedTokenizer.load`, not
    `Tokenizer.load`, which knows only the three trainable kinds.
    """

    type = "pretrained"

    def __init__(self, tokenizer: hf.Tokenizer, special_tokens=(), eos_token: str | None = None,
                 chat_template: str | None = None):
        super().__init__(tokenizer, special_tokens)
        if eos_token is not None and eos_token not in self.special_tokens:
            raise ValueError(f"eos_token must be one of the special tokens, got {eos_token!r}")
        if chat_template is not None and not isinstance(chat_template, str):
            raise ValueError(f"chat_template must be a str, got {type(chat_template).__name__}")
        self.eos_token, self.chat_template = eos_token, chat_template

    @property
    def eos_token_id(self) -> int | None:
        """Id of the token that ends the model's answer (SmolLM2: `<|im_end|>`, id 2)."""
        return None if self.eos_token is None else self.token_to_id(self.eos_token)

    @classmethod
    def from_gguf(cls, gguf_file) -> PretrainedTokenizer:
        """Build it from the vocabulary, merges and token types in an open `lmlab.gguf.GGUFFile`."""
        m, where = gguf_file.metadata, f"path {str(gguf_file.path)!r}"
        if m.get("tokenizer.ggml.model") != "gpt2":
            raise ValueError(f"{where} has a {m.get('tokenizer.ggml.model')!r} tokenizer; lmlab reads only byte-level "
                             "BPE ('gpt2') tokenizers from GGUF files")
        pre = m.get("tokenizer.ggml.pre", "default")
        if pre not in _GGUF_PRE_TOKENIZERS:
            raise ValueError(f"{where} splits text with the {pre!r} rule; lmlab knows {sorted(_GGUF_PRE_TOKENIZERS)}")
        tokens, merges = m.get("tokenizer.ggml.tokens"), m.get("tokenizer.ggml.merges")
        types = m.get("tokenizer.ggml.token_type", [1] * len(tokens or ()))
        if not (isinstance(tokens, list) and isinstance(merges, list) and isinstance(types, list)
                and len(types) == len(tokens) and all(isinstance(t, str) for t in tokens)):
            raise ValueError(f"{where} lacks a valid vocabulary (tokenizer.ggml.tokens, merges and token_type)")
        vocab = {t: i for i, t in enumerate(tokens)}
        pairs = [tuple(pair.split(" ")) for pair in merges if isinstance(pair, str)]
        if len(vocab) != len(tokens) or len(pairs) != len(merges) or any(len(p) != 2 for p in pairs):
            raise ValueError(f"{where} has a damaged vocabulary: repeated tokens or merges that are not 'a b' pairs")
        try:
            tokenizer = hf.Tokenizer(hf.models.BPE(vocab, pairs))
        except Exception as err:  # the library's own message, e.g. a merge of unknown tokens
            raise ValueError(f"{where} has a vocabulary the tokenizers library refuses ({err})") from None
        tokenizer.pre_tokenizer = _GGUF_PRE_TOKENIZERS[pre]()
        tokenizer.decoder = hf.decoders.ByteLevel()
        control = [t for t, kind in zip(tokens, types) if kind == _GGUF_CONTROL_TOKEN]
        tokenizer.add_special_tokens([hf.AddedToken(t, special=True, normalized=False) for t in control])
        eos = m.get("tokenizer.ggml.eos_token_id")
        eos_token = tokens[eos] if isinstance(eos, int) and 0 <= eos < len(tokens) and tokens[eos] in control else None
        return cls(tokenizer, control, eos_token, m.get("tokenizer.chat_template"))

    @classmethod
    def from_hf_dir(cls, path) -> PretrainedTokenizer:
        """Read tokenizer.json (and tokenizer_config.json, if there, for eos and the chat template) from folder `path`."""
        path = Path(_check_path(path))
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"path {str(path)!r} has no tokenizer.json")
        try:
            tokenizer = hf.Tokenizer.from_file(str(path / "tokenizer.json"))
            config = {}
            if (path / "tokenizer_config.json").is_file():
                config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        except Exception as err:
            raise ValueError(f"path {str(path)!r} holds a tokenizer that cannot be read ({err})") from None
        specials = [t.content for _, t in sorted(tokenizer.get_added_tokens_decoder().items()) if t.special]
        eos = config.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        return cls(tokenizer, specials, eos if eos in specials else None, config.get("chat_template"))

    def save_hf_dir(self, path) -> None:
        """Write tokenizer.json and tokenizer_config.json (eos, chat template) into folder `path`."""
        path = Path(_check_path(path))
        path.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(path / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": self.eos_token, "add_bos_token": False,
                  "clean_up_tokenization_spaces": False, "chat_template": self.chat_template}
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")

    def chat_prompt(self, messages, add_generation_prompt: bool = True) -> str:
        """The text a chat model reads for `messages`, written with the template stored with the model.

        messages: [{"role": "system" | "user" | "assistant", "content": str}, ...]. For SmolLM2 (ChatML):
        "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", after a default system message
        when the first one is not from the system. Generation should stop at `eos_token_id`.
        """
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template: its model was not trained for chat")
        if not isinstance(messages, (list, tuple)) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise ValueError("messages must be a non-empty list of {'role': str, 'content': str} dicts")
        # the template is data from a downloaded file: rendered in jinja2's sandbox, as transformers does
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        try:
            return env.from_string(self.chat_template).render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                eos_token=self.eos_token)
        except TemplateError as err:
            raise ValueError(f"the model's chat template failed on these messages ({err})") from None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "eos_token": self.eos_token, "chat_template": self.chat_template}

    @classmethod
    def from_dict(cls, d: dict) -> PretrainedTokenizer:
        if not isinstance(d, dict) or d.get("type") != cls.type:
            raise ValueError(f"d['type'] must be {cls.type!r}, got {d.get('type') if isinstance(d, dict) else None!r}")
        try:
            return cls._from_dict(d)
        except Exception as err:
            raise ValueError(f"d is not a valid {cls.type!r} tokenizer dict ({err})") from None

    @classmethod
    def _from_dict(cls, d: dict) -> PretrainedTokenizer:
        return cls(hf.Tokenizer.from_str(json.dumps(d["tokenizer"])), d["special_tokens"], d["eos_token"],
                   d["chat_template"])


_GGUF_CONTROL_TOKEN = 3  # tokenizer.ggml.token_type of control (special) tokens
# How llama.cpp's named pre-tokenizers cut text before BPE: "smollm" (SmolLM, SmolLM2) puts every
# digit on its own first, then applies GPT-2's rule (words with their leading space, runs of
# punctuation, whitespace).
_GGUF_PRE_TOKENIZERS = {
    "default": lambda: hf.pre_tokenizers.ByteLevel(add_prefix_space=False),
    "gpt2": lambda: hf.pre_tokenizers.ByteLevel(add_prefix_space=False),
    "smollm": lambda: hf.pre_tokenizers.Sequence(
        [hf.pre_tokenizers.Digits(individual_digits=True), hf.pre_tokenizers.ByteLevel(add_prefix_space=False)]),
}
