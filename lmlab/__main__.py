"""Command line: train a model on the course corpus or your own text, then sample from it.

    python -m lmlab train --data shakespeare --tokenizer char --out runs/char --steps 2000
    python -m lmlab train --data my_text.txt --tokenizer bpe --vocab-size 1000 --out runs/mine
    python -m lmlab train --out runs/char --resume --steps 4000     # continue (and extend) a run
    python -m lmlab sample --checkpoint runs/char --prompt "ROMEO:" --temperature 0.8
    python -m lmlab export --checkpoint runs/char --out my_model     # weights + configs only
    python -m lmlab fetch smollm2-135m                               # download a real model once, now

Ctrl-C during training stops after the current step and saves a checkpoint first. Every setting is
checked before any work starts; a bad one is reported in one sentence (exit status 2). A run that
diverges (its loss becomes NaN) or a save that fails (a full disk) stops with one sentence and exit
status 1, the last good checkpoint kept. Under `torchrun --nproc_per_node=N -m lmlab train ...` the
same command trains on N processes.

This file imports torch only once a command runs (it takes seconds): `--help` and bad flags answer at once.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

# Defaults of `train`; kept apart from argparse so that --resume can tell which flags were typed.
TRAIN_DEFAULTS = {
    "data": None, "tokenizer": "char", "vocab_size": 512, "val_fraction": 0.1, "objective": "clm",
    "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0,
    "steps": 2000, "batch_size": 32, "lr": 1e-3, "min_lr": None, "warmup_steps": None, "weight_decay": 0.1,
    "grad_clip": 1.0, "eval_interval": None, "eval_batches": 20, "log_interval": 10, "checkpoint_interval": None,
    "sample_tokens": 200, "sample_prompt": None, "device": "auto", "seed": 1337, "compile": False,
}
MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "tokenizer", "vocab_size", "objective")
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
# Bounds of flags that nothing else bounds (sizes that matter for memory are checked against the device's).
MAX_STEPS = 10**9  # a billion steps already take weeks on a GPU
MAX_NEW_TOKENS = 10**6
BPE_VOCAB = (256, 10**6)  # 256 byte tokens at least (+2 for [PAD] and [MASK] with --objective mlm)
SEEDS = 2**64  # torch's generators take seeds in [0, 2**64)


def _train_parser(sub):
    p = sub.add_parser("train", help="train a causal (GPT) or masked LM on a text file or the course corpus",
                       description="Train a model and save checkpoints into --out. Flags left out take the "
                                   "defaults shown, or, with --resume, the values of the run being continued.",
                       argument_default=argparse.SUPPRESS, allow_abbrev=False)
    d = TRAIN_DEFAULTS
    g = p.add_argument_group("data and tokenizer")
    g.add_argument("--data", metavar="PATH|shakespeare",
                   help="a UTF-8 text file to train on, or 'shakespeare' for the course corpus (required unless --resume)")
    g.add_argument("--tokenizer", choices=["char", "bpe"], help=f"one token per character, or byte-level BPE (default: {d['tokenizer']})")
    g.add_argument("--vocab-size", type=int, metavar="N",
                   help=f"BPE vocabulary size, from {BPE_VOCAB[0]} (the 256 bytes; {BPE_VOCAB[0] + 2} with --objective mlm, "
                        f"for [PAD] and [MASK]) to {BPE_VOCAB[1]:,} (default: {d['vocab_size']})")
    g.add_argument("--val-fraction", type=float, metavar="F",
                   help=f"share of your own text held out for validation, the end of the file (default: {d['val_fraction']}; "
                        "the course corpus holds out whole plays instead)")
    g = p.add_argument_group("model")
    g.add_argument("--objective", choices=["clm", "mlm"], help=f"clm: GPT predicting the next token; mlm: masked LM filling in [MASK] (default: {d['objective']})")
    g.add_argument("--n-layer", type=int, metavar="N", help=f"transformer blocks (default: {d['n_layer']})")
    g.add_argument("--n-head", type=int, metavar="N", help=f"attention heads per block (default: {d['n_head']})")
    g.add_argument("--n-embd", type=int, metavar="N", help=f"width of the token vectors, divisible by --n-head (default: {d['n_embd']})")
    g.add_argument("--block-size", type=int, metavar="N", help=f"context length in tokens, also the training window (default: {d['block_size']})")
    g.add_argument("--dropout", type=float, metavar="P", help=f"dropout rate while training, in [0, 1) (default: {d['dropout']})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps in the whole run, at most {MAX_STEPS:,} (default: {d['steps']})")
    g.add_argument("--batch-size", type=int, metavar="N", help=f"windows per step (default: {d['batch_size']})")
    g.add_argument("--lr", type=float, metavar="LR", help=f"peak learning rate of AdamW (default: {d['lr']})")
    g.add_argument("--min-lr", type=float, metavar="LR", help="learning rate at the end of the cosine decay (default: lr / 10)")
    g.add_argument("--warmup-steps", type=int, metavar="N", help="steps of linear warmup (default: min(100, steps / 10))")
    g.add_argument("--weight-decay", type=float, metavar="W", help=f"AdamW weight decay on matrices (default: {d['weight_decay']})")
    g.add_argument("--grad-clip", type=float, metavar="G", help=f"clip the gradient norm to G, 0 = off (default: {d['grad_clip']})")
    g.add_argument("--seed", type=int, help=f"seed of the initial weights, the batches and the samples, in [0, 2**64) (default: {d['seed']})")
    g = p.add_argument_group("evaluation, checkpoints, output")
    g.add_argument("--out", metavar="DIR", required=True, help="folder for the checkpoint (created if missing)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out; flags given here override its settings (e.g. a larger --steps)")
    g.add_argument("--eval-interval", type=int, metavar="N", help="steps between validation evaluations (default: steps / 10)")
    g.add_argument("--eval-batches", type=int, metavar="N", help=f"validation batches per evaluation (default: {d['eval_batches']})")
    g.add_argument("--log-interval", type=int, metavar="N", help=f"steps between progress-bar updates (default: {d['log_interval']})")
    g.add_argument("--checkpoint-interval", type=int, metavar="N", help="steps between checkpoints (default: at every evaluation)")
    g.add_argument("--sample-tokens", type=int, metavar="N", help=f"tokens sampled at each evaluation, 0 = none (default: {d['sample_tokens']})")
    g.add_argument("--sample-prompt", metavar="TEXT", help="prompt of those samples (default: the start of the validation text)")
    g.add_argument("--device", help=f"auto, cpu, cuda, cuda:N or mps; auto picks cuda, then mps, then cpu (default: {d['device']})")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (optional speed-up; needs a C++ compiler on CPU)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. when logging to a file)")
    return p


def _sample_parser(sub):
    p = sub.add_parser("sample", help="generate text from a checkpoint (or fill in [MASK] with a masked LM)",
                       description="Continue --prompt with a causal LM, printing the text as it is generated; "
                                   "with a masked LM, fill in every [MASK] written in --prompt.", allow_abbrev=False)
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="checkpoint folder (from train or export), or a model's name: shakespeare-char, shakespeare-char-mlm, or smollm2-135m (fetched on first use)")
    p.add_argument("--prompt", default="\n", help="text to continue; for a masked LM, text with [MASK] in it (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=300, metavar="N", help=f"tokens to generate, at most {MAX_NEW_TOKENS:,} (default: 300)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy, < 1 sharper, > 1 flatter (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample only among the K most likely tokens (default: off)")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="sample only from the smallest set with probability >= P, in (0, 1] (default: off)")
    p.add_argument("--min-p", type=float, default=None, metavar="P",
                   help="sample only tokens at least P times as likely as the most likely one, in [0, 1] (default: off)")
    p.add_argument("--num-samples", type=int, default=1, metavar="N", help="how many samples to print (default: 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples, in [0, 2**64) (default: random)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default: cpu)")
    return p


def _export_parser(sub):
    p = sub.add_parser("export", help="save a run's weights and configs without the optimizer state, with its measured validation loss",
                       description="Copy a checkpoint's weights, configs and tokenizer into a new folder (a few MB: no "
                                   "optimizer state), measuring its validation loss on the data it was trained on.",
                       allow_abbrev=False)
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="the run's checkpoint folder")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="folder to write (e.g. lmlab/pretrained/NAME); not the run's own folder, whose optimizer state --resume needs")
    p.add_argument("--slice-batches", type=int, default=8, metavar="N",
                   help="validation batches of the quick check recorded next to the full validation loss (default: 8)")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a sentence to record with the model (e.g. where and how fast it was trained); repeatable")
    p.add_argument("--device", default="cpu", help="device for the evaluation (default: cpu)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmlab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,export,fetch}")
    _train_parser(sub)
    _sample_parser(sub)
    _export_parser(sub)
    _fetch_parser(sub)
    return parser


# ------------------------------------------------------------------------------------------ train


def _check_settings(a: dict) -> None:
    """One sentence per bad flag, before any data is read (and before torch is imported)."""
    for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "eval_batches", "log_interval"):
        _check_int(a, name, 1)
    _check_int(a, "steps", 1, MAX_STEPS)
    for name in ("eval_interval", "checkpoint_interval"):
        if a[name] is not None:
            _check_int(a, name, 1)
    if a["warmup_steps"] is not None:
        _check_int(a, "warmup_steps", 0)
    _check_int(a, "sample_tokens", 0, MAX_NEW_TOKENS)
    _check_int(a, "seed", 0, SEEDS - 1, "an integer in [0, 2**64)")
    if not (_real(a["lr"]) and a["lr"] > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {a['lr']}")
    if a["min_lr"] is not None and not (_real(a["min_lr"]) and 0 <= a["min_lr"] <= a["lr"]):
        raise ValueError(f"--min-lr must be in [0, --lr], got {a['min_lr']}")
    if a["n_embd"] % a["n_head"]:
        raise ValueError(f"--n-embd ({a['n_embd']}) must be divisible by --n-head ({a['n_head']})")
    if not (_real(a["dropout"]) and 0 <= a["dropout"] < 1):
        raise ValueError(f"--dropout must be in [0.0, 1.0), got {a['dropout']}")
    if not (_real(a["val_fraction"]) and 0 < a["val_fraction"] < 1):
        raise ValueError(f"--val-fraction must be in (0.0, 1.0), got {a['val_fraction']}")
    for name in ("weight_decay", "grad_clip"):
        if not (_real(a[name]) and a[name] >= 0):
            raise ValueError(f"{_flag(name)} must be a finite number >= 0{' (0 turns clipping off)' if name == 'grad_clip' else ''}, "
                             f"got {a[name]}")
    if a["tokenizer"] not in ("char", "bpe") or a["objective"] not in ("clm", "mlm"):
        raise ValueError(f"--tokenizer must be char or bpe and --objective clm or mlm, got {a['tokenizer']!r} and {a['objective']!r}")
    if a["tokenizer"] == "bpe":
        _check_int(a, "vocab_size", 1)
        low = BPE_VOCAB[0] + 2 * (a["objective"] == "mlm")
        if not low <= a["vocab_size"] <= BPE_VOCAB[1]:
            why = " (256 bytes + [PAD] and [MASK], which --objective mlm needs)" if a["objective"] == "mlm" else " (the 256 bytes)"
            raise ValueError(f"--vocab-size must be between {low}{why} and {BPE_VOCAB[1]:,}, got {a['vocab_size']}")


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_int(a: dict, name: str, low: int, high: int | None = None, allowed: str | None = None) -> None:
    value = a[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        what = allowed or ({0: "an integer >= 0", 1: "a positive integer"}[low] if high is None
                           else f"an integer in [{low}, {high:,}]")
        raise ValueError(f"{_flag(name)} must be {what}, got {value!r}")


def _check_fits(a: dict, device) -> None:
    """A model or batch too large for the device's memory is one sentence before any data is read."""
    from lmlab.training import memory_available, memory_needed, size_text

    vocab = a["vocab_size"] if a["tokenizer"] == "bpe" else 0  # a character vocabulary is small
    layers, width, context, batch = a["n_layer"], a["n_embd"], a["block_size"], a["batch_size"]
    n_params = 12 * layers * width * width + (vocab + context) * width  # blocks, embeddings: a lower bound
    state, activations = memory_needed(n_params, n_layer=layers, n_embd=width, vocab_size=vocab, block_size=context,
                                       batch_size=batch)
    available = memory_available(device)
    if available is None or state + activations <= available:
        return
    if state > available:
        raise ValueError(f"--n-embd {width} with --n-layer {layers}{f' and --vocab-size {vocab}' if vocab else ''} makes a "
                         f"model of about {n_params:,} parameters, which needs at least {size_text(state)} to train, more "
                         f"than the {size_text(available)} of memory on {device}; choose a smaller --n-embd or --n-layer")
    raise ValueError(f"--batch-size {batch} with --block-size {context} needs at least {size_text(activations)} for one "
                     f"training step, more than the {size_text(available - state)} of memory left on {device}; "
                     "use a smaller --batch-size")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _device(name):
    from lmlab.training import pick_device

    try:
        return pick_device(name)
    except ValueError as err:  # the same sentence, naming the flag
        raise ValueError(f"--{err}") from None


