"""Tokens per second of lmlab.decoding: the KV-cached path against full recompute and against Hugging
Face transformers' `generate` on a GPT-2 of the same dimensions (random weights, nothing downloaded).

    pip install -r benchmarks/requirements.txt      # transformers, for the comparison only
    python benchmarks/bench_generate.py             # about two minutes on one CPU core
    python benchmarks/bench_generate.py --threads 1 --repeats 5 --new-tokens 500

Targets (issue 5): cached >= 10x the naive full-recompute loop at 500 new tokens, and >= 3x the tokens/s
of transformers' generate, for greedy, sampling (T 0.8, top-k 50, top-p 0.9) and beam search with 4 beams.

Models: nanoGPT's "baby" Shakespeare dimensions (4 layers, 4 heads, 128 dims, vocabulary 65) with
block_size 512, so that a 16-token prompt + 500 new tokens fit and no cropping happens; and the shipped
char model of `lmlab.pretrained`, when there is one (its block is smaller: the cached path then restarts
its cache every half block, the recompute path slides its window; transformers gets enough positions).

Columns: tokens/s counts the new tokens of one output sequence (for beam search, of the best beam);
"overhead" is the time per token spent outside the model's forward passes (sampling, filters, beam
bookkeeping, cache reordering, Python), measured as generate time minus the same forwards run bare.
Each number is the best of --repeats runs.

SmolLM2-135M (when it is cached): lmlab's Llama against transformers' own model loaded from the same GGUF
file, one prompt ("The cat sat on the"), --smollm2-new-tokens new tokens (200), the same three strategies;
"overhead" as above.

Padded batches: 4 prompts of unequal lengths generated as one left-padded batch (`generate` with a list)
against the same 4 prompts one at a time, greedy and sampling (one seed per prompt), on the shipped char
model and on SmolLM2-135M (when it is cached); tokens/s counts the new tokens of all 4 prompts.
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings

import torch

from lmlab import decoding
from lmlab.models import GPT, GPTConfig

PROMPT_LEN = 16
SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.9)
STRATEGIES = ("greedy", "sample", "beam 4")


def best_times(runs: dict, repeats: int) -> dict:
    """Best wall time of each function in `runs`, timed round-robin so that a burst of load from other
    processes hits all of them alike; one untimed warm-up run each first."""
    for fn in runs.values():
        fn()
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def lmlab_run(model, prompt, strategy, new_tokens, use_cache):
    if strategy == "greedy":
        out = decoding.greedy(model, prompt, new_tokens, use_cache=use_cache)
    elif strategy == "sample":
        out = decoding.sample(model, prompt, new_tokens, seed=0, use_cache=use_cache, **SAMPLING)
    else:
        out = decoding.beam_search(model, prompt, 4, new_tokens, use_cache=use_cache).sequences
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return out


def bare_forwards(model, prompt, strategy, new_tokens):
    """The forwards the cached path makes (prefill, then one token per step), without any decoding around them."""
    batch = 4 if strategy == "beam 4" else 1
    block = model.config.block_size
    with torch.inference_mode():
        cache = model.new_cache(batch)
        model(prompt[:, -block:].expand(batch, -1), cache=cache)
        token = prompt[:, -1:].expand(batch, 1)
        for _ in range(new_tokens - 1):
            if cache.length == block:
                cache.crop(0)
                model(prompt[:, : (block + 1) // 2].expand(batch, -1), cache=cache)
            model(token, cache=cache)


def hf_model(config: GPTConfig, positions: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=config.vocab_size, n_positions=positions, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, bos_token_id=None, eos_token_id=None,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def hf_run(model, prompt, strategy, new_tokens):
    options = dict(max_new_tokens=new_tokens, attention_mask=torch.ones_like(prompt), pad_token_id=0)
    if strategy == "greedy":
        options.update(do_sample=False, num_beams=1)
    elif strategy == "sample":
        options.update(do_sample=True, **SAMPLING)
    else:
        options.update(do_sample=False, num_beams=4, length_penalty=1.0, early_stopping=True)
    with torch.inference_mode():
        out = model.generate(prompt, **options)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return out


def hf_bare_forwards(model, prompt, strategy, new_tokens):
    from transformers import DynamicCache

    batch = 4 if strategy == "beam 4" else 1
    # transformers 5 names the cache argument `cache` (`past_key_values` is deprecated); it fills it in place
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        past = DynamicCache()
        model(prompt.expand(batch, -1), use_cache=True, **{name: past})
        token = prompt[:, -1:].expand(batch, 1)
        for _ in range(new_tokens - 1):
            model(token, use_cache=True, **{name: past})


def shipped_char_model():
    """(name, model, tokenizer) of the shipped character-level model, or None with a note why."""
    try:
        from lmlab import pretrained
    except ImportError as e:
        print(f"shipped char model: skipped, lmlab.pretrained is not available yet ({e})")
        return None
    for name in pretrained.available():
        model, tokenizer = pretrained.load(name)
        if "char" in name and hasattr(model, "new_cache"):  # the causal one, not the masked LM
            return name, model.eval(), tokenizer
    print(f"shipped char model: skipped, none among {pretrained.available()}")
    return None


def bench_model(label, model, prompt, new_tokens, repeats, with_naive, with_hf, hf=None):
    """One row per strategy; `hf` is transformers' twin of `model` (default: a GPT-2 of its dimensions)."""
    rows = []
    if hf is None and with_hf:
        hf = hf_model(model.config, prompt.shape[1] + new_tokens)
    for strategy in STRATEGIES:
        runs = {"cached": lambda: lmlab_run(model, prompt, strategy, new_tokens, True),
                "bare": lambda: bare_forwards(model, prompt, strategy, new_tokens)}
        if hf is not None:
            runs["hf"] = lambda: hf_run(hf, prompt, strategy, new_tokens)
            runs["hf_bare"] = lambda: hf_bare_forwards(hf, prompt, strategy, new_tokens)
        t = best_times(runs, repeats)
        row = dict(model=label, strategy=strategy, cached=t["cached"], overhead=(t["cached"] - t["bare"]) / new_tokens)
        if hf is not None:
            row.update(hf=t["hf"], hf_overhead=(t["hf"] - t["hf_bare"]) / new_tokens)
        if with_naive:  # slow: one timed run, no warm-up beyond the cached runs above
            start = time.perf_counter()
            lmlab_run(model, prompt, strategy, new_tokens, False)
            row["naive"] = time.perf_counter() - start
        rows.append(row)
        print_row(row, new_tokens)
    return rows


