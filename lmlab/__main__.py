"""Command line: train a model on the course corpus or your own text, then sample from it.

    python -m lmlab train --data shakespeare --tokenizer char --out runs/char --steps 2000
    python -m lmlab train --data my_text.txt --tokenizer bpe --vocab-size 1000 --out runs/mine
    python -m lmlab train --out runs/char --resume --steps 4000     # continue (and extend) a run
    python -m lmlab sample --checkpoint runs/char --prompt "ROMEO:" --temperature 0.8
    python -m lmlab export --checkpoint runs/char --out my_model     # weights + configs only
    python -m lmlab fetch smollm2-135m                               # download a real model once, now

Ctrl-C during training stops after the current step and saves a checkpoint first. Every setting is
checked before any work starts; a bad one is reported in one sentence (exit status 2).
Under `torchrun --nproc_per_node=N -m lmlab train ...` the same command trains on N processes.
"""

from __future__ import annotations

import argparse
import json
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
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def _train_parser(sub):
    p = sub.add_parser("train", help="train a causal (GPT) or masked LM on a text file or the course corpus",
                       description="Train a model and save checkpoints into --out. Flags left out take the "
                                   "defaults shown, or, with --resume, the values of the run being continued.",
                       argument_default=argparse.SUPPRESS)
    d = TRAIN_DEFAULTS
    g = p.add_argument_group("data and tokenizer")
    g.add_argument("--data", metavar="PATH|shakespeare",
                   help="a UTF-8 text file to train on, or 'shakespeare' for the course corpus (required unless --resume)")
    g.add_argument("--tokenizer", choices=["char", "bpe"], help=f"one token per character, or byte-level BPE (default: {d['tokenizer']})")
    g.add_argument("--vocab-size", type=int, metavar="N", help=f"BPE vocabulary size, >= 258 (default: {d['vocab_size']})")
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
    g.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps in the whole run (default: {d['steps']})")
    g.add_argument("--batch-size", type=int, metavar="N", help=f"windows per step (default: {d['batch_size']})")
    g.add_argument("--lr", type=float, metavar="LR", help=f"peak learning rate of AdamW (default: {d['lr']})")
    g.add_argument("--min-lr", type=float, metavar="LR", help="learning rate at the end of the cosine decay (default: lr / 10)")
    g.add_argument("--warmup-steps", type=int, metavar="N", help="steps of linear warmup (default: min(100, steps / 10))")
    g.add_argument("--weight-decay", type=float, metavar="W", help=f"AdamW weight decay on matrices (default: {d['weight_decay']})")
    g.add_argument("--grad-clip", type=float, metavar="G", help=f"clip the gradient norm to G, 0 = off (default: {d['grad_clip']})")
    g.add_argument("--seed", type=int, help=f"seed of the initial weights, the batches and the samples (default: {d['seed']})")
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
                                   "with a masked LM, fill in every [MASK] written in --prompt.")
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="checkpoint folder (from train or export), or the name of a shipped model, e.g. shakespeare-char")
    p.add_argument("--prompt", default="\n", help="text to continue; for a masked LM, text with [MASK] in it (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=300, metavar="N", help="tokens to generate (default: 300)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy, < 1 sharper, > 1 flatter (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample only among the K most likely tokens (default: off)")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="sample only from the smallest set with probability >= P, in (0, 1] (default: off)")
    p.add_argument("--num-samples", type=int, default=1, metavar="N", help="how many samples to print (default: 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples (default: random)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default: cpu)")
    return p


def _export_parser(sub):
    p = sub.add_parser("export", help="save a run's weights and configs without the optimizer state, with its measured validation loss",
                       description="Copy a checkpoint's weights, configs and tokenizer into a new folder (a few MB: no "
                                   "optimizer state), measuring its validation loss on the data it was trained on.")
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="the run's checkpoint folder")
    p.add_argument("--out", metavar="DIR", required=True, help="folder to write (e.g. lmlab/pretrained/NAME)")
    p.add_argument("--slice-batches", type=int, default=8, metavar="N",
                   help="validation batches of the quick check recorded next to the full validation loss (default: 8)")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a sentence to record with the model (e.g. where and how fast it was trained); repeatable")
    p.add_argument("--device", default="cpu", help="device for the evaluation (default: cpu)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmlab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,export,fetch}")
    _train_parser(sub)
    _sample_parser(sub)
    _export_parser(sub)
    _fetch_parser(sub)
    return parser


# ------------------------------------------------------------------------------------------ train


def _check_settings(a: dict) -> None:
    """One sentence per bad flag, before any data is read."""
    from lmlab._checks import check_fraction, check_nonnegative_int, check_positive_int

    for name in ("n_layer", "n_head", "n_embd", "block_size", "steps", "batch_size", "eval_batches", "log_interval"):
        check_positive_int(a[name], _flag(name))
    for name in ("eval_interval", "checkpoint_interval"):
        if a[name] is not None:
            check_positive_int(a[name], _flag(name))
    for name in ("warmup_steps", "sample_tokens"):
        if a[name] is not None:
            check_nonnegative_int(a[name], _flag(name))
    for name in ("lr",):
        if not a[name] > 0:
            raise ValueError(f"{_flag(name)} must be > 0, got {a[name]}")
    if a["min_lr"] is not None and not 0 <= a["min_lr"] <= a["lr"]:
        raise ValueError(f"--min-lr must be in [0, --lr], got {a['min_lr']}")
    if a["n_embd"] % a["n_head"]:
        raise ValueError(f"--n-embd ({a['n_embd']}) must be divisible by --n-head ({a['n_head']})")
    check_fraction(a["dropout"], "--dropout", high_open=True)
    check_fraction(a["val_fraction"], "--val-fraction", low_open=True, high_open=True)
    if a["weight_decay"] < 0:
        raise ValueError(f"--weight-decay must be >= 0, got {a['weight_decay']}")
    if a["grad_clip"] < 0:
        raise ValueError(f"--grad-clip must be >= 0 (0 turns clipping off), got {a['grad_clip']}")
    if a["tokenizer"] == "bpe":
        check_positive_int(a["vocab_size"], "--vocab-size")


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
    return corpus.train_val_split(corpus.load_text(data), val_fraction)


def _make_tokenizer(kind: str, objective: str, train_text: str, val_text: str, vocab_size: int):
    from lmlab.tokenizers import BPETokenizer, CharTokenizer

    specials = ("[PAD]", "[MASK]") if objective == "mlm" else ()
    if kind == "char":
        # the alphabet of the whole text: a character seen only in the validation part must still encode
        return CharTokenizer.train(train_text + val_text, special_tokens=specials)
    return BPETokenizer.train(train_text, vocab_size, special_tokens=specials)


def cmd_train(given: dict, command: str) -> int:
    import torch

    from lmlab import checkpoints, training
    from lmlab.models import build

    out = Path(given.pop("out"))
    resume = given.pop("resume", False)
    progress = not given.pop("no_progress", False)
    ckpt = None
    if resume:
        ckpt = checkpoints.load_checkpoint(out)  # a missing one: FileNotFoundError, one sentence
        stored = ckpt.metadata.get("args", {})
        for name in MODEL_FLAGS:
            if name in given and stored.get(name) is not None and given[name] != stored[name]:
                raise ValueError(f"{_flag(name)} {given[name]} differs from the run being resumed ({stored[name]}); "
                                 "leave it out, or train a new model into another --out")
        args = {**TRAIN_DEFAULTS, **stored, **given}
    else:
        if (out / checkpoints.CONFIG_FILE).exists():
            raise ValueError(f"--out {str(out)!r} already holds a checkpoint; add --resume to continue it, or choose another --out")
        if "data" not in given:
            raise ValueError("--data is required: the path of a UTF-8 text file, or 'shakespeare'")
        args = {**TRAIN_DEFAULTS, **given}
    _check_settings(args)
    device = _device(args["device"])  # an unavailable device fails here, before the data is read

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

    if not Path(checkpoint).exists() and checkpoint in pretrained.available():
        return pretrained.load(checkpoint, device=device)
    model, tokenizer = checkpoints.load_model(checkpoint, device=device)
    if tokenizer is None:
        raise ValueError(f"--checkpoint {checkpoint!r} holds no tokenizer, so its output cannot be shown as text")
    return model, tokenizer


def cmd_sample(a) -> int:
    import torch

    from lmlab import decoding
    from lmlab._checks import check_nonnegative_int, check_positive_int
    from lmlab.models import kind_of

    check_nonnegative_int(a.max_new_tokens, "--max-new-tokens")
    check_positive_int(a.num_samples, "--num-samples")
    if a.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {a.top_k}")
    if a.top_p is not None and not 0 < a.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {a.top_p}")
    if not a.prompt:
        raise ValueError("--prompt must not be empty")
    device = _device(a.device)
    model, tokenizer = _open(a.checkpoint, device)
    seed = a.seed if a.seed is not None else int(torch.randint(2**31 - 1, ()).item())
    options = {"temperature": a.temperature, "top_k": a.top_k, "top_p": a.top_p}
    for i in range(a.num_samples):
        if kind_of(model) == "masked_lm":
            print(_fill_masks(model, tokenizer, a.prompt, seed + i, options))
        else:
            print(a.prompt, end="", flush=True)
            for piece in decoding.stream(model, tokenizer, a.prompt, "sample", a.max_new_tokens, seed=seed + i, **options):
                print(piece, end="", flush=True)
            print()
        if i + 1 < a.num_samples:
            print("-" * 40)
    return 0


@__import__("torch").no_grad()
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
    from lmlab import checkpoints, pretrained

    from lmlab._checks import check_positive_int

    check_positive_int(a.slice_batches, "--slice-batches")
    ckpt = checkpoints.load_checkpoint(a.checkpoint)
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
    p = sub.add_parser("fetch", help="download a real model into the cache now, so that later loads need no network",
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