def _load_texts(data: str, val_fraction: float) -> tuple[str, str]:
    from lmlab import corpus

    if data == "shakespeare":
        return corpus.shakespeare("train"), corpus.shakespeare("val")
    try:
        text = corpus.load_text(data)
    except (ValueError, FileNotFoundError) as err:  # the same sentence, naming the flag
        raise type(err)(str(err).replace("path ", "--data ", 1)) from None
    if len(text) < 2:
        raise ValueError(f"--data {data!r} holds only {len(text)} character; a text to train on needs one window of "
                         "--block-size + 1 characters for training and another for validation")
    return corpus.train_val_split(text, val_fraction)


def _make_tokenizer(kind: str, objective: str, train_text: str, val_text: str, vocab_size: int):
    from lmlab.tokenizers import BPETokenizer, CharTokenizer

    specials = ("[PAD]", "[MASK]") if objective == "mlm" else ()
    if kind == "char":
        # the alphabet of the whole text: a character seen only in the validation part must still encode
        return CharTokenizer.train(train_text + val_text, special_tokens=specials)
    return BPETokenizer.train(train_text, vocab_size, special_tokens=specials)


def cmd_train(given: dict, command: str) -> int:
    out = Path(given.pop("out"))
    resume = given.pop("resume", False)
    progress = not given.pop("no_progress", False)
    if not resume:
        if "data" not in given:
            raise ValueError("--data is required: the path of a UTF-8 text file, or 'shakespeare'")
        args = {**TRAIN_DEFAULTS, **given}
        _check_settings(args)  # bad flags: one sentence before torch is even imported

    import torch

    from lmlab import checkpoints, training
    from lmlab.models import build

    ckpt = None
    if resume:
        ckpt = checkpoints.load_checkpoint(out)  # a missing one: FileNotFoundError, one sentence
        stored = ckpt.metadata.get("args", {})
        if not isinstance(stored, dict) or set(stored) - set(TRAIN_DEFAULTS):
            raise ValueError(f"--out {str(out)!r} holds a checkpoint whose metadata.args are not this command's flags; "
                             "resume it from Python with lmlab.training.train(..., resume=True)")
        for name in MODEL_FLAGS:
            if name in given and stored.get(name) is not None and given[name] != stored[name]:
                raise ValueError(f"{_flag(name)} {given[name]} differs from the run being resumed ({stored[name]}); "
                                 "leave it out, or train a new model into another --out")
        args = {**TRAIN_DEFAULTS, **stored, **given}
        _check_settings(args)
    elif (out / checkpoints.CONFIG_FILE).exists():
        raise ValueError(f"--out {str(out)!r} already holds a checkpoint; add --resume to continue it, or choose another --out")
    device = _device(args["device"])  # an unavailable device fails here, before the data is read
    _check_fits(args, device)

    train_text, val_text = _load_texts(args["data"], args["val_fraction"])
    if ckpt is not None:
        tokenizer = ckpt.tokenizer
    else:
        tokenizer = _make_tokenizer(args["tokenizer"], args["objective"], train_text, val_text, args["vocab_size"])
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    window = args["block_size"] + (args["objective"] == "clm")
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < window:
            raise ValueError(f"--block-size {args['block_size']} is too long for the {name} text, which has only "
                             f"{len(ids)} tokens (one window needs {window}); give more text or a smaller --block-size")

    kind = "gpt" if args["objective"] == "clm" else "masked_lm"
    config = {"vocab_size": tokenizer.vocab_size, "block_size": args["block_size"], "n_layer": args["n_layer"],
              "n_head": args["n_head"], "n_embd": args["n_embd"], "dropout": args["dropout"]}
    if kind == "masked_lm":
        config["pad_token_id"] = tokenizer.special_ids["[PAD]"]
    torch.manual_seed(args["seed"])  # the initial weights
    model = build(kind, config)
    settings = {k: args[k] for k in ("steps", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
                                     "eval_interval", "eval_batches", "log_interval", "checkpoint_interval",
                                     "sample_tokens", "sample_prompt", "seed", "device", "compile")}
    settings["block_size"] = args["block_size"]
    metadata = {"args": args, "commands": (ckpt.metadata.get("commands", []) if ckpt else []) + [command]}
    if _rank() == 0:
        print(f"{kind} with {model.num_parameters():,} parameters, vocabulary {tokenizer.vocab_size}, "
              f"{len(train_ids):,} training and {len(val_ids):,} validation tokens, on {device}", file=sys.stderr)
    history = training.train(model, train_ids, val_ids, tokenizer=tokenizer, out_dir=out, resume=resume,
                             progress=progress, metadata=metadata, **settings)
    if _rank() == 0:
        val = f"validation loss {history.val_loss[-1]:.4f}" if history.val_loss else "no evaluation"
        wall = history.time[-1] if history.time else 0.0
        step = checkpoints.load_checkpoint(out).step
        print(f"step {step}: {val}, {wall:.0f} s of training; checkpoint in {out}", file=sys.stderr)
        if history.interrupted:
            print(f"stopped early: continue with  python -m lmlab train --out {shlex.quote(str(out))} --resume", file=sys.stderr)
    return EXIT_INTERRUPTED if history.interrupted else 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


