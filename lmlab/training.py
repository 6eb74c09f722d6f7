"""The training loop: batches of random windows, AdamW, a warmup + cosine schedule, evaluation, checkpoints.

    history = train(model, train_ids, val_ids, tokenizer=tok, steps=2000, batch_size=32, lr=1e-3,
                    out_dir="runs/shakespeare")
    plt.plot(history.step, history.train_loss); plt.plot(history.val_step, history.val_loss)

One function trains both models: a `GPT` with the causal LM objective ("clm": predict every next
token of a window) and a `MaskedLM` with the masked LM objective ("mlm": BERT's 15 % masking, loss on
the masked positions). The same call runs unchanged under `torchrun --nproc_per_node=N`: it then joins
the process group, wraps the model in DistributedDataParallel, gives every rank its own windows, and
lets only rank 0 log, evaluate and save.

Reproducibility: the windows (and masks) of step s come from a generator seeded with (seed, rank, s),
so the data position is the step itself; dropout draws from torch's global generator, whose state is
saved in each checkpoint. A run interrupted at step N and resumed from its checkpoint therefore
reproduces, on CPU, the losses of the run that was never interrupted.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmlab import checkpoints
from lmlab.checkpoints import unwrap
from lmlab._checks import check_fraction, check_nonnegative_int, check_positive_int
from lmlab.models import kind_of
from lmlab.objectives import mask_tokens, mlm_loss

OBJECTIVES = {"gpt": "clm", "masked_lm": "mlm"}  # model kind -> the objective it learns


@dataclass
class TrainConfig:
    """Every setting of a training run; saved in each checkpoint so that a resumed run continues it."""

    objective: str | None = None  # "clm" or "mlm"; None: the one that fits the model
    steps: int = 1000  # optimizer steps in the whole run
    batch_size: int = 32  # windows per step (per process under torchrun)
    block_size: int | None = None  # tokens per window; None: the model's context length
    lr: float = 1e-3  # peak learning rate, reached after the warmup
    min_lr: float | None = None  # learning rate at the last step; None: lr / 10
    warmup_steps: int | None = None  # linear warmup from ~0 to lr; None: min(100, steps // 10)
    weight_decay: float = 0.1  # AdamW decay, applied to matrices and embeddings, not to biases or norms
    beta1: float = 0.9
    beta2: float = 0.99  # 0.99 rather than 0.999: small models on small batches (as in nanoGPT's char runs)
    grad_clip: float = 1.0  # clip the gradient's global norm to this; 0 turns clipping off
    eval_interval: int | None = None  # steps between evaluations; None: steps // 10 (at least 1)
    eval_batches: int = 20  # batches of validation windows per evaluation
    log_interval: int = 10  # steps between progress-bar / history updates (the only host syncs)
    checkpoint_interval: int | None = None  # steps between checkpoints; None: at every evaluation
    sample_tokens: int = 0  # tokens to sample at each evaluation (needs a tokenizer); 0: none
    sample_prompt: str | None = None  # prompt of those samples; None: the start of the validation text
    seed: int = 1337
    device: str | None = None  # "cuda", "mps", "cpu" or None/"auto": the first one available
    compile: bool = False  # torch.compile the model (optional speed-up; never needed)

    def resolved(self, model) -> "TrainConfig":
        """A copy with every None filled in for `model`, checked: each bad setting is one ValueError."""
        c = TrainConfig(**asdict(self))
        objective = OBJECTIVES[kind_of(unwrap(model))]
        if c.objective is None:
            c.objective = objective
        if c.objective not in ("clm", "mlm"):
            raise ValueError(f"objective must be 'clm' or 'mlm', got {c.objective!r}")
        if c.objective != objective:
            raise ValueError(f"objective {c.objective!r} does not fit a {kind_of(unwrap(model))} model, which learns {objective!r}")
        context = unwrap(model).config.block_size
        if c.block_size is None:
            c.block_size = context
        check_positive_int(c.steps, "steps")
        check_positive_int(c.batch_size, "batch_size")
        check_positive_int(c.block_size, "block_size")
        if c.block_size > context:
            raise ValueError(f"block_size must be at most the model's context length {context}, got {c.block_size}")
        _check_positive_float(c.lr, "lr")
        c.min_lr = c.lr / 10 if c.min_lr is None else c.min_lr
        if not (isinstance(c.min_lr, (int, float)) and 0 <= c.min_lr <= c.lr):
            raise ValueError(f"min_lr must be in [0, lr={c.lr}], got {c.min_lr!r}")
        c.warmup_steps = min(100, c.steps // 10) if c.warmup_steps is None else c.warmup_steps
        check_nonnegative_int(c.warmup_steps, "warmup_steps")
        if not (isinstance(c.weight_decay, (int, float)) and 0 <= c.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {c.weight_decay!r}")
        check_fraction(c.beta1, "beta1", high_open=True)
        check_fraction(c.beta2, "beta2", high_open=True)
        if not (isinstance(c.grad_clip, (int, float)) and c.grad_clip >= 0):
            raise ValueError(f"grad_clip must be a number >= 0 (0 turns clipping off), got {c.grad_clip!r}")
        c.eval_interval = max(1, c.steps // 10) if c.eval_interval is None else c.eval_interval
        check_positive_int(c.eval_interval, "eval_interval")
        check_positive_int(c.eval_batches, "eval_batches")
        check_positive_int(c.log_interval, "log_interval")
        c.checkpoint_interval = c.eval_interval if c.checkpoint_interval is None else c.checkpoint_interval
        check_positive_int(c.checkpoint_interval, "checkpoint_interval")
        check_nonnegative_int(c.sample_tokens, "sample_tokens")
        if c.sample_prompt is not None and not isinstance(c.sample_prompt, str):
            raise ValueError(f"sample_prompt must be a str or None, got {type(c.sample_prompt).__name__}")
        if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {c.seed!r}")
        if not isinstance(c.compile, bool):
            raise ValueError(f"compile must be True or False, got {c.compile!r}")
        pick_device(c.device)  # checks the name
        return c


@dataclass
class History:
    """What happened during training, for plotting: one entry per log interval and per evaluation."""

    step: list = field(default_factory=list)  # optimizer steps done at each log
    train_loss: list = field(default_factory=list)  # mean training loss over the log interval
    lr: list = field(default_factory=list)  # learning rate of the last step of the interval
    tokens: list = field(default_factory=list)  # tokens seen so far (all processes together)
    time: list = field(default_factory=list)  # wall-clock seconds of training so far
    tokens_per_s: list = field(default_factory=list)  # throughput over the interval
    val_step: list = field(default_factory=list)  # step of each evaluation
    val_loss: list = field(default_factory=list)  # mean validation loss at that step
    val_time: list = field(default_factory=list)  # wall-clock seconds at that evaluation
    samples: list = field(default_factory=list)  # [step, text] of each sample shown at an evaluation
    interrupted: bool = False  # True when Ctrl-C (or `callback`) stopped the run early

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """The history saved in a checkpoint, checked: lists of numbers ([step, text] pairs for samples)."""
        if not isinstance(d, dict):
            raise ValueError(f"history must be a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        h = cls(**{k: v for k, v in d.items() if k in names})
        for name in names - {"samples", "interrupted"}:
            value = getattr(h, name)
            if not (isinstance(value, list) and all(_is_number(x) for x in value)):
                raise ValueError(f"history.{name} must be a list of finite numbers, got {str(value)[:60]}")
        if not (isinstance(h.samples, list) and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], int)
                                                    and isinstance(s[1], str) for s in h.samples)):
            raise ValueError(f"history.samples must be a list of [step, text] pairs, got {str(h.samples)[:60]}")
        if not isinstance(h.interrupted, bool):
            raise ValueError(f"history.interrupted must be true or false, got {h.interrupted!r:.40}")
        logs = {len(getattr(h, n)) for n in ("step", "train_loss", "lr", "tokens", "time", "tokens_per_s")}
        evals = {len(getattr(h, n)) for n in ("val_step", "val_loss", "val_time")}
        if len(logs) > 1 or len(evals) > 1:
            raise ValueError("history must have one entry per log in each of step, train_loss, lr, tokens, time, "
                             "tokens_per_s, and one per evaluation in each of val_step, val_loss, val_time")
        return h


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------------------- settings


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else the best one available: cuda, then mps, then cpu."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but MPS is not available here; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return dev


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup to `lr`, then cosine decay to `min_lr`.

    The warmup keeps the first updates small while Adam's moment estimates are still noise; the cosine
    decay lets the run settle into a minimum at the end.
    """
    if step < 0 or warmup_steps < 0 or steps < 1 or not 0 <= min_lr <= lr:
        raise ValueError(f"lr_at needs step >= 0, warmup_steps >= 0, steps >= 1 and 0 <= min_lr <= lr, got "
                         f"step={step}, warmup_steps={warmup_steps}, steps={steps}, min_lr={min_lr}, lr={lr}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def memory_needed(n_params: int, *, n_layer: int, n_embd: int, vocab_size: int, block_size: int,
                  batch_size: int) -> tuple[int, int]:
    """Bytes a training step needs at the very least, as (model state, activations of one batch).

    The model state is 16 bytes per parameter (float32 weights, gradients and AdamW's two moments).
    For the backward pass every block keeps about 12 * n_embd numbers per token and the loss keeps
    the logits and their softmax (2 * vocab_size), at least 2 bytes each (bfloat16). A lower bound:
    what it refuses cannot run, and an absurd size is caught before any memory is asked for.
    """
    state = 16 * n_params
    activations = 2 * batch_size * block_size * (12 * n_layer * n_embd + 2 * vocab_size)
    return state, activations


