"""The shared plots draw what they are given and reject bad input with one sentence."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from lmlab import viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_entropy_of_uniform_and_one_hot():
    assert viz.entropy(torch.full((8,), 1 / 8)) == pytest.approx(torch.log(torch.tensor(8.0)).item())
    assert viz.entropy(torch.tensor([0.0, 1.0, 0.0])) == 0.0


def test_token_label_makes_whitespace_visible():
    assert viz.token_label(" a\n") == "␣a↵"
    assert viz.token_label("") == "∅"


def test_plot_distribution_draws_the_top_tokens_in_order_and_greys_removed_ones():
    probs = torch.tensor([0.1, 0.5, 0.05, 0.35])
    kept = torch.tensor([False, True, False, True])
    ax = viz.plot_distribution(probs, list("abcd"), top=3, kept=kept)
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.5, 0.35, 0.1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "d", "a"]
    assert ax.patches[2].get_facecolor() != ax.patches[0].get_facecolor()


def test_plot_distribution_rejects_labels_of_the_wrong_length():
    with pytest.raises(ValueError, match="labels"):
        viz.plot_distribution(torch.tensor([0.5, 0.5]), ["a"])


def test_plot_tokens_wraps_after_newlines_and_rejects_bad_input():
    ax = viz.plot_tokens(["a\n", "b"])
    assert ax.get_ylim() == (2, 0)  # two rows
    viz.plot_tokens([])
    for bad in ("abc", [1]):
        with pytest.raises(ValueError, match="tokens"):
            viz.plot_tokens(bad)
    with pytest.raises(ValueError, match="width"):
        viz.plot_tokens(["a"], width=0)


def test_plot_attention_shows_a_seq_by_seq_image():
    w = torch.tril(torch.ones(4, 4))
    w = w / w.sum(-1, keepdim=True)
    ax = viz.plot_attention(w, list("abcd"))
    assert ax.images[0].get_array().shape == (4, 4)


def test_grid_returns_exactly_n_axes():
    fig, axes = viz.grid(5, ncols=3)
    assert len(axes) == 5

def test_plot_attention_heads_draws_one_map_per_layer_and_head_labelled_on_the_edges():
    w = torch.rand(2, 3, 4, 4).softmax(-1)
    fig, axes = viz.plot_attention_heads(w, list("ab c"))
    assert axes.shape == (2, 3)
    assert (axes[1, 2].images[0].get_array() == w[1, 2].numpy()).all()
    assert [t.get_text() for t in axes[1, 0].get_xticklabels()] == ["a", "b", "␣", "c"]
    assert axes[0, 1].get_xticklabels() == [] and axes[0, 1].get_yticklabels() == []

def test_plot_attention_heads_rejects_bad_shapes_in_one_sentence():
    with pytest.raises(ValueError, match="weights must have shape"):
        viz.plot_attention_heads(torch.rand(3, 4, 4), None)
    with pytest.raises(ValueError, match="tokens must have one entry per position"):
        viz.plot_attention_heads(torch.rand(1, 1, 4, 4), list("abc"))


def test_plot_masking_colours_each_kind_of_selected_token():
    original = list("abcd")
    shown = ["[MASK]", "x", "c", "d"]
    ax = viz.plot_masking(original, shown, [True, True, True, False])
    faces = {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches}
    assert {viz.MASKING_COLORS[k] for k in ("[MASK]", "random", "kept", "not selected")} <= faces


def test_plot_masking_rejects_mismatched_lengths_in_one_sentence():
    with pytest.raises(ValueError, match="one entry per token"):
        viz.plot_masking(list("ab"), list("ab"), [True])
