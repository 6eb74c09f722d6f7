"""Checkpoints: a folder of safetensors files and one JSON file; loading one never runs code.

    runs/shakespeare/
        checkpoint.json               kind + model config, tokenizer, training config, step, history
        model-00002000.safetensors    the weights
        state-00002000.safetensors    optimizer moments and generator states (for resuming)

Why not `torch.save`: a pickle can run any code when it is loaded; safetensors holds only tensors and
JSON only data. Why the step in the file names: a save writes the new tensor files next to the old
ones, then replaces `checkpoint.json` in one atomic rename, then deletes the old files. The JSON
always names a complete set, so a process killed in the middle of a save leaves the previous
checkpoint loadable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
import safetensors.torch as st

from lmlab.models import build, config_dict, kind_of

FORMAT = "lmlab-checkpoint"
VERSION = 1
CONFIG_FILE = "checkpoint.json"


@dataclass
class Checkpoint:
    """What `load_checkpoint` read: the JSON fields; the tensors are read when asked for."""

    path: Path  # the checkpoint folder
    kind: str  # "gpt" or "masked_lm"
    model_config: dict
    step: int = 0
    tokenizer_dict: dict | None = None
    train_config: dict | None = None
    history: dict | None = None
    metadata: dict = field(default_factory=dict)  # free-form: command line, measured losses, ...
    extra: dict = field(default_factory=dict)  # loop state that is not a tensor
    files: dict = field(default_factory=dict)  # {"model": name, "state": name or None}
    optimizer_meta: dict | None = None  # param groups and non-tensor optimizer state

    def build_model(self, device="cpu") -> torch.nn.Module:
        """A new model of the stored kind and config, with the stored weights, in eval mode."""
        model = build(self.kind, self.model_config)
        load_weights(model, self)
        return model.to(device).eval()

    @property
    def tokenizer(self):
        if self.tokenizer_dict is None:
            return None
        from lmlab import tokenizers

        return tokenizers.from_dict(self.tokenizer_dict)

    def _state_tensors(self) -> dict:
        name = self.files.get("state")
        return _read_tensors(self.path / name) if name else {}

    @property
    def optimizer_state(self) -> dict | None:
        """The optimizer's `state_dict()`, rebuilt from safetensors + JSON; None if none was saved."""
        if self.optimizer_meta is None:
            return None
        state = {int(i): dict(s) for i, s in self.optimizer_meta.get("state", {}).items()}
        for key, tensor in self._state_tensors().items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = tensor
        groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in self.optimizer_meta["param_groups"]]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    @property
    def rng_state(self) -> dict | None:
        """{"torch": ByteTensor, "cuda": [ByteTensor, ...]} saved with the checkpoint, or None."""
        tensors = {k: v for k, v in self._state_tensors().items() if k.startswith("rng.")}
        if not tensors:
            return None
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(sum(k.startswith("rng.cuda.") for k in tensors))]
        return {"torch": tensors["rng.torch"], "cuda": cuda}


def unwrap(model):
    """The plain model inside a DistributedDataParallel and/or torch.compile wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ------------------------------------------------------------------------------------------ save


def save_checkpoint(path, model, *, tokenizer=None, optimizer=None, step: int = 0, train_config: dict | None = None,
                    history: dict | None = None, rng_state: dict | None = None, extra: dict | None = None,
                    metadata: dict | None = None) -> Path:
    """Save `model` (and what a resumed run needs) into folder `path`, atomically; returns the folder.

    Only the model is required: with `optimizer=None` and `rng_state=None` the checkpoint holds the
    weights and configs only (what `lmlab.pretrained` ships).
    """
    model = unwrap(model)
    kind = kind_of(model)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path {str(folder)!r} is a file; a checkpoint is a folder")
    folder.mkdir(parents=True, exist_ok=True)

    tag = _fresh_tag(folder, step)
    files = {"model": f"model-{tag}.safetensors", "state": None}
    _atomic(folder / files["model"], lambda tmp: st.save_model(model, str(tmp)))

    tensors, optimizer_meta = {}, None
    if optimizer is not None:
        opt_tensors, optimizer_meta = _split_optimizer_state(optimizer.state_dict())
        tensors.update(opt_tensors)
    if rng_state is not None:
        tensors["rng.torch"] = rng_state["torch"]
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(rng_state.get("cuda", []))})
    if tensors:
        files["state"] = f"state-{tag}.safetensors"
        _atomic(folder / files["state"], lambda tmp: st.save_file(tensors, str(tmp)))

    record = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model_config": config_dict(model),
        "step": step,
        "files": files,
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        "train_config": train_config,
        "history": history,
        "optimizer": optimizer_meta,
        "extra": extra or {},
        "metadata": metadata or {},
        "torch_version": torch.__version__,
    }
    text = _to_json(record)
    _atomic(folder / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))  # the commit
    _fsync_dir(folder)
    _remove_stale(folder, keep=set(files.values()) | {CONFIG_FILE})
    return folder


def _fresh_tag(folder: Path, step: int) -> str:
    """`00000500`, or `00000500-1`, ... if that step was saved before: never overwrite a live file."""
    tag, n = f"{step:08d}", 0
    while (folder / f"model-{tag}.safetensors").exists() or (folder / f"state-{tag}.safetensors").exists():
        n += 1
        tag = f"{step:08d}-{n}"
    return tag


def _atomic(target: Path, write) -> None:
    """Write `target` via a temporary file in the same folder, flushed to disk, then renamed into place."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # readable like any data file (some writers create 0600 files)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale(folder: Path, keep: set) -> None:
    """Delete tensor files of older saves and temporary files that a killed save left behind."""
    for p in folder.iterdir():
        stale_tensors = p.name.startswith(("model-", "state-")) and p.name.endswith(".safetensors")
        leftover = p.name.startswith(".") and ".tmp-" in p.name
        if (stale_tensors or leftover) and p.name not in keep and p.is_file():
            p.unlink(missing_ok=True)


