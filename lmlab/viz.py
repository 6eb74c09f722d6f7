"""Plots the lessons share: distributions over tokens, attention maps, loss curves, a text's tokens.

Each function draws on a matplotlib Axes (a new figure when none is given) and returns the Axes, so a
lesson can place several side by side.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from lmlab._checks import check_positive_int


def _axes(ax, figsize=(7, 3)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def token_label(token: str) -> str:
    """A printable label for a token: whitespace made visible."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def entropy(probs: torch.Tensor) -> float:
    """Entropy in nats of a probability vector (zeros contribute nothing)."""
    p = probs[probs > 0]
    return float(-(p * p.log()).sum())


def plot_distribution(probs, labels, top: int = 20, ax=None, title=None, kept=None, color="tab:blue"):
    """Bar chart of the `top` most probable tokens.

    probs: (vocab,) probabilities; labels: one string per id; kept: optional (vocab,) bool mask of the
    tokens a filter kept — the others are drawn grey.
    """
    ax = _axes(ax)
    probs = torch.as_tensor(probs, dtype=torch.float32).flatten()
    if len(labels) != probs.numel():
        raise ValueError(f"labels must have one entry per token ({probs.numel()}), got {len(labels)}")
    top = min(top, probs.numel())
    values, ids = probs.topk(top)
    colors = [color if kept is None or bool(kept[i]) else "lightgrey" for i in ids.tolist()]
    ax.bar(range(top), values.tolist(), color=colors)
    ax.set_xticks(range(top), [token_label(labels[i]) for i in ids.tolist()])
    ax.set_ylabel("probability")
    ax.set_ylim(0, max(1e-9, float(values.max())) * 1.1)
    if title:
        ax.set_title(title)
    return ax


def plot_attention(weights, tokens, ax=None, title=None):
    """Heat map of one attention pattern: weights (seq, seq), row = query, column = key."""
    weights = torch.as_tensor(weights).detach().float()
    ax = _axes(ax, figsize=(4.5, 4.5))
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0)
    labels = [token_label(t) for t in tokens]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title)
    return ax


def plot_losses(history, ax=None, title="loss"):
    """Train and validation loss against step from a training history dict."""
    ax = _axes(ax, figsize=(6, 3.5))
    if history.get("train_loss"):
        ax.plot(history["step"], history["train_loss"], label="train", alpha=0.7)
    if history.get("val_loss"):
        ax.plot(history["val_step"], history["val_loss"], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.legend()
    return ax


def grid(n: int, ncols: int = 4, size: float = 3.0):
    """A figure with n axes in rows of `ncols`; returns (fig, flat list of n axes)."""
    nrows = math.ceil(n / ncols)
    ncols = min(ncols, n)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.axis("off")
    return fig, flat[:n]


def plot_tokens(tokens, ax=None, title=None, width: int = 64, n_rows=None,
                colors=("#cfe2f3", "#fce5cd", "#d9ead3", "#f4cccc")):
    """Draw a text's tokens as coloured boxes in reading order, so that token boundaries show at a glance.

    tokens: list of str (e.g. `tokenizer.tokens(text)`), whitespace made visible as by `token_label`;
    a row ends after a newline token or when the next token would pass `width` characters. `n_rows`:
    rows to make room for (default: as many as the tokens need), so stacked plots line up.
    """
    if isinstance(tokens, str) or not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"tokens must be a list of str, got {type(tokens).__name__}")
    check_positive_int(width, "width")
    boxes, x, y = [], 0, 0  # (column, row, label) of each token, in character cells
    for t in tokens:
        label = token_label(t)
        if x and x + len(label) > width:
            x, y = 0, y + 1
        boxes.append((x, y, label))
        x += len(label)
        if t.endswith("\n"):
            x, y = 0, y + 1
    needed = max((row for _, row, _ in boxes), default=0) + 1
    n_rows = needed if n_rows is None else max(check_positive_int(n_rows, "n_rows"), needed)
    ax = _axes(ax, figsize=(min(10.0, 0.15 * width + 0.4), 0.4 * n_rows + 0.3))
    ax.set_xlim(0, width)
    ax.set_ylim(n_rows, 0)
    ax.axis("off")
    # a monospace character is about 0.6 em wide: the largest font whose characters fit one cell
    box = ax.get_position()
    cell_w = box.width * ax.figure.get_figwidth() * 72 / width
    cell_h = box.height * ax.figure.get_figheight() * 72 / n_rows
    fontsize = min(11.0, cell_w / 0.62, cell_h * 0.6)
    for k, (x, y, label) in enumerate(boxes):
        ax.add_patch(Rectangle((x + 0.06, y + 0.1), len(label) - 0.12, 0.8, color=colors[k % len(colors)], lw=0))
        ax.text(x + len(label) / 2, y + 0.5, label, ha="center", va="center", family="monospace", fontsize=fontsize)
    if title:
        ax.set_title(title, loc="left", fontsize=10)
    return ax