def memory_available(device: torch.device) -> int | None:
    """Total memory of `device` in bytes: the GPU's, else the machine's RAM; None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def size_text(n_bytes: float) -> str:
    """`123 GB`: a byte count for a message."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1000 or unit == "PB":
            return f"{n_bytes:,.0f} {unit}"
        n_bytes /= 1000


def _check_memory(model, cfg: "TrainConfig") -> None:
    """One sentence, before anything is allocated, when the model or the batch cannot fit in the device's memory."""
    device = pick_device(cfg.device)
    available = memory_available(device)
    c = unwrap(model).config
    n_params = sum(p.numel() for p in model.parameters())
    state, activations = memory_needed(n_params, n_layer=c.n_layer, n_embd=c.n_embd, vocab_size=c.vocab_size,
                                       block_size=cfg.block_size, batch_size=cfg.batch_size)
    if available is None or state + activations <= available:
        return
    if state > available:
        raise ValueError(f"model has {n_params:,} parameters, which need at least {size_text(state)} to train, more "
                         f"than the {size_text(available)} of memory on {device}; build a smaller model")
    raise ValueError(f"batch_size {cfg.batch_size} of {cfg.block_size}-token windows needs at least "
                     f"{size_text(activations)} for one step, more than the {size_text(available - state)} left on "
                     f"{device}; use a smaller batch_size")


