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

Nothing read is trusted: checkpoint.json is checked field by field, and every tensor is checked
against the one it replaces (name, shape, dtype, finite values) before anything is loaded, so a
damaged or crafted file is one ValueError, never a crash inside torch or NaN weights.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
import safetensors.torch as st

from lmlab.models import MODELS, build, config_dict, kind_of

FORMAT = "lmlab-checkpoint"
VERSION = 1
CONFIG_FILE = "checkpoint.json"
# What a killed save can leave behind: our temporary file (`.model-00000500.safetensors.tmp-1234`) and
# the one safetensors itself writes before renaming it onto ours (`.tmpAb12Cd`).
_LEFTOVER = re.compile(r"\..+\.tmp-\d+|\.tmp[A-Za-z0-9]{6}")
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}  # safetensors' dtype names


@dataclass
class Checkpoint:
    """What `load_checkpoint` read: the JSON fields, checked; the tensors are read (and checked) when asked for."""

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
        device = _pick_device(device)
        with torch.device("meta"):  # shapes without memory: a config that does not fit the weights stops here
            skeleton = self._build()
        weights = self.path / self.files["model"]
        _match_weights(skeleton, _header(weights), weights)
        model = self._build()
        load_weights(model, self)
        return model.to(device).eval()

    def _build(self):
        try:
            return build(self.kind, self.model_config)
        except (ValueError, TypeError, RuntimeError, OverflowError) as err:
            raise ValueError(f"checkpoint {str(self.path)!r}: its model_config does not describe a {self.kind} model "
                             f"({err})") from None

    @property
    def tokenizer(self):
        if self.tokenizer_dict is None:
            return None
        from lmlab import tokenizers

        return tokenizers.from_dict(self.tokenizer_dict)

    def _state_tensors(self) -> tuple[dict, dict]:
        """The state file as ({(param index, name): optimizer tensor}, {"rng.…": generator state}); keys checked."""
        optimizer, rng = {}, {}
        name = self.files.get("state")
        if not name:
            return optimizer, rng
        file = self.path / name
        for key, tensor in _read_tensors(file).items():
            if m := re.fullmatch(r"optimizer\.(\d{1,9})\.(\w+)", key):
                optimizer[int(m[1]), m[2]] = tensor
            elif re.fullmatch(r"rng\.(torch|cuda\.\d{1,4})", key):
                rng[key] = tensor
            else:
                raise ValueError(f"{str(file)!r} holds an unexpected tensor {key!r}; a state file holds only "
                                 "optimizer.N.NAME and rng.* tensors")
        if optimizer and self.optimizer_meta is None:
            raise ValueError(f"{str(file)!r} holds optimizer tensors but {CONFIG_FILE} records no optimizer")
        return optimizer, rng

    @property
    def optimizer_state(self) -> dict | None:
        """The optimizer's `state_dict()` as stored; None if none was saved. `load_optimizer_state` checks it
        against the optimizer it is meant for before loading it."""
        if self.optimizer_meta is None:
            return None
        state = {int(i): dict(s) for i, s in self.optimizer_meta["state"].items()}
        for (index, name), tensor in self._state_tensors()[0].items():
            state.setdefault(index, {})[name] = tensor
        groups = [dict(g, betas=tuple(g["betas"])) if isinstance(g.get("betas"), list) else dict(g)
                  for g in self.optimizer_meta["param_groups"]]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    @property
    def rng_state(self) -> dict | None:
        """{"torch": ByteTensor, "cuda": [ByteTensor, ...]} saved with the checkpoint (checked), or None."""
        tensors = self._state_tensors()[1]
        if not tensors:
            return None
        file = str(self.path / self.files["state"])
        n_cuda = len(tensors) - ("rng.torch" in tensors)
        cuda_names = [f"rng.cuda.{i}" for i in range(n_cuda)]
        if "rng.torch" not in tensors or set(tensors) != {"rng.torch", *cuda_names}:
            others = sorted(k for k in tensors if k != "rng.torch")
            raise ValueError(f"{file!r} holds generator states {others} but no rng.torch; expected rng.torch, "
                             "then rng.cuda.0, rng.cuda.1, ... for the CUDA devices")
        _check_generator_state(tensors["rng.torch"], torch.get_rng_state(), "rng.torch", file)
        if torch.cuda.is_available():
            for name in cuda_names:
                _check_generator_state(tensors[name], torch.cuda.get_rng_state(), name, file)
        return {"torch": tensors["rng.torch"], "cuda": [tensors[n] for n in cuda_names]}