def _split_optimizer_state(state_dict: dict) -> tuple[dict, dict]:
    """An optimizer state_dict as (tensors for safetensors, the JSON-able rest)."""
    tensors, other = {}, {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                other.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": other}


def _to_json(record: dict) -> str:
    def default(value):
        if torch.is_tensor(value) and value.numel() == 1:
            return value.item()
        if isinstance(value, (tuple, set)):
            return list(value)
        if isinstance(value, Path):
            return str(value)
        raise ValueError(f"checkpoint fields must be JSON data, got a {type(value).__name__}: {value!r:.80}")

    return json.dumps(record, indent=1, default=default)


def get_rng_state() -> dict:
    """torch's global generator states (CPU and every CUDA device), e.g. for dropout."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ load


def load_checkpoint(path) -> Checkpoint:
    """Read the checkpoint in folder `path` (or its checkpoint.json); tensors are read on demand."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or a path to a checkpoint folder, got {type(path).__name__}")
    folder = Path(path)
    if folder.name == CONFIG_FILE and folder.is_file():
        folder = folder.parent
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(folder)!r}: expected a folder holding {CONFIG_FILE}")
    try:
        record = json.loads(config_path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            raise ValueError(f"its format field is {record.get('format')!r}, not {FORMAT!r}")
        if record.get("version", 0) > VERSION:
            raise ValueError(f"it has format version {record['version']} and this lmlab reads up to {VERSION}")
        ckpt = Checkpoint(
            path=folder, kind=record["kind"], model_config=record["model_config"], step=record["step"],
            tokenizer_dict=record.get("tokenizer"), train_config=record.get("train_config"),
            history=record.get("history"), metadata=record.get("metadata") or {}, extra=record.get("extra") or {},
            files=record["files"], optimizer_meta=record.get("optimizer"))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{str(config_path)!r} is not a valid lmlab checkpoint: {err}") from None
    for name in ckpt.files.values():
        if name and not (folder / name).is_file():
            raise ValueError(f"checkpoint {str(folder)!r} is incomplete: {name}, named in {CONFIG_FILE}, is missing")
    return ckpt


def _read_tensors(file: Path) -> dict:
    try:
        return st.load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{str(file)!r} is not a readable safetensors file: {err}") from None


def check_compatible(ckpt: Checkpoint, model, tokenizer=None) -> None:
    """Raise a one-sentence ValueError unless `ckpt` was made for `model`'s architecture and `tokenizer`."""
    model = unwrap(model)
    where = f"checkpoint {str(ckpt.path)!r}"
    kind = kind_of(model)
    if ckpt.kind != kind:
        raise ValueError(f"{where} holds a {ckpt.kind} model, not a {kind}; load it into a {ckpt.kind}")
    mine = config_dict(model)
    theirs = ckpt.model_config
    if theirs.get("vocab_size") != mine["vocab_size"]:
        raise ValueError(f"{where} was made for a vocabulary of {theirs.get('vocab_size')} tokens, "
                         f"but the model has {mine['vocab_size']}")
    differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if differ:
        said = ", ".join(f"{k}={theirs.get(k)!r}" for k in differ)
        has = ", ".join(f"{k}={mine.get(k)!r}" for k in differ)
        raise ValueError(f"{where} was made for another architecture ({said}), but the model has {has}")
    if tokenizer is not None and ckpt.tokenizer_dict is not None:
        if json.loads(_to_json(tokenizer.to_dict())) != ckpt.tokenizer_dict:
            raise ValueError(f"{where} was made with another tokenizer (a different vocabulary); "
                             "use the tokenizer stored in it, e.g. lmlab.checkpoints.load_model(path)")


def load_weights(model, ckpt) -> None:
    """Copy the weights of checkpoint `ckpt` (a Checkpoint or a path) into `model`, after checking it fits."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    check_compatible(ckpt, model)
    model = unwrap(model)
    device = next(model.parameters()).device
    file = ckpt.path / ckpt.files["model"]
    try:
        missing, unexpected = st.load_model(model, str(file), strict=False, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{str(file)!r} does not hold weights for this model: {err}") from None
    if missing or unexpected:
        raise ValueError(f"{str(file)!r} does not hold weights for this model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_model(path, device="cpu"):
    """(model, tokenizer) from a checkpoint folder; the model in eval mode, the tokenizer None if none was saved."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(device), ckpt.tokenizer