HEADER = (f"{'model':<22} {'strategy':<8} {'cached tok/s':>12} {'overhead ms/tok':>15} {'naive tok/s':>11} "
          f"{'cached/naive':>12} {'HF tok/s':>9} {'HF overhead':>11} {'cached/HF':>9}")


def print_row(row, new_tokens):
    rate = lambda seconds: new_tokens / seconds  # noqa: E731
    naive = f"{rate(row['naive']):11.0f} {row['naive'] / row['cached']:11.1f}x" if "naive" in row else f"{'-':>11} {'-':>12}"
    hf = (f"{rate(row['hf']):9.0f} {row['hf_overhead'] * 1e3:9.2f}ms {row['hf'] / row['cached']:8.1f}x"
          if "hf" in row else f"{'-':>9} {'-':>11} {'-':>9}")
    cached = f"{rate(row['cached']):12.0f} {row['overhead'] * 1e3:13.2f}ms"
    print(f"{row['model']:<22} {row['strategy']:<8} {cached} {naive} {hf}", flush=True)


PADDED_TEXTS = ["The cat sat on the", "Once upon a time", "ROMEO:\nWhat light through yonder window breaks?",
                "In the beginning the Universe was created. This has made a lot of people very angry"]


def bench_padded(label, model, tokenizer, new_tokens, repeats):
    """4 unequal prompts as one padded batch vs one at a time; checks that both give the same texts.

    The prompts and their continuations must fit in the model's context (a padded batch slides its window
    when the longest row needs it, a prompt alone when it does): new_tokens is cut to fit."""
    longest = max(len(tokenizer.encode(text)) for text in PADDED_TEXTS)
    new_tokens = min(new_tokens, model.config.block_size - longest)
    for strategy, options in (("greedy", {}), ("sample", dict(SAMPLING, seed=[0, 1, 2, 3]))):
        def batch():
            return decoding.generate(model, tokenizer, PADDED_TEXTS, strategy, new_tokens, **options)

        def alone():
            return [decoding.generate(model, tokenizer, text, strategy, new_tokens,
                                      **{**options, **({"seed": options["seed"][i]} if "seed" in options else {})})
                    for i, text in enumerate(PADDED_TEXTS)]

        same = batch() == alone()
        t = best_times({"batch": batch, "alone": alone}, repeats)
        n = len(PADDED_TEXTS) * new_tokens
        print(f"{label:<22} {strategy:<8} {new_tokens:4d} new  padded batch of 4 {n / t['batch']:8.0f} tok/s   one at a time "
              f"{n / t['alone']:8.0f} tok/s   batch/alone {t['alone'] / t['batch']:5.2f}x   same texts: {same}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow full-recompute runs")
    parser.add_argument("--skip-hf", action="store_true", help="skip transformers")
    parser.add_argument("--skip-shipped", action="store_true", help="skip the shipped char model")
    parser.add_argument("--padded-new-tokens", type=int, default=100, help="new tokens per prompt, padded batches")
    parser.add_argument("--only-padded", action="store_true", help="run only the padded-batch rows")
    parser.add_argument("--smollm2-new-tokens", type=int, default=200, help="new tokens, SmolLM2 rows")
    parser.add_argument("--smollm2-repeats", type=int, default=2, help="timed runs per SmolLM2 cell (each is seconds)")
    parser.add_argument("--only-smollm2", action="store_true", help="run only the SmolLM2 rows")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with_hf = not args.skip_hf
    if with_hf:
        try:
            import transformers
            from transformers.utils import logging

            logging.set_verbosity_error()
            logging.disable_progress_bar()  # transformers' GGUF conversion bar, in the middle of the table
            warnings.filterwarnings("ignore", module="transformers")
            hf_version = transformers.__version__
        except ImportError:
            print("transformers is not installed (pip install -r benchmarks/requirements.txt): HF columns skipped")
            with_hf, hf_version = False, None
    print(f"torch {torch.__version__}, transformers {hf_version if with_hf else '-'}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}")
    if args.only_padded:
        return padded_rows(args)
    if args.only_smollm2:
        return smollm2_rows(args, with_hf)
    print(f"\n{args.new_tokens} new tokens, prompt {PROMPT_LEN} tokens, best of {args.repeats}")
    print(HEADER)

    torch.manual_seed(0)
    baby = GPT(GPTConfig(vocab_size=65, block_size=512, n_layer=4, n_head=4, n_embd=128, dropout=0.0)).eval()
    prompt = torch.randint(0, 65, (1, PROMPT_LEN))
    rows = bench_model("baby (4x4x128, V65)", baby, prompt, args.new_tokens, args.repeats, not args.skip_naive, with_hf)
    shipped = None if args.skip_shipped else shipped_char_model()
    if shipped is not None:
        name, model, tokenizer = shipped
        ids = tokenizer.encode("ROMEO:\nWhat light through yonder window breaks")[:PROMPT_LEN]
        rows += bench_model(name, model, torch.tensor([ids]), args.new_tokens, args.repeats, not args.skip_naive, with_hf)

    print("\ntargets: cached/naive >= 10x, cached/HF >= 3x")
    misses = [f"{r['model']} {r['strategy']} {key}" for r in rows
              for key, target, other in (("cached/naive", 10, "naive"), ("cached/HF", 3, "hf"))
              if other in r and r[other] / r["cached"] < target]
    print("all targets met" if not misses else "missed: " + ", ".join(misses))
    smollm2_rows(args, with_hf)
    padded_rows(args)


