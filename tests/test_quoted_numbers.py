"""Every number a lesson's prose quotes from its own outputs must be in those outputs.

A lesson marks such a number in its markdown as <span title="measured">1.456</span> (a code host and
JupyterLab show the number, with "measured" as its tooltip). This test reads the stored notebook and
looks for each marked number in the text outputs of that notebook's code cells, so prose and outputs
cannot drift apart when a lesson is re-executed.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MARK = re.compile(r'<span title="measured">(.*?)</span>', re.S)


def _outputs_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in out.get("data", {}):
                    parts.append("".join(out["data"][mime]))
    return "\n".join(parts)


def _normalise(text: str) -> str:
    # the same number may be printed as 4,096 or 4096, with a thin space or a % glued on
    return re.sub(r"[,\s\u2009\u202f]", "", text)


def marked_numbers(nb: dict) -> list[str]:
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            found += [m.strip() for m in MARK.findall("".join(cell["source"]))]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_marked_number_is_in_the_notebooks_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    outputs = _normalise(_outputs_text(nb))
    missing = [n for n in marked_numbers(nb) if _normalise(n) not in outputs]
    assert not missing, f"{path.name} quotes {missing} in its prose, but no output of the notebook shows them"


def test_the_check_finds_a_number_that_is_not_in_the_outputs():
    nb = {"cells": [
        {"cell_type": "markdown", "source": ['The loss is <span title="measured">1.456</span>, '
                                            'over <span title="measured">4,096</span> characters.']},
        {"cell_type": "code", "source": [], "outputs": [{"output_type": "stream", "text": ["loss 1.465 over 4096\n"]}]},
    ]}
    assert marked_numbers(nb) == ["1.456", "4,096"]
    outputs = _normalise(_outputs_text(nb))
    assert [n for n in marked_numbers(nb) if _normalise(n) not in outputs] == ["1.456"]