def _check_generator_state(state, like, name, file):
    if state.dtype != torch.uint8 or state.shape != like.shape:
        raise ValueError(f"{file!r}: {name} must be a uint8 tensor of shape {tuple(like.shape)}, "
                         f"got {str(state.dtype).removeprefix('torch.')} of shape {tuple(state.shape)}")
    if like.device.type == "cpu":  # torch validates a CPU (Mersenne twister) state when it is set: try it aside
        try:
            torch.Generator().set_state(state)
        except RuntimeError:
            raise ValueError(f"{file!r}: {name} is not a valid state of torch's generator; the file is damaged") from None


def unwrap(model):
    """The plain model inside a DistributedDataParallel and/or torch.compile wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def first_nonfinite(named_tensors) -> str | None:
    """The name of the first floating-point tensor of `(name, tensor)` pairs that holds a NaN or an inf, else None."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


# ------------------------------------------------------------------------------------------ save


def save_checkpoint(path, model, *, tokenizer=None, optimizer=None, step: int = 0, train_config: dict | None = None,
                    history: dict | None = None, rng_state: dict | None = None, extra: dict | None = None,
                    metadata: dict | None = None) -> Path:
    """Save `model` (and what a resumed run needs) into folder `path`, atomically; returns the folder.

    Only the model is required: with `optimizer=None` and `rng_state=None` the checkpoint holds the
    weights and configs only (what `lmlab.pretrained` ships). Non-finite weights are refused: a
    diverged model never replaces a good checkpoint. If the disk fills up (or any write fails), the
    files of this save are removed, the previous checkpoint stays, and an OSError says so.
    """
    model = unwrap(model)
    kind = kind_of(model)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path {str(folder)!r} is a file; a checkpoint is a folder")
    bad = first_nonfinite(model.state_dict().items())
    if bad is not None:
        raise ValueError(f"model holds non-finite values (nan or inf) in {bad!r}; a checkpoint takes finite weights only, "
                         f"so {str(folder)!r} is left as it was")
    text_of = {"tokenizer": tokenizer.to_dict() if tokenizer is not None else None, "config": config_dict(model)}
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)

    tag = _fresh_tag(folder, step)
    files = {"model": f"model-{tag}.safetensors", "state": None}
    written = []
    try:
        written.append(folder / files["model"])
        _atomic(written[-1], lambda tmp: st.save_model(model, str(tmp)))

        tensors, optimizer_meta = {}, None
        if optimizer is not None:
            opt_tensors, optimizer_meta = _split_optimizer_state(optimizer.state_dict())
            tensors.update(opt_tensors)
        if rng_state is not None:
            tensors["rng.torch"] = rng_state["torch"]
            tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(rng_state.get("cuda", []))})
        if tensors:
            files["state"] = f"state-{tag}.safetensors"
            written.append(folder / files["state"])
            _atomic(written[-1], lambda tmp: st.save_file(tensors, str(tmp)))

        record = {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "model_config": text_of["config"],
            "step": step,
            "files": files,
            "tokenizer": text_of["tokenizer"],
            "train_config": train_config,
            "history": history,
            "optimizer": optimizer_meta,
            "extra": extra or {},
            "metadata": metadata or {},
            "torch_version": torch.__version__,
        }
        text = _to_json(record)
        _atomic(folder / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))  # the commit
    except (OSError, SafetensorError) as err:
        for file in written:
            file.unlink(missing_ok=True)
        raise OSError(f"could not save the checkpoint in {str(folder)!r} ({_reason(err)}); "
                      f"{_kept(folder)}, free some disk space (or fix the folder) and save again") from None
    except BaseException:  # Ctrl-C, a bad field: the same clean-up, the error as it is
        for file in written:
            file.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    _remove_stale(folder, keep=set(files.values()) | {CONFIG_FILE})
    return folder


