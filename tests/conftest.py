"""Settings for the whole test session: one thread for torch, in this process and in every kernel nbval starts.

The suite runs as parallel processes (`pytest -n auto --dist loadfile`, see README), one per core; a
torch that also spread each process over every core would only make them wait for one another. The
notebook kernels inherit this process's environment, so setting it here, before they start, reaches
them too. No test depends on the thread count: this changes speed only.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402  (after the environment, which torch reads when it loads)

from lmlab import exercises  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def first_hint_level():
    """Each test starts as a learner who has seen no hint yet (the hint level is remembered per exercise)."""
    exercises._SHOWN.clear()