# ----------------------------------------------------------------------------------------- sample


def _open(checkpoint: str, device: str):
    """(model, tokenizer) from a checkpoint folder or a shipped model's name."""
    from lmlab import checkpoints, pretrained

    if not Path(checkpoint).exists() and checkpoint in (*pretrained.available(), *pretrained.FETCHED):
        return pretrained.load(checkpoint, device=device)  # a fetched model is downloaded on first use
    model, tokenizer = checkpoints.load_model(checkpoint, device=device)
    if tokenizer is None:
        raise ValueError(f"--checkpoint {checkpoint!r} holds no tokenizer, so its output cannot be shown as text")
    return model, tokenizer


def _check_sample_flags(a) -> None:
    """One sentence per bad flag of `sample`, before torch is imported."""
    _check_int(vars(a), "max_new_tokens", 0, MAX_NEW_TOKENS)
    _check_int(vars(a), "num_samples", 1)
    if a.seed is not None:
        _check_int(vars(a), "seed", 0, SEEDS - 1, "an integer in [0, 2**64)")
    if not (_real(a.temperature) and a.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0 (0 is greedy), got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {a.top_k}")
    if a.top_p is not None and not 0 < a.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {a.top_p}")
    if a.min_p is not None and not 0 <= a.min_p <= 1:
        raise ValueError(f"--min-p must be in [0, 1], got {a.min_p}")
    if not a.prompt:
        raise ValueError("--prompt must not be empty")


def _check_prompt(tokenizer, prompt: str) -> None:
    """A prompt with characters the model never saw is one sentence that a user of this command can act on."""
    try:
        tokenizer.encode(prompt)
        return
    except ValueError as err:
        reason = err
    plain = prompt
    for token in tokenizer.special_ids:  # [MASK] and the like are whole tokens, whatever their characters
        plain = plain.replace(token, "")
    unseen = []
    for c in dict.fromkeys(plain):
        try:
            tokenizer.encode(c)
        except ValueError:
            unseen.append(c)
    if not unseen:
        raise ValueError(f"--prompt cannot be encoded by this model's tokenizer: {reason}")
    shown = ", ".join(map(repr, unseen[:10])) + (", ..." if len(unseen) > 10 else "")
    raise ValueError(f"--prompt contains {len(unseen)} character(s) that the model never saw in training ({shown}); "
                     "leave them out, or train a model on a text that has them (python -m lmlab train --data ...)")


def cmd_sample(a) -> int:
    _check_sample_flags(a)

    import torch

    from lmlab import decoding
    from lmlab.models import MaskedLM

    device = _device(a.device)
    model, tokenizer = _open(a.checkpoint, device)
    _check_prompt(tokenizer, a.prompt)
    seed = a.seed if a.seed is not None else int(torch.randint(2**31 - 1, ()).item())
    options = {"temperature": a.temperature, "top_k": a.top_k, "top_p": a.top_p, "min_p": a.min_p}
    for i in range(a.num_samples):
        sample_seed = (seed + i) % SEEDS
        if isinstance(model, MaskedLM):  # else a causal LM: our GPT, or the Llama of a fetched model
            print(_fill_masks(model, tokenizer, a.prompt, sample_seed, options))
        else:
            # stream() checks everything (prompt length, options) when called: nothing is printed before that
            pieces = decoding.stream(model, tokenizer, a.prompt, "sample", a.max_new_tokens, seed=sample_seed, **options)
            print(a.prompt, end="", flush=True)
            for piece in pieces:
                print(piece, end="", flush=True)
            print()
        if i + 1 < a.num_samples:
            print("-" * 40)
    return 0


def _fill_masks(model, tokenizer, prompt, seed, options) -> str:
    """Replace every [MASK] in `prompt` by a token drawn from the masked LM's filtered distribution."""
    import torch

    from lmlab import decoding

    mask_id = tokenizer.special_ids.get("[MASK]")
    ids = tokenizer.encode(prompt)
    if mask_id is None or mask_id not in ids:
        raise ValueError("--prompt must contain [MASK] where a masked LM should fill in a token, e.g. 'To be, or n[MASK]t to be'")
    if len(ids) > model.config.block_size:
        raise ValueError(f"--prompt has {len(ids)} tokens but the model reads at most {model.config.block_size}")
    x = torch.tensor([ids], device=next(model.parameters()).device)
    where = (x[0] == mask_id).nonzero().squeeze(1)
    with torch.no_grad():
        logits = model(x)[0, where].float()
    if options["temperature"] == 0:
        picked = logits.argmax(-1)
    else:
        probs = decoding.filter_logits(logits, **options).softmax(-1)
        picked = torch.multinomial(probs.cpu(), 1, generator=torch.Generator().manual_seed(seed))[:, 0].to(x.device)
    x[0, where] = picked
    return tokenizer.decode(x[0].tolist())


# ----------------------------------------------------------------------------------------- export


def cmd_export(a, command: str) -> int:
    _check_int(vars(a), "slice_batches", 1)

    from lmlab import checkpoints, pretrained

    ckpt = checkpoints.load_checkpoint(a.checkpoint)
    out = Path(a.out)
    # an export is weights only, and a save deletes the files the previous checkpoint.json named
    if out.resolve() == ckpt.path.resolve():
        raise ValueError(f"--out must be another folder than --checkpoint, got {a.out!r} for both: exporting a run into "
                         "its own folder would delete the optimizer and generator state that --resume needs")
    if (out / checkpoints.CONFIG_FILE).exists() and checkpoints.load_checkpoint(out).files["state"] is not None:
        raise ValueError(f"--out {a.out!r} holds a training run with its optimizer and generator state, which an export "
                         "would delete; choose another --out")
    model = ckpt.build_model(a.device)
    tokenizer = ckpt.tokenizer
    args = ckpt.metadata.get("args", {})
    t0 = time.perf_counter()
    losses = pretrained.measure(model, tokenizer, data=args.get("data", "shakespeare"),
                                val_fraction=args.get("val_fraction", 0.1), slice_batches=a.slice_batches)
    history = ckpt.history or {}
    metadata = {
        "commands": ckpt.metadata.get("commands", []) + [command],
        "args": args,
        "steps": ckpt.step,
        "tokens_seen": history["tokens"][-1] if history.get("tokens") else None,
        "train_wall_time_s": round(history["time"][-1], 1) if history.get("time") else None,
        "parameters": model.num_parameters(),
        **losses,
        "notes": a.note,
    }
    checkpoints.save_checkpoint(a.out, model, tokenizer=tokenizer, step=ckpt.step, train_config=ckpt.train_config,
                                history=history, metadata=metadata)
    (Path(a.out) / "README.md").write_text(_model_card(Path(a.out).name, ckpt.kind, metadata), encoding="utf-8")
    print(json.dumps({k: v for k, v in metadata.items() if k != "args"}, indent=1))
    print(f"exported to {a.out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def _model_card(name: str, kind: str, m: dict) -> str:
    """README.md written next to an exported model's weights: how it was made and how good it is."""
    lines = [f"# {name}", "", f"A {kind} with {m['parameters']:,} parameters, trained by `python -m lmlab` on `{m['data']}`.", "",
             "## Commands that made it", "", "```bash", *m["commands"], "```", "", "## Measured", "",
             f"- validation loss (whole held-out text): **{m['val_loss']:.4f}** nats per token",
             f"- validation loss on the quick slice ({m['slice']['max_batches']} batches of {m['slice']['batch_size']} "
             f"windows spread over the held-out text, what the tests re-check): {m['val_loss_slice']:.4f}"]
    if "mask_accuracy" in m:
        lines += [f"- [MASK] filled correctly: {m['mask_accuracy']:.1%} of masked tokens "
                  f"(unigram baseline, always the most frequent token: {m['unigram_accuracy']:.1%}; "
                  f"unigram loss {m['unigram_loss']:.4f})"]
    lines += [f"- steps: {m['steps']:,}; tokens seen: {m['tokens_seen']:,}; training wall time: {m['train_wall_time_s']} s"]
    lines += [f"- {note}" for note in m.get("notes", [])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ fetch


def _fetch_parser(sub):
    p = sub.add_parser("fetch", allow_abbrev=False, help="download a real model into the cache now, so that later loads need no network",
                       description="Download, check and cache a model that lmlab fetches on first use "
                                   "(the cache folder is $LMLAB_CACHE, else $XDG_CACHE_HOME/lmlab or ~/.cache/lmlab).")
    p.add_argument("name", choices=["smollm2-135m"], help="the model to fetch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def cmd_fetch(a) -> int:
    from lmlab.pretrained import smollm2

    try:
        path = smollm2.fetch(progress=not a.no_progress)
    except ConnectionError as err:  # no network: the sentence says what to do
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    ns = build_parser().parse_args(argv)
    command = "python -m lmlab " + shlex.join(argv)  # recorded in the checkpoint, to reproduce the run
    try:
        if ns.command == "train":
            return cmd_train({k: v for k, v in vars(ns).items() if k != "command"}, command)
        if ns.command == "sample":
            return cmd_sample(ns)
        if ns.command == "fetch":
            return cmd_fetch(ns)
        return cmd_export(ns, command)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FloatingPointError, OSError) as err:  # a diverged run, a full disk: the last good checkpoint is kept
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # also while torch is still being imported: no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
