"""The sampling plots of lesson 08 draw the distribution, the rule and the tokens that decoding's filters keep."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pytest
import torch

from lmlab import viz

LABELS = list("abcde")
PROBS = torch.tensor([0.05, 0.5, 0.15, 0.3, 0.0])  # ranked: b 0.5, d 0.3, c 0.15, a 0.05, e 0


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def kept_colors(ax):
    """True for each bar drawn in the kept colour, False for a grey (removed) one."""
    return [mcolors.to_hex(bar.get_facecolor()) == mcolors.to_hex("tab:blue") for bar in ax.patches]


def line(ax, label_start):
    (found,) = [ln for ln in ax.lines if ln.get_label().startswith(label_start)]
    return found


def test_plot_temperatures_draws_the_same_tokens_at_every_temperature_with_the_entropy():
    logits = torch.tensor([[1.0, 3.0, 0.5, 2.0, -1.0]])
    axes = viz.plot_temperatures(logits, LABELS, temperatures=(0.0, 0.5, 1.0, 2.0), top=4)
    assert len(axes) == 4
    for ax, t in zip(axes, (0.0, 0.5, 1.0, 2.0)):
        assert [tick.get_text() for tick in ax.get_xticklabels()] == ["b", "d", "a", "c"]
        heights = torch.tensor([bar.get_height() for bar in ax.patches], dtype=torch.float32)
        if t == 0:
            assert heights.tolist() == [1.0, 0.0, 0.0, 0.0]  # greedy: all the mass on the argmax
            assert "greedy" in ax.get_title() and "entropy 0.00 nats" in ax.get_title()
        else:
            probs = (logits[0] / t).softmax(-1)
            assert torch.allclose(heights, probs[[1, 3, 0, 2]])
            assert f"entropy {viz.entropy(probs):.2f} nats" in ax.get_title()


def test_plot_temperatures_spreads_the_mass_as_the_temperature_rises():
    axes = viz.plot_temperatures(torch.tensor([1.0, 3.0, 0.5, 2.0, -1.0]), LABELS, temperatures=(0.7, 1.5))
    top_bar = [ax.patches[0].get_height() for ax in axes]
    assert top_bar[0] > top_bar[1]


def test_plot_nucleus_keeps_the_smallest_set_reaching_p_and_draws_the_cut():
    ax = viz.plot_nucleus(PROBS, LABELS, 0.7, top=5)
    assert kept_colors(ax) == [True, True, False, False, False]  # 0.5 + 0.3 >= 0.7
    assert line(ax, "cumulative").get_ydata() == pytest.approx([0.5, 0.8, 0.95, 1.0, 1.0])
    assert line(ax, "p = 0.7").get_ydata()[0] == pytest.approx(0.7)
    assert line(ax, "cut").get_xdata()[0] == pytest.approx(1.5)  # between the 2nd and the 3rd bar
    assert ax.get_title() == "top-p 0.7: 2 of 5 tokens kept"


def test_plot_nucleus_at_exactly_p_and_at_p_1():
    ax = viz.plot_nucleus(PROBS, LABELS, 0.8, top=5)  # mass exactly 0.8 after two tokens: two are enough
    assert kept_colors(ax) == [True, True, False, False, False]
    ax = viz.plot_nucleus(PROBS, LABELS, 1.0, top=5)
    assert all(kept_colors(ax))
    assert not [ln for ln in ax.lines if ln.get_label() == "cut"]
    assert ax.get_title() == "top-p 1: 5 of 5 tokens kept"


def test_plot_nucleus_draws_a_legend_unless_told_not_to():
    assert viz.plot_nucleus(PROBS, LABELS, 0.7).get_legend() is not None
    _, ax = plt.subplots()
    assert viz.plot_nucleus(PROBS, LABELS, 0.7, ax=ax, legend=False).get_legend() is None


def test_plot_min_p_draws_the_threshold_relative_to_the_largest_probability():
    ax = viz.plot_min_p(PROBS, LABELS, 0.4, top=4)  # threshold 0.4 * 0.5 = 0.2
    assert kept_colors(ax) == [True, True, False, False]
    assert line(ax, "threshold").get_ydata()[0] == pytest.approx(0.2)
    assert ax.get_title() == "min-p 0.4: 2 of 5 tokens kept"
    confident = torch.tensor([0.01, 0.96, 0.01, 0.01, 0.01])
    ax = viz.plot_min_p(confident, LABELS, 0.4, top=4)
    assert kept_colors(ax) == [True, False, False, False]


def test_sampling_plots_reject_bad_input_in_one_sentence():
    with pytest.raises(ValueError, match="labels must have one entry per token"):
        viz.plot_nucleus(PROBS, LABELS[:3], 0.9)
    with pytest.raises(ValueError, match=r"p must be in \(0.0, 1.0\]"):
        viz.plot_nucleus(PROBS, LABELS, 0.0)
    with pytest.raises(ValueError, match=r"p must be in \[0.0, 1.0\]"):
        viz.plot_min_p(PROBS, LABELS, 1.5)
    with pytest.raises(ValueError, match="probs must have shape"):
        viz.plot_min_p(torch.rand(2, 5), LABELS, 0.1)
    with pytest.raises(ValueError, match="temperature must be"):
        viz.plot_temperatures(torch.rand(5), LABELS, temperatures=(-1.0,))
    with pytest.raises(ValueError, match="axes must hold one Axes per temperature"):
        viz.plot_temperatures(torch.rand(5), LABELS, temperatures=(0.5, 1.0), axes=[plt.gca()])