def plot_attention_heads(weights, tokens=None, size: float = 2.0, title=None):
    """Every head of every layer as a grid of heat maps: one row per layer, one column per head.

    weights: (layers, heads, seq, seq), row = query, column = key (e.g. each block's
    `attn.attention_weights`, stacked). tokens: optional labels of the positions, drawn on the bottom
    row and the left column, in a font small enough to fit. Returns (figure, (layers, heads) array of axes).
    """
    weights = torch.as_tensor(weights).detach().float()
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must have shape (layers, heads, seq, seq), got {tuple(weights.shape)}")
    n_layer, n_head, T, _ = weights.shape
    if tokens is not None and len(tokens) != T:
        raise ValueError(f"tokens must have one entry per position ({T}), got {len(tokens)}")
    fig, axes = plt.subplots(n_layer, n_head, figsize=(size * n_head, size * n_layer), squeeze=False)
    labels = [token_label(t) for t in tokens] if tokens is not None else []
    fontsize = min(7.0, 0.8 * size * 72 / T)  # one label per position must fit along an axis
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer, head]
            ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0.0)
            show_x, show_y = labels and layer == n_layer - 1, labels and head == 0
            ax.set_xticks(range(T) if show_x else [], labels if show_x else [], fontsize=fontsize)
            ax.set_yticks(range(T) if show_y else [], labels if show_y else [], fontsize=fontsize)
            ax.tick_params(length=0, pad=1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


MASKING_COLORS = {"[MASK]": "#e06666", "random": "#f6b26b", "kept": "#93c47d", "not selected": "#f3f3f3"}


def plot_masking(original, shown, selected, ax=None, title=None, width: int = 48, mask_token: str = "[MASK]"):
    """BERT's masking of a text, one cell per token, coloured by what happened to it.

    original: the tokens of the text (list of str); shown: the tokens the model sees after masking;
    selected: one bool per token, True where the model must predict (labels != -100). A selected token
    shown as `mask_token` is "[MASK]", one shown as another token is "random", one shown unchanged is
    "kept"; the token to predict is written small under every selected cell. Rows end after a newline or
    at `width` tokens.
    """
    for name, value in (("original", original), ("shown", shown)):
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            raise ValueError(f"{name} must be a list of str, got {type(value).__name__}")
    selected = [bool(s) for s in (selected.tolist() if isinstance(selected, torch.Tensor) else selected)]
    if not len(original) == len(shown) == len(selected):
        raise ValueError(f"original, shown and selected must have one entry per token, got lengths "
                         f"{len(original)}, {len(shown)} and {len(selected)}")
    check_positive_int(width, "width")
    cells, x, y = [], 0, 0
    for orig, seen, chosen in zip(original, shown, selected):
        kind = "not selected" if not chosen else "[MASK]" if seen == mask_token else "kept" if seen == orig else "random"
        cells.append((x, y, kind, orig, seen))
        x += 1
        if x == width or orig.endswith("\n"):
            x, y = 0, y + 1
    n_rows = max((row for _, row, *_ in cells), default=0) + 1
    ax = _axes(ax, figsize=(min(10.0, 0.2 * width + 0.4), 0.62 * n_rows + 0.6))
    ax.set_xlim(0, width)
    ax.set_ylim(n_rows, -0.05)
    ax.axis("off")
    box = ax.get_position()
    cell_w = box.width * ax.figure.get_figwidth() * 72 / width  # points per cell
    fontsize = min(11.0, cell_w / 0.65)
    for x, y, kind, orig, seen in cells:
        ax.add_patch(Rectangle((x + 0.05, y + 0.05), 0.9, 0.55, color=MASKING_COLORS[kind], lw=0))
        label = "M" if kind == "[MASK]" else token_label(seen)
        ax.text(x + 0.5, y + 0.33, label, ha="center", va="center", family="monospace", fontsize=fontsize,
                fontweight="bold" if kind == "[MASK]" else "normal", color="white" if kind == "[MASK]" else "black")
        if kind != "not selected":
            ax.text(x + 0.5, y + 0.8, token_label(orig), ha="center", va="center", family="monospace",
                    fontsize=fontsize * 0.7, color="#555555")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in MASKING_COLORS.values()]
    ax.legend(handles, [f"{k} (M)" if k == "[MASK]" else k for k in MASKING_COLORS], loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False)
    if title:
        ax.set_title(title, loc="left", fontsize=10, pad=22)
    return ax
