"""Training speed and quality of nanoGPT's CPU "baby GPT" configuration with lmlab's training loop.

    python benchmarks/bench_train.py DATA.txt [--steps 2000] [--threads N] [--compile]

The configuration is the one nanoGPT's README suggests for a CPU (config/train_shakespeare_char.py
with its CPU overrides): character level, block 64, batch 12, 4 layers, 4 heads, 128 dims, dropout 0,
AdamW lr 1e-3 decaying to 1e-4 over the run, 100 warmup steps, beta2 0.99, weight decay 0.1, gradient
clipping at 1, 20 evaluation batches. The last 10 % of the file is the validation text.
Prints validation loss against wall-clock time, tokens per second, and torch's thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from lmlab import corpus, training
from lmlab.models import GPT, GPTConfig
from lmlab.tokenizers import CharTokenizer

BABY_GPT = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
BABY_TRAINING = dict(batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                     eval_batches=20)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a UTF-8 text file, e.g. nanoGPT's tiny shakespeare input.txt ('shakespeare' for the course corpus)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (nanoGPT's baby GPT: 2000)")
    p.add_argument("--eval-interval", type=int, default=250, help="steps between validation evaluations")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) first (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    if a.data == "shakespeare":
        train_text, val_text = corpus.shakespeare("train"), corpus.shakespeare("val")
    else:
        train_text, val_text = corpus.train_val_split(corpus.load_text(a.data), 0.1)
    tok = CharTokenizer.train(train_text + val_text)
    train_ids = torch.tensor(tok.encode(train_text))
    val_ids = torch.tensor(tok.encode(val_text))
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **BABY_GPT))

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, os.cpu_count() {os.cpu_count()}, "
          f"torch.get_num_threads() {torch.get_num_threads()}, device {a.device}, compile {a.compile}")
    print(f"baby GPT: {model.num_parameters():,} parameters, vocabulary {tok.vocab_size}, {len(train_ids):,} training "
          f"and {len(val_ids):,} validation tokens; {a.steps} steps of {BABY_TRAINING['batch_size']} x {BABY_GPT['block_size']} tokens")
    t0 = time.perf_counter()
    h = training.train(model, train_ids, val_ids, steps=a.steps, eval_interval=a.eval_interval, log_interval=10,
                       device=a.device, compile=a.compile, progress=False, **BABY_TRAINING)
    total = time.perf_counter() - t0

    print(f"\n{'step':>6} {'wall s':>8} {'train loss':>11} {'val loss':>9} {'tokens/s':>9}")
    log = dict(zip(h.step, zip(h.train_loss, h.tokens_per_s)))
    for step, loss, wall in zip(h.val_step, h.val_loss, h.val_time):
        # tokens/s over the log interval that ends here (evaluation time excluded)
        train_loss, tps = log.get(step, (float("nan"), float("nan")))
        print(f"{step:>6} {wall:>8.1f} {train_loss:>11.4f} {loss:>9.4f} {tps:>9,.0f}")
    steady = h.tokens_per_s[1:] or h.tokens_per_s  # the first interval pays for warm-up allocations
    steady = sorted(steady)[len(steady) // 2]
    print(f"\ntokens/s (median over log intervals, evaluation excluded): {steady:,.0f}  "
          f"= {1000 * BABY_TRAINING['batch_size'] * BABY_GPT['block_size'] / steady:.1f} ms per step")
    print(f"final validation loss {h.val_loss[-1]:.4f} after {total:.0f} s wall time (evaluations included), "
          f"torch.get_num_threads() = {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
