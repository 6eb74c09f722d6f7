"""The training entry point under torchrun: 2 processes on CPU (gloo) end with identical weights."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmlab import checkpoints

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import hashlib, json, os, sys, torch
    from lmlab import training
    from lmlab.models import GPT, GPTConfig

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    torch.manual_seed(rank)  # other initial weights on each rank: DistributedDataParallel must broadcast rank 0's
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = torch.arange(5000) * 7 % 16
    h = training.train(model, data, data[:600], steps=6, batch_size=4, lr=1e-2, log_interval=1, eval_interval=3,
                       eval_batches=1, device="cpu", progress=False, out_dir=os.path.join(out, "ckpt"))
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"hash": hashlib.sha256(weights).hexdigest(), "losses": h.train_loss, "val": h.val_loss,
                   "tokens": h.tokens, "world": int(os.environ["WORLD_SIZE"])}, f)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback device, whatever the host name resolves to
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_two_processes_train_to_identical_weights_each_on_its_own_windows(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = _torchrun(str(script), str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["hash"] == ranks[1]["hash"]  # the gradients were averaged: one model on both ranks
    assert ranks[0]["losses"][0] != ranks[1]["losses"][0]  # ... trained on different windows
    assert ranks[0]["tokens"][-1] == 6 * 4 * 16 * 2  # tokens of both ranks
    assert len(ranks[0]["val"]) == 3 and ranks[1]["val"] == []  # only rank 0 evaluates ...
    assert checkpoints.load_checkpoint(tmp_path / "ckpt").step == 6  # ... and saves


@pytest.mark.slow
def test_the_command_line_runs_unchanged_under_torchrun(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("to be, or not to be, that is the question:\n" * 60)
    done = _torchrun("-m", "lmlab", "train", "--data", str(text), "--out", str(tmp_path / "run"), "--steps", "4",
                     "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "2",
                     "--eval-batches", "1", "--sample-tokens", "0", "--no-progress", "--device", "cpu", cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = checkpoints.load_checkpoint(tmp_path / "run")
    assert ckpt.step == 4 and ckpt.history["tokens"][-1] == 4 * 2 * 16 * 2