def _check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def as_token_tensor(data, name: str, vocab_size: int | None = None) -> torch.Tensor:
    """A 1-D LongTensor of token ids from a tensor or a list of ints."""
    if isinstance(data, (list, tuple)):
        data = torch.tensor(data, dtype=torch.long)
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or data.is_floating_point() or data.dtype == torch.bool:
        got = f"shape {tuple(data.shape)} and dtype {data.dtype}" if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"{name} must be a 1-D tensor (or list) of token ids, got {got}")
    data = data.long()
    if vocab_size is not None and data.numel() and (int(data.min()) < 0 or int(data.max()) >= vocab_size):
        bad = int(data.min()) if int(data.min()) < 0 else int(data.max())
        raise ValueError(f"{name} contains id {bad}, outside the model's vocabulary [0, {vocab_size})")
    return data


def _window(objective: str, block_size: int) -> int:
    # a causal window needs one token more than the model sees: the target of its last position
    return block_size + 1 if objective == "clm" else block_size


def _check_long_enough(data, objective, block_size, name):
    need = _window(objective, block_size)
    if len(data) < need:
        raise ValueError(
            f"{name} holds {len(data)} tokens but one training window needs {need} (block_size {block_size}"
            f"{' + 1' if objective == 'clm' else ''}); give a longer text or a smaller block_size"
        )