def _reason(err) -> str:
    """'no space left on device' from an OSError or from safetensors' message around one."""
    code = getattr(err, "errno", None)
    if code is None and (m := re.search(r"code: (\d+)", str(err))):
        code = int(m[1])
    return os.strerror(code).lower() if code else str(err)


def _kept(folder: Path) -> str:
    try:
        return f"the last good checkpoint there (step {json.loads((folder / CONFIG_FILE).read_text())['step']}) is kept"
    except (OSError, ValueError, KeyError, TypeError):
        return "nothing was saved"


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


def remove_leftovers(folder) -> None:
    """Delete the temporary files that a save killed mid-write (SIGKILL, power loss) left in checkpoint `folder`."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if _LEFTOVER.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)


def _remove_stale(folder: Path, keep: set) -> None:
    """Delete tensor files of older saves (and any temporary file left behind)."""
    remove_leftovers(folder)
    for p in folder.iterdir():
        stale = p.name.startswith(("model-", "state-")) and p.name.endswith(".safetensors")
        if stale and p.name not in keep and p.is_file():
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

    try:  # NaN and Infinity are not JSON: a file that holds them could not be read back
        return json.dumps(record, indent=1, default=default, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"checkpoint fields must be JSON data without NaN or Infinity ({err})") from None


def get_rng_state() -> dict:
    """torch's global generator states (CPU and every CUDA device), e.g. for dropout."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ load