def cached_smollm2():
    """The cached SmolLM2 GGUF file's path, or None (with a note why) when it is not cached and cannot be fetched."""
    try:
        from lmlab.pretrained import smollm2

        return smollm2.fetch(progress=False)  # from the cache; offline and not cached: skipped
    except (ImportError, ConnectionError, ValueError) as err:
        print(f"smollm2-135m: skipped ({err})")
        return None


def smollm2_rows(args, with_hf):
    """lmlab's Llama on SmolLM2-135M against transformers' LlamaForCausalLM loaded from the same file."""
    path = cached_smollm2()
    if path is None:
        return []
    from lmlab import pretrained

    model, tokenizer = pretrained.load("smollm2-135m", progress=False)
    hf = None
    if with_hf:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        hf.generation_config.eos_token_id = None  # both sides write every new token, as lmlab does without eos
    prompt = torch.tensor([tokenizer.encode("The cat sat on the")])
    print(f"\nSmolLM2-135M: prompt {prompt.shape[1]} tokens, {args.smollm2_new_tokens} new tokens, "
          f"best of {args.smollm2_repeats}")
    print(HEADER)
    return bench_model("smollm2-135m", model.eval(), prompt, args.smollm2_new_tokens, args.smollm2_repeats,
                       False, with_hf, hf=hf)


def padded_rows(args):
    from lmlab import pretrained

    print(f"\npadded batches: 4 prompts of {sorted(len(t) for t in PADDED_TEXTS)} characters, "
          f"{args.padded_new_tokens} new tokens each, best of {args.repeats}")
    models = [] if args.skip_shipped else ["shakespeare-char"]
    if cached_smollm2() is not None:
        models.append("smollm2-135m")
    for name in models:
        model, tokenizer = pretrained.load(name, progress=False) if name == "smollm2-135m" else pretrained.load(name)
        bench_padded(name, model.eval(), tokenizer, args.padded_new_tokens, args.repeats)


if __name__ == "__main__":
    main()