# ----------------------------------------------------------------------------------- batches, loss


def get_batch(data: torch.Tensor, batch_size: int, window: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` windows of `window` consecutive tokens at random offsets: (batch, window)."""
    if len(data) < window:
        raise ValueError(f"data holds {len(data)} tokens but one window needs {window}")
    starts = torch.randint(len(data) - window + 1, (batch_size,), generator=generator, device=generator.device)
    return data[starts.to(data.device)[:, None] + torch.arange(window, device=data.device)]


@dataclass
class Masking:
    """BERT's masking rule with the ids it needs (from the tokenizer's special tokens): `masking(windows, generator)`."""

    mask_token_id: int
    vocab_size: int
    special_token_ids: tuple = ()
    pad_token_id: int | None = None

    @classmethod
    def for_model(cls, model, tokenizer=None, mask_token_id=None):
        cfg = unwrap(model).config
        specials = dict(getattr(tokenizer, "special_ids", None) or {})
        if mask_token_id is None:
            mask_token_id = specials.get("[MASK]")
        if mask_token_id is None:
            raise ValueError("tokenizer must have a [MASK] special token to train or evaluate a masked LM, got none")
        pad = specials.get("[PAD]", getattr(cfg, "pad_token_id", None))
        others = tuple(i for t, i in specials.items() if t not in ("[MASK]", "[PAD]"))
        return cls(int(mask_token_id), cfg.vocab_size, others, pad)

    def __call__(self, windows, generator):
        return mask_tokens(windows, mask_token_id=self.mask_token_id, vocab_size=self.vocab_size,
                           special_token_ids=self.special_token_ids, pad_token_id=self.pad_token_id,
                           generator=generator)


def batch_loss(model, windows: torch.Tensor, objective: str, masking: Masking | None = None, generator=None):
    """Loss of one batch of windows (batch, window).

    clm: the model reads tokens 0..T-1 of each window and is scored on tokens 1..T, every position a
    prediction (the same numbers as `objectives.clm_loss` on the window, without its one wasted position).
    mlm: the windows are masked with BERT's rule and the model is scored on the masked positions.
    """
    if objective == "clm":
        logits = model(windows[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
    masked, labels = masking(windows, generator)
    return mlm_loss(model(masked), labels)


@torch.no_grad()
def evaluate(model, data, *, tokenizer=None, objective: str | None = None, block_size: int | None = None,
             batch_size: int = 32, max_batches: int | None = None, seed: int = 0, device=None) -> float:
    """Mean loss of `model` on held-out token ids `data` (1-D), deterministic.

    The text is cut into consecutive windows of `block_size` (+1 for clm); with `max_batches`, only
    `max_batches * batch_size` of them are used, spread evenly over the whole text. Masks (mlm) come
    from a generator seeded with `seed`, so the same call always gives the same number.
    """
    raw = unwrap(model)
    kind = kind_of(raw)
    objective = objective or OBJECTIVES[kind]
    if objective != OBJECTIVES[kind]:
        raise ValueError(f"objective {objective!r} does not fit a {kind} model, which learns {OBJECTIVES[kind]!r}")
    block_size = raw.config.block_size if block_size is None else check_positive_int(block_size, "block_size")
    check_positive_int(batch_size, "batch_size")
    if max_batches is not None:
        check_positive_int(max_batches, "max_batches")
    data = as_token_tensor(data, "data", raw.config.vocab_size)
    _check_long_enough(data, objective, block_size, "data")
    device = next(raw.parameters()).device if device is None else pick_device(device)
    masking = Masking.for_model(raw, tokenizer) if objective == "mlm" else None
    generator = torch.Generator().manual_seed(seed)

    window = _window(objective, block_size)
    n = (len(data) - window) // block_size + 1  # windows starting at 0, T, 2T, ... (clm ones share an edge)
    index = torch.arange(n)
    if max_batches is not None and max_batches * batch_size < n:
        index = torch.linspace(0, n - 1, max_batches * batch_size).round().long()
    starts = index * block_size
    was_training = raw.training
    raw.eval()
    total, count = 0.0, 0
    try:
        for chunk in starts.split(batch_size):
            windows = data[chunk[:, None] + torch.arange(window)]
            loss = batch_loss(raw, windows.to(device), objective, masking, generator)
            total, count = total + float(loss) * len(chunk), count + len(chunk)
    finally:
        raw.train(was_training)
    return total / count


# --------------------------------------------------------------------------------------- sampling


def _sample_text(model, tokenizer, prompt_ids, max_new_tokens, seed, temperature=0.8) -> str:
    """A short continuation of `prompt_ids` (list of ints), sampled at `temperature`, as text."""
    from lmlab.decoding import sample

    ids = torch.tensor([prompt_ids], dtype=torch.long, device=next(model.parameters()).device)
    return tokenizer.decode(sample(model, ids, max_new_tokens, temperature=temperature, seed=seed)[0].tolist())


@torch.no_grad()
def _fill_masks_text(model, tokenizer, window, masking, generator) -> str:
    """Mask 15 % of one window, let the model fill them in, and show both texts."""
    masked, labels = mask_tokens(window[None], mask_token_id=masking.mask_token_id, vocab_size=masking.vocab_size,
                                 special_token_ids=masking.special_token_ids, pad_token_id=masking.pad_token_id,
                                 mask_rate=1.0, random_rate=0.0, generator=generator)
    guess = model(masked).argmax(-1)
    chosen = labels != -100
    filled = torch.where(chosen, guess, masked)
    right = int((guess[chosen] == labels[chosen]).sum())
    return (f"masked: {tokenizer.decode(masked[0].tolist())!r}\nfilled: {tokenizer.decode(filled[0].tolist())!r}"
            f"\n({right} of {int(chosen.sum())} masked tokens right)")


def _show_sample(model, tokenizer, cfg, val_data, masking, prompt_ids) -> str:
    model.eval()
    try:  # the same seed at every evaluation, so that the samples can be compared
        if cfg.objective == "clm":
            return _sample_text(model, tokenizer, prompt_ids, cfg.sample_tokens, cfg.seed)
        window = val_data[: min(cfg.block_size, cfg.sample_tokens, len(val_data))].to(next(model.parameters()).device)
        return _fill_masks_text(model, tokenizer, window, masking, torch.Generator().manual_seed(cfg.seed))
    finally:
        model.train()


# --------------------------------------------------------------------------------------- optimizer


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices and embeddings only (decaying biases and norms only hurts)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameter that requires a gradient (a model loaded for inference, such as "
                         "pretrained.load('smollm2-135m')); call model.requires_grad_() first to train it")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    device_type = params[0].device.type
    # the fused kernel (one C++ loop over all tensors) is the fastest AdamW on CPU and CUDA
    fused = device_type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


# ----------------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group, so we also destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str | None) -> _Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist()
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or device in ("auto", "cuda") or str(device).startswith("cuda"))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def _any_rank(flag: bool, dist_info: _Dist, device) -> bool:
    """True on every rank when `flag` is True on at least one (so all ranks stop at the same step)."""
    if dist_info.world_size == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class _StopOnCtrlC:
    """While active, Ctrl-C (SIGINT) only asks the loop to stop after the current step; a second one aborts,
    except during a save, which always finishes (the loop then stops right after it)."""

    def __init__(self):
        self.requested = False
        self.saving = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and self.saving:
            print("\nfinishing the checkpoint save, then stopping", file=sys.stderr, flush=True)
        elif self.requested:  # asked twice: give up on a clean stop
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# ----------------------------------------------------------------------------------------- train


def train(model, train_data, val_data=None, config: TrainConfig | None = None, *, tokenizer=None,
          out_dir=None, resume=False, progress: bool = True, callback=None, metadata: dict | None = None,
          **settings) -> History:
    """Train `model` on token ids `train_data` (1-D) and return its `History`.

    model: a `GPT` (causal LM objective) or `MaskedLM` (masked LM objective); it is trained in place.
    val_data: held-out token ids (1-D), evaluated every `eval_interval` steps.
    config / settings: a `TrainConfig`, and/or its fields as keywords (`steps=500, lr=2e-3`), which win.
    tokenizer: needed for samples, for the masked LM's [MASK] id, and stored in the checkpoints.
    out_dir: folder for checkpoints (saved every `checkpoint_interval` steps, at the end and on Ctrl-C).
    resume: True to continue from the checkpoint in `out_dir`, or the path of another checkpoint; the
        run's settings then come from the checkpoint, and keywords given here override them (`steps=`).
    callback: called as `callback(history)` at each log; returning True stops the run (like Ctrl-C).
    metadata: a JSON-able dict stored in the checkpoints (the command line uses it for its arguments).

    Training seeds torch's global generator (dropout draws from it), so random numbers drawn after a
    call depend on `seed`, not on what was drawn before it.
    """
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ValueError(f"{unknown[0]} is not a training setting; the settings are: {', '.join(sorted(names))}")
    if config is not None and not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **settings})

    start_step, history, partial, rng_state, ckpt = 0, History(), (0.0, 0), None, None
    if resume:
        if resume is True and out_dir is None:
            raise ValueError("resume=True needs out_dir, the folder of the checkpoint to continue from")
        ckpt = checkpoints.load_checkpoint(out_dir if resume is True else resume)
        checkpoints.check_compatible(ckpt, model, tokenizer)
        start_step, history, partial, rng_state = _resume_state(ckpt)
        stored = ckpt.train_config or {}
        unknown = sorted(set(stored) - names)
        if unknown:
            raise ValueError(f"checkpoint {str(ckpt.path)!r} has train_config.{unknown[0]}, which is not a training setting")
        cfg = TrainConfig(**{**stored, **settings}) if stored else cfg
        if metadata is None:
            metadata = ckpt.metadata
    cfg = cfg.resolved(model)
    _check_memory(model, cfg)

    vocab = model.config.vocab_size
    train_data = as_token_tensor(train_data, "train_data", vocab)
    _check_long_enough(train_data, cfg.objective, cfg.block_size, "train_data")
    if val_data is not None:
        val_data = as_token_tensor(val_data, "val_data", vocab)
        _check_long_enough(val_data, cfg.objective, cfg.block_size, "val_data")
    masking = Masking.for_model(model, tokenizer) if cfg.objective == "mlm" else None
    if cfg.sample_tokens and tokenizer is None:
        raise ValueError("sample_tokens > 0 needs a tokenizer to show the samples as text, got tokenizer=None")
    prompt_ids = _prompt_ids(cfg, tokenizer, val_data if val_data is not None else train_data)

    if ckpt is not None:  # every tensor checked against the one it replaces; nothing is saved before this
        checkpoints.load_weights(model, ckpt)
    dist_info = _setup_distributed(cfg.device)
    try:
        if out_dir is not None and dist_info.main:
            checkpoints.remove_leftovers(out_dir)  # of a save killed mid-write
        device = pick_device(cfg.device)
        if dist_info.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
            torch.cuda.set_device(device)
        model.to(device)
        model.train()
        optimizer = make_optimizer(model, cfg)
        if ckpt is not None and ckpt.optimizer_meta is not None:
            checkpoints.load_optimizer_state(optimizer, ckpt)
        torch.manual_seed((cfg.seed + dist_info.rank) % 2**64)  # dropout's generator
        if rng_state is not None and dist_info.world_size == 1:
            checkpoints.set_rng_state(rng_state)
        return _loop(model, optimizer, cfg, train_data.to(device), val_data, tokenizer, masking, prompt_ids,
                     device, dist_info, out_dir, start_step, history, partial, progress, callback, metadata)
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _resume_state(ckpt):
    """(step, history, partial loss, generator state) of a checkpoint to resume, each checked."""
    where = f"checkpoint {str(ckpt.path)!r}"
    try:
        history = History.from_dict(ckpt.history or {})
    except ValueError as err:
        raise ValueError(f"{where} has a damaged {err}") from None
    history.interrupted = False
    partial = ckpt.extra.get("partial_loss", [0.0, 0])
    if not (isinstance(partial, list) and len(partial) == 2 and _is_number(partial[0]) and partial[0] >= 0
            and isinstance(partial[1], int) and not isinstance(partial[1], bool) and partial[1] >= 0):
        raise ValueError(f"{where} has extra.partial_loss {str(partial)[:60]}; expected [sum of losses >= 0, count >= 0]")
    rng_state = ckpt.rng_state
    if rng_state is None and ckpt.optimizer_meta is not None:  # train() always saves both
        raise ValueError(f"{str(ckpt.path / ckpt.files['state'])!r} holds no generator state rng.torch, which a "
                         "training checkpoint keeps so that a resumed run is exact")
    return ckpt.step, history, tuple(partial), rng_state


def _prompt_ids(cfg, tokenizer, text_ids):
    if cfg.sample_tokens == 0 or cfg.objective != "clm":
        return None
    if cfg.sample_prompt is not None:
        ids = tokenizer.encode(cfg.sample_prompt)
        if not ids:
            raise ValueError("sample_prompt must encode to at least one token, got an empty prompt")
        return ids
    return text_ids[: min(16, len(text_ids))].tolist()


def _loop(model, optimizer, cfg, train_data, val_data, tokenizer, masking, prompt_ids, device, dist_info,
          out_dir, step, history, partial, progress, callback, metadata) -> History:
    raw = model
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and torch.cuda.is_bf16_supported()
                else torch.autocast(device.type, enabled=False))
    window = _window(cfg.objective, cfg.block_size)
    tokens_per_step = cfg.batch_size * cfg.block_size * dist_info.world_size
    generator = torch.Generator(device="cpu")
    base_seed = (cfg.seed * 1_000_003 + dist_info.rank) * 1_000_003  # per rank: distinct windows on each
    check_each_step = _loss_read_every_step(device, dist_info)
    loss_sum = torch.tensor(partial[0], device=device)
    loss_count = partial[1]
    elapsed0 = history.time[-1] if history.time else 0.0
    t_start = time.perf_counter()
    t_log, step_log = t_start, step

    def elapsed():
        return elapsed0 + time.perf_counter() - t_start

    def check_finite(weights: bool):
        """Stop with FloatingPointError before a diverged model is logged, evaluated or saved."""
        loss_bad = not math.isfinite(float(loss_sum))
        bad = None if loss_bad or not weights else checkpoints.first_nonfinite(raw.named_parameters())
        if _any_rank(loss_bad or bad is not None, dist_info, device):
            what = ("the training loss is not finite" if loss_bad else
                    f"the weights hold nan or inf (in {bad})" if bad else "another process's loss or weights are not finite")
            raise _diverged(step, what, cfg, out_dir if dist_info.main else None)

    def save():
        check_finite(weights=True)
        if out_dir is None or not dist_info.main:
            return
        ctrl_c.saving = True  # a second Ctrl-C now would leave no checkpoint of this stop: finish the save first
        try:
            checkpoints.save_checkpoint(
                out_dir, raw, tokenizer=tokenizer, optimizer=optimizer, step=step, train_config=asdict(cfg),
                history=history.to_dict(), rng_state=checkpoints.get_rng_state(),
                extra={"partial_loss": [float(loss_sum), loss_count]}, metadata=metadata)
        finally:
            ctrl_c.saving = False

    def run_eval():
        if val_data is None:
            return
        check_finite(weights=True)
        if not dist_info.main:
            return
        loss = evaluate(raw, val_data, tokenizer=tokenizer, objective=cfg.objective, block_size=cfg.block_size,
                        batch_size=cfg.batch_size, max_batches=cfg.eval_batches, seed=cfg.seed)
        history.val_step.append(step)
        history.val_loss.append(loss)
        history.val_time.append(elapsed())
        bar.set_postfix_str(_postfix(history))
        if cfg.sample_tokens:
            text = _show_sample(raw, tokenizer, cfg, val_data, masking, prompt_ids)
            history.samples.append([step, text])
            bar.write(f"--- step {step}, val loss {loss:.3f}:\n{text}")

    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and dist_info.main), unit="step",
               dynamic_ncols=True, desc="train")
    stopped = False
    with _StopOnCtrlC() as ctrl_c:
        try:
            if step == 0:
                run_eval()
            while step < cfg.steps:
                lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                generator.manual_seed((base_seed + step) % 2**64)  # the data position is the step itself
                windows = get_batch(train_data, cfg.batch_size, window, generator)
                with autocast:
                    loss = batch_loss(model, windows, cfg.objective, masking, generator)
                if check_each_step and not math.isfinite(value := loss.item()):  # before it reaches the weights
                    raise _diverged(step + 1, f"the training loss is {value}", cfg, out_dir)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_sum += loss.detach()  # stays on the device: no sync until the next log
                loss_count += 1
                bar.update(1)

                if step % cfg.log_interval == 0 or step == cfg.steps:
                    check_finite(weights=False)
                    now = time.perf_counter()
                    history.step.append(step)
                    history.train_loss.append(float(loss_sum) / loss_count)
                    history.lr.append(lr)
                    history.tokens.append(step * tokens_per_step)
                    history.time.append(elapsed())
                    history.tokens_per_s.append((step - step_log) * tokens_per_step / max(now - t_log, 1e-9))
                    t_log, step_log = now, step
                    loss_sum.zero_()
                    loss_count = 0
                    bar.set_postfix_str(_postfix(history))
                    stop_asked = bool(callback is not None and callback(history)) or ctrl_c.requested
                    stopped = _any_rank(stop_asked, dist_info, device)
                elif dist_info.world_size == 1:
                    stopped = ctrl_c.requested
                history.interrupted = stopped
                paused = time.perf_counter()
                if step % cfg.eval_interval == 0 or step == cfg.steps:
                    run_eval()
                if stopped or step % cfg.checkpoint_interval == 0 or step == cfg.steps:
                    save()
                t_log += time.perf_counter() - paused  # tokens/s counts training time only
                if stopped:
                    bar.write(f"stopped at step {step}" + (f"; checkpoint saved in {out_dir}" if out_dir and dist_info.main else ""))
                    break
        finally:
            bar.close()
    return history


def _loss_read_every_step(device, dist_info) -> bool:
    """Reading the loss at every step costs nothing on a CPU; on a GPU it would stall the queue, so there (and
    under torchrun, where all ranks must agree) the loss is checked at each log and before each evaluation and save."""
    return device.type == "cpu" and dist_info.world_size == 1


def _diverged(step: int, what: str, cfg: TrainConfig, out_dir) -> FloatingPointError:
    """The error that stops a diverged run, saying which checkpoint is left (the last finite one)."""
    kept = ""
    if out_dir is not None:
        try:
            kept = f"; the last checkpoint in {str(out_dir)!r} (step {checkpoints.load_checkpoint(out_dir).step}) is kept"
        except (FileNotFoundError, ValueError):
            kept = "; no checkpoint was saved"
    return FloatingPointError(f"training diverged at step {step}: {what}, so it stopped{kept}; "
                              f"lower the learning rate (now {cfg.lr:g}) or warm up longer")


def _postfix(h: History) -> str:
    parts = []
    if h.train_loss:
        parts.append(f"loss {h.train_loss[-1]:.3f}")
    if h.val_loss:
        parts.append(f"val {h.val_loss[-1]:.3f}")
    if h.tokens_per_s:
        parts.append(f"{h.tokens_per_s[-1]:,.0f} tok/s")
    if h.lr:
        parts.append(f"lr {h.lr[-1]:.2e}")
    return ", ".join(parts)
