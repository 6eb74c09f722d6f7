"""The notebooks as stored are what learners read on a code host: executed, in order, without errors.

(nbval re-runs each notebook in a fresh kernel; this file checks the stored copies themselves.)
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 1_500_000  # outputs stay small: a few plots per lesson, no giant logs


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_the_course_has_lessons():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_notebook_was_executed_top_to_bottom_without_errors(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    counts = [c["execution_count"] for c in code_cells(nb)]
    assert None not in counts, f"{path.name}: {counts.count(None)} code cells were never executed"
    assert counts == sorted(set(counts)), f"{path.name}: cells were executed out of order: {counts}"
    for cell in code_cells(nb):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{path.name}: a stored output is an error ({out.get('ename')})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_notebook_is_small_and_opens_with_prose(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes; keep outputs small"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name} should open with what the learner will learn"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