def load_checkpoint(path) -> Checkpoint:
    """Read the checkpoint in folder `path` (or its checkpoint.json), checking every field; tensors are read on demand."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or a path to a checkpoint folder, got {type(path).__name__}")
    folder = Path(path)
    if folder.name == CONFIG_FILE and folder.is_file():
        folder = folder.parent
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(folder)!r}: expected a folder holding {CONFIG_FILE}")
    try:
        record = json.loads(config_path.read_text(encoding="utf-8"), parse_constant=_no_constants)
        _check_record(record, folder)
    except RecursionError:
        raise ValueError(f"{str(config_path)!r} is not a valid lmlab checkpoint: it is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(config_path)!r} is not a valid lmlab checkpoint: {err}") from None
    ckpt = Checkpoint(
        path=folder, kind=record["kind"], model_config=record["model_config"], step=record["step"],
        tokenizer_dict=record.get("tokenizer"), train_config=record.get("train_config"),
        history=record.get("history"), metadata=record.get("metadata") or {}, extra=record.get("extra") or {},
        files=record["files"], optimizer_meta=record.get("optimizer"))
    for name in ckpt.files.values():
        if name and not (folder / name).is_file():
            raise ValueError(f"checkpoint {str(folder)!r} is incomplete: {name}, named in {CONFIG_FILE}, is missing")
    return ckpt


def _no_constants(name):
    raise ValueError(f"it holds {name}; no field may hold NaN or Infinity")


def _check_record(r, folder: Path) -> None:
    """Raise a ValueError (one sentence naming the field) unless `r` has the fields and types `save_checkpoint` writes."""
    if not isinstance(r, dict):
        raise ValueError(f"it must hold a JSON object, got a {_json_type(r)}")
    if r.get("format") != FORMAT:
        raise ValueError(f"its format field is {r.get('format')!r:.80}, not {FORMAT!r}")
    version = r.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r:.80}")
    if version > VERSION:
        raise ValueError(f"it has format version {version} and this lmlab reads up to {VERSION}")
    if r.get("kind") not in list(MODELS):
        raise ValueError(f"kind must be one of {sorted(MODELS)}, got {r.get('kind')!r:.80}")
    _check_flat_object(r.get("model_config"), "model_config", nullable=False)
    step = r.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r:.80}")
    files = r.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"files must be an object naming the model and state files, got a {_json_type(files)}")
    if sorted(files) != ["model", "state"]:
        raise ValueError(f"files must name 'model' and 'state', got {sorted(files)!r:.80}")
    _check_file_name(folder, files["model"], "model")
    if files["state"] is not None:
        _check_file_name(folder, files["state"], "state")
    for name in ("tokenizer", "history"):
        if r.get(name) is not None and not isinstance(r[name], dict):
            raise ValueError(f"{name} must be an object or null, got a {_json_type(r[name])}")
    _check_flat_object(r.get("train_config"), "train_config", nullable=True)
    for name in ("extra", "metadata"):
        if r.get(name) is not None and not isinstance(r[name], dict):
            raise ValueError(f"{name} must be an object, got a {_json_type(r[name])}")
    opt = r.get("optimizer")
    if opt is not None and not (
            isinstance(opt, dict) and isinstance(opt.get("param_groups"), list) and isinstance(opt.get("state"), dict)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                    and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"]) for g in opt["param_groups"])
            and all(re.fullmatch(r"\d{1,9}", k) and isinstance(v, dict) for k, v in opt["state"].items())):
        raise ValueError("optimizer must be null or an object with a param_groups list (each group with a list of "
                         "parameter indices) and a state object")


def _check_flat_object(value, name, nullable):
    if value is None and nullable:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object{' or null' if nullable else ''}, got a {_json_type(value)}")
    for key, v in value.items():
        if v is not None and not isinstance(v, (int, float, str, bool)):
            raise ValueError(f"{name}.{key} must be a number, string, bool or null, got a {_json_type(v)}")


def _json_type(value) -> str:
    return {dict: "dict", list: "list", str: "str", bool: "bool", int: "int", float: "float"}.get(type(value), "null")


def _check_file_name(folder: Path, name, field_name) -> None:
    """A file named in checkpoint.json is a plain .safetensors file name inside `folder`: no path, no way out."""
    plain = (isinstance(name, str) and name.endswith(".safetensors") and name == Path(name).name
             and "\\" not in name and "\x00" not in name and not name.startswith("."))
    if not plain:
        raise ValueError(f"files.{field_name} must be the name of a .safetensors file in the checkpoint folder, "
                         f"got {name!r:.80}")
    if (folder / name).resolve().parent != folder.resolve():
        raise ValueError(f"files.{field_name} {name!r} points outside the checkpoint folder (a symbolic link); "
                         "a checkpoint's files must lie in its folder")


def _read_tensors(file: Path) -> dict:
    try:
        return st.load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{str(file)!r} is not a readable safetensors file: {err}") from None


def _header(file: Path) -> dict:
    """{name: (shape, dtype)} of a safetensors file, from its header alone (no tensor is read)."""
    try:
        with safe_open(str(file), framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: (tuple(s.get_shape()), _DTYPES.get(s.get_dtype(), s.get_dtype())) for name, s in slices.items()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{str(file)!r} is not a readable safetensors file: {err}") from None


def _pick_device(device):
    from lmlab.training import pick_device  # training imports this module

    return pick_device(device)


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


def _match_weights(model, found: dict, file: Path) -> dict:
    """Check tensors `found` ({name: (shape, dtype)}) against `model`'s; returns {model name: stored name}.

    Tied weights (the output layer sharing the token embedding) are one tensor under two names, and
    safetensors stores it once, under either name.
    """
    own = model.state_dict(keep_vars=True)
    aliases = {}
    for name, tensor in own.items():
        aliases.setdefault(id(tensor), []).append(name)
    unknown = sorted(set(found) - set(own))
    if unknown:
        raise ValueError(f"{str(file)!r} does not fit this model: it holds {unknown[0]!r}, which the model has no tensor for")
    mapping = {}
    for names in aliases.values():
        stored = [n for n in names if n in found]
        if not stored:
            raise ValueError(f"{str(file)!r} does not fit this model: it lacks the tensor {names[0]!r}")
        want = own[names[0]]
        for name in stored:
            shape, dtype = found[name]
            if shape != tuple(want.shape):
                raise ValueError(f"{str(file)!r} does not fit this model: {name} has shape {shape}, "
                                 f"but the model's has shape {tuple(want.shape)}")
            if dtype != want.dtype:
                raise ValueError(f"{str(file)!r} does not fit this model: {name} has dtype {dtype}, "
                                 f"but the model's has dtype {want.dtype}")
        mapping.update((n, stored[0]) for n in names)
    return mapping


def load_weights(model, ckpt) -> None:
    """Copy the weights of checkpoint `ckpt` (a Checkpoint or a path) into `model`, after checking they fit.

    Every stored tensor is checked against the one it replaces (name, shape, dtype) and for NaN or
    inf before the model is touched.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    check_compatible(ckpt, model)
    model = unwrap(model)
    file = ckpt.path / ckpt.files["model"]
    tensors = _read_tensors(file)
    mapping = _match_weights(model, {k: (tuple(t.shape), t.dtype) for k, t in tensors.items()}, file)
    bad = first_nonfinite(tensors.items())
    if bad is not None:
        raise ValueError(f"{str(file)!r} holds non-finite values (nan or inf) in {bad!r}; finite weights only can be loaded")
    model.load_state_dict({name: tensors[stored] for name, stored in mapping.items()})


