"""The beam-search tree draws every hypothesis, its path to the best one, and rejects malformed trees."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from lmlab import viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# two beams; step 1 keeps "a" and "b" and prunes "c"; step 2's nodes are listed out of parent order
TREE = [
    [(0, "a", -0.1), (0, "b", -0.5), (0, "c", -2.0, False)],
    [(1, "y", -0.6), (0, "x", -0.3), (1, " ", -0.9, False), (0, "z", -3.0, False)],
]


def _nodes(ax):
    """{label text: (x, y, face colour)} of every drawn box but the root."""
    return {t.get_text(): (*t.get_position(), t.get_bbox_patch().get_facecolor()) for t in ax.texts[1:]}


def test_every_node_is_drawn_with_its_token_and_score_and_one_edge():
    ax = viz.plot_beam_tree(TREE, root="ROMEO:\n")
    nodes = _nodes(ax)
    assert set(nodes) == {"a -0.10", "b -0.50", "c -2.00", "y -0.60", "x -0.30", "␣ -0.90", "z -3.00"}
    assert ax.texts[0].get_text() == "ROMEO:↵"
    assert len(ax.lines) == 7  # one edge per node
    assert {x for x, *_ in nodes.values()} == {1, 2}


def test_best_path_is_highlighted_and_columns_do_not_cross():
    ax = viz.plot_beam_tree(TREE)
    nodes = _nodes(ax)
    best = matplotlib.colors.to_rgba(viz.BEAM_COLORS["best"])
    assert [k for k, (*_, face) in nodes.items() if face == best] == ["a -0.10", "x -0.30"]
    # children of "a" (above "b") are drawn above the children of "b"
    y = {k.split()[0]: v[1] for k, v in nodes.items()}
    assert y["a"] < y["b"] < y["c"]
    assert max(y["x"], y["z"]) < min(y["y"], y["␣"])
    assert y["x"] < y["z"]  # same parent: the better score first


def test_highlight_can_pick_a_node_or_none():
    ax = viz.plot_beam_tree(TREE, highlight=0)
    best = matplotlib.colors.to_rgba(viz.BEAM_COLORS["best"])
    assert sorted(k for k, (*_, face) in _nodes(ax).items() if face == best) == ["b -0.50", "y -0.60"]
    ax = viz.plot_beam_tree(TREE, highlight=None)
    assert all(face != best for *_, face in _nodes(ax).values())


@pytest.mark.parametrize("steps, message", [
    ([], "steps must"),
    ([[]], r"steps\[0\] must"),
    ([[(0, "a")]], r"steps\[0\]\[0\] must"),
    ([[(0, 5, -1.0)]], r"steps\[0\]\[0\] must"),
    ([[(0, "a", float("nan"))]], r"steps\[0\]\[0\] must"),
    ([[(0, "a", -1.0)], [(1, "b", -2.0)]], r"steps\[1\]\[0\] has parent 1"),
    ([[(0, "a", -1.0, False)], [(0, "b", -2.0)]], "pruned"),
])
def test_malformed_trees_raise_one_sentence_naming_the_node(steps, message):
    with pytest.raises(ValueError, match=message):
        viz.plot_beam_tree(steps)


def test_bad_highlight_raises():
    with pytest.raises(ValueError, match="highlight must"):
        viz.plot_beam_tree(TREE, highlight=4)
