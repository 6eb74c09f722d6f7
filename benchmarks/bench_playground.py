"""How long the playground takes to redraw after a slider move, in Python (no browser), per model.

    python benchmarks/bench_playground.py [--presses 30] [--threads 1] [--models shakespeare-char smollm2-135m]

A slider move must never run the model: the prompt's logits are cached, so a redraw is the filters,
the entropy and the bar chart. The browser tests (tests/test_browser.py -s) print the same latency as
a person sees it, from key press to new image.
"""

import argparse
import statistics
import time

import torch

from lmlab.widgets import Playground


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["shakespeare-char", "smollm2-135m"])
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.presses} temperature moves per setting")
    for name in a.models:
        start = time.perf_counter()
        pg = Playground(name, prompt="The cat sat on the" if name != "shakespeare-char" else "ROMEO:\n",
                        max_new_tokens=0)
        opened = time.perf_counter() - start
        for label, settings in (("temperature only", {}), ("with top-p 0.9", {"top_p": 0.9})):
            pg.set(**settings)
            times = []
            for i in range(a.presses):
                t = time.perf_counter()
                pg.set(temperature=round(0.5 + 0.05 * (i % 20), 2))
                pg.png  # the image the page shows
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            print(f"{name:18s} {label:17s} median {statistics.median(times):6.1f} ms   "
                  f"p90 {times[int(0.9 * len(times)) - 1]:6.1f} ms   (opened in {opened:.1f} s)")


if __name__ == "__main__":
    main()