# The state each parameter of torch's Adam and AdamW has, once it has taken a step.
_ADAM_STATE = {"step", "exp_avg", "exp_avg_sq"}
# Settings that say how an optimizer computes, not what: the optimizer built for this run decides them.
_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


def load_optimizer_state(optimizer, ckpt: Checkpoint) -> None:
    """Load the optimizer state of `ckpt` into `optimizer`, after checking every setting and tensor against it.

    Each moment must have its parameter's shape and dtype and finite values (second moments >= 0),
    each `step` must be a finite scalar, and the parameter groups must be the optimizer's: a crafted
    or damaged file is a ValueError, never memory read out of bounds by a fused kernel.
    """
    state = ckpt.optimizer_state
    if state is None:
        raise ValueError(f"checkpoint {str(ckpt.path)!r} holds no optimizer state (it holds weights only)")
    optimizer.load_state_dict(check_optimizer_state(optimizer, state, repr(str(ckpt.path / ckpt.files["state"]))))


def check_optimizer_state(optimizer, state: dict, where: str) -> dict:
    """`state` (an optimizer `state_dict()` read from a file) checked against `optimizer`; returned ready to load."""
    live_groups = optimizer.state_dict()["param_groups"]
    groups = state["param_groups"]
    if len(groups) != len(live_groups):
        raise ValueError(f"{where} holds {len(groups)} optimizer parameter groups, but the optimizer has {len(live_groups)}")
    params, checked = {}, []
    for i, (group, live, torch_group) in enumerate(zip(groups, live_groups, optimizer.param_groups)):
        for key in live:
            if key not in group:
                raise ValueError(f"{where}: optimizer parameter group {i} lacks the setting {key!r}")
        for key in group:
            if key not in live:
                raise ValueError(f"{where}: optimizer parameter group {i} has the setting {key!r}, which this optimizer does not have")
        if len(group["params"]) != len(live["params"]):
            raise ValueError(f"{where}: optimizer parameter group {i} holds {len(group['params'])} parameters, "
                             f"but the optimizer's holds {len(live['params'])}")
        if group["params"] != live["params"]:
            raise ValueError(f"{where}: optimizer parameter group {i} lists its parameters in another order than the optimizer")
        for key, value in group.items():
            if key != "params" and key not in _IMPLEMENTATION:
                _check_setting(value, live[key], key, i, where)
        checked.append({**group, **{k: live[k] for k in _IMPLEMENTATION if k in live}})
        params.update((index, (p, group)) for index, p in zip(live["params"], torch_group["params"]))

    adam = isinstance(optimizer, torch.optim.Adam)  # AdamW is an Adam
    for index, entries in state["state"].items():
        if index not in params:
            raise ValueError(f"{where} holds optimizer state for parameter {index}, but the optimizer has parameters "
                             f"0 to {len(params) - 1}")
        p, group = params[index]
        if adam:
            expected = _ADAM_STATE | ({"max_exp_avg_sq"} if group.get("amsgrad") else set())
            for name in sorted(expected - set(entries)):
                raise ValueError(f"{where}: the optimizer state of parameter {index} lacks {name!r}")
            for name in sorted(set(entries) - expected):
                raise ValueError(f"{where}: the optimizer state of parameter {index} has {name!r}, which "
                                 f"{type(optimizer).__name__} does not keep")
        for name, value in entries.items():
            _check_state_tensor(value, p, f"optimizer.{index}.{name}", where)
    return {"state": state["state"], "param_groups": checked}


def _check_setting(value, live, key, i, where):
    """A stored optimizer setting must have the type of the live one; numbers finite and >= 0, betas < 1."""
    what = f"{where}: optimizer setting {key!r} of group {i}"
    if isinstance(live, bool) or live is None or isinstance(live, str):
        if value != live or type(value) is not type(live):  # flags change what the optimizer does: not the file's call
            raise ValueError(f"{what} is {value!r:.40}, but the optimizer has {live!r}")
        return
    numbers = list(value) if isinstance(value, (list, tuple)) else [value]
    ok = (isinstance(value, (list, tuple)) == isinstance(live, (list, tuple)) and len(numbers) == len(
        list(live) if isinstance(live, (list, tuple)) else [live])
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf") for x in numbers))
    if ok and key == "betas":
        ok = all(x < 1 for x in numbers)
    if ok and key == "eps":
        ok = numbers[0] > 0
    if not ok:
        raise ValueError(f"{what} must be {'two numbers in [0, 1)' if key == 'betas' else 'a finite number > 0' if key == 'eps' else 'finite and >= 0, like ' + repr(live)}, got {value!r:.40}")


def _check_state_tensor(value, p, name, where):
    if not torch.is_tensor(value):
        raise ValueError(f"{where}: {name} must be a tensor, got {value!r:.40}")
    if name.endswith(".step"):
        if value.shape != () or not value.is_floating_point():
            raise ValueError(f"{where}: {name} must be a scalar float tensor (shape ()), got shape {tuple(value.shape)} "
                             f"and dtype {value.dtype}")
        step = float(value)
        if not (0 <= step < float("inf")) or step != int(step):
            raise ValueError(f"{where}: {name} must count steps (a whole number >= 0), got {step}")
        return
    if value.shape != p.shape:
        raise ValueError(f"{where}: {name} has shape {tuple(value.shape)}, but its parameter has shape {tuple(p.shape)}")
    if value.dtype != p.dtype:
        raise ValueError(f"{where}: {name} has dtype {value.dtype}, but its parameter has dtype {p.dtype}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{where}: {name} holds non-finite values (nan or inf); the file is damaged")
    if name.endswith("_sq") and bool((value < 0).any()):
        raise ValueError(f"{where}: {name} holds negative values, but a second moment is a mean of squares (>= 0)")


def load_model(path, device="cpu"):
    """(model, tokenizer) from a checkpoint folder; the model in eval mode, the tokenizer None if none was saved."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(device), ckpt.tokenizer
