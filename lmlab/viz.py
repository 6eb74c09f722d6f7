"""Plots the lessons share: distributions over tokens, attention maps, loss curves, a text's tokens.

Each function draws on a matplotlib Axes (a new figure when none is given) and returns the Axes, so a
lesson can place several side by side.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from lmlab._checks import check_fraction, check_positive_int


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
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0 turns -0.0 (a one-hot) into 0.0


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


# ---------------------------------------------------------------------------------------------------
# sampling (lesson 08): what temperature and the filters do to one next-token distribution

_KEPT, _REMOVED, _RULE = "tab:blue", "lightgrey", "tab:red"


def _prob_vector(probs, labels, name="probs"):
    """probs (vocab,) or (1, vocab) -> a float (vocab,) tensor, checked against `labels`."""
    probs = torch.as_tensor(probs).detach().float()
    if probs.dim() == 2 and probs.shape[0] == 1:
        probs = probs[0]
    if probs.dim() != 1 or probs.numel() == 0:
        raise ValueError(f"{name} must have shape (vocab,) or (1, vocab), got {tuple(probs.shape)}")
    if len(labels) != probs.numel():
        raise ValueError(f"labels must have one entry per token ({probs.numel()}), got {len(labels)}")
    return probs


def _log(probs):
    # a finite log even for probability 0, so that a filter that keeps everything keeps those tokens too
    return probs.clamp_min(torch.finfo(torch.float32).tiny).log()[None]


def _kept_bars(ax, probs, labels, kept, top):
    """Bars of the `top` most probable tokens, most probable first, grey where `kept` is False; their ids."""
    values, ids = probs.topk(min(top, probs.numel()))
    ax.bar(range(len(ids)), values.tolist(), color=[_KEPT if kept[i] else _REMOVED for i in ids.tolist()])
    ax.set_xticks(range(len(ids)), [token_label(labels[i]) for i in ids.tolist()])
    ax.set_xlim(-0.6, len(ids) - 0.4)
    ax.set_ylabel("probability")
    return ids


def plot_temperatures(logits, labels, temperatures=(0.0, 0.7, 1.0, 1.5), top: int = 12, axes=None,
                      figsize=(10, 2.8)):
    """The next-token distribution softmax(logits / T) for each temperature, one bar chart each, side by side.

    logits: (vocab,) or (1, vocab); labels: one str per id. Every panel shows the same `top` tokens (the
    most probable ones) in the same order on a shared 0..1 axis, with the distribution's entropy in its
    title; T = 0 is greedy (all the probability on the argmax). Returns the list of axes.
    """
    from lmlab.decoding import apply_temperature

    logits = _prob_vector(logits, labels, "logits")
    temperatures = list(temperatures)
    if not temperatures:
        raise ValueError("temperatures must hold at least one temperature, got none")
    check_positive_int(top, "top")
    if axes is None:
        _, axes = plt.subplots(1, len(temperatures), figsize=figsize, sharey=True, squeeze=False,
                               layout="constrained")
        axes = list(axes[0])
    if len(axes) != len(temperatures):
        raise ValueError(f"axes must hold one Axes per temperature ({len(temperatures)}), got {len(axes)}")
    ids = logits.topk(min(top, logits.numel())).indices  # temperature keeps the order: same tokens everywhere
    for ax, t in zip(axes, temperatures):
        probs = apply_temperature(logits[None], t)[0].softmax(-1)
        ax.bar(range(len(ids)), probs[ids].tolist(), color=_KEPT)
        ax.set_xticks(range(len(ids)), [token_label(labels[i]) for i in ids.tolist()])
        ax.set_ylim(0, 1.05)
        name = "T = 0 (greedy)" if t == 0 else f"T = {t:g}"
        ax.set_title(f"{name}\nentropy {abs(entropy(probs)):.2f} nats", fontsize=10)  # abs: a one-hot gives -0.0
    axes[0].set_ylabel("probability")
    return axes


def plot_nucleus(probs, labels, p: float, top: int = 20, ax=None, title=None, legend: bool = True):
    """Nucleus (top-p) filtering drawn: the `top` most probable tokens, their cumulative probability, p and the cut.

    probs: (vocab,) probabilities; labels: one str per id. The tokens `lmlab.decoding.top_p_filter` keeps
    (the smallest set of most probable ones with mass >= p) are coloured, the others grey; the line
    through the bar tops is the mass of each token and all those before it; `legend=False` leaves out its
    key (for a row of such plots). Returns the Axes.
    """
    from lmlab.decoding import top_p_filter

    probs = _prob_vector(probs, labels)
    p = check_fraction(p, "p", 0.0, 1.0, low_open=True)
    check_positive_int(top, "top")
    kept = torch.isfinite(top_p_filter(_log(probs), p)[0])
    n_kept, vocab = int(kept.sum()), probs.numel()
    ax = _axes(ax)
    ids = _kept_bars(ax, probs, labels, kept, top)
    cumulative = probs.sort(descending=True).values.cumsum(0)[: len(ids)]
    ax.plot(range(len(ids)), cumulative.tolist(), "o-", color="black", ms=3, lw=1, label="cumulative probability")
    ax.axhline(p, color=_RULE, ls="--", lw=1, label=f"p = {p:g}")
    if n_kept < len(ids):
        ax.axvline(n_kept - 0.5, color=_RULE, ls=":", lw=1.5, label="cut")
    ax.set_ylim(0, 1.05)
    if legend:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"top-p {p:g}: {n_kept} of {vocab} tokens kept", fontsize=10)
    return ax


def plot_min_p(probs, labels, p: float, top: int = 20, ax=None, title=None):
    """Min-p filtering drawn: the `top` most probable tokens and the threshold p × (largest probability).

    probs: (vocab,) probabilities; labels: one str per id. The tokens `lmlab.decoding.min_p_filter` keeps
    (probability >= the threshold) are coloured, the others grey. Returns the Axes.
    """
    from lmlab.decoding import min_p_filter

    probs = _prob_vector(probs, labels)
    p = check_fraction(p, "p")
    check_positive_int(top, "top")
    kept = torch.isfinite(min_p_filter(_log(probs), p)[0])
    ax = _axes(ax)
    _kept_bars(ax, probs, labels, kept, top)
    highest = float(probs.max())
    ax.axhline(p * highest, color=_RULE, ls="--", lw=1,
               label=f"threshold {p:g} × {highest:.2f} = {p * highest:.3f}")
    ax.set_ylim(0, highest * 1.15)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"min-p {p:g}: {int(kept.sum())} of {probs.numel()} tokens kept", fontsize=10)
    return ax


BEAM_COLORS = {"kept": "#cfe2f3", "pruned": "white", "best": "#f9cb9c"}


def _check_beam_steps(steps):
    if not isinstance(steps, (list, tuple)) or not steps:
        raise ValueError(f"steps must be a non-empty list with one list of nodes per step, got {steps!r:.60}")
    nodes = []
    for t, step in enumerate(steps):
        if not isinstance(step, (list, tuple)) or not step:
            raise ValueError(f"steps[{t}] must be a non-empty list of (parent, token, score[, kept]) nodes, got {step!r:.60}")
        column = []
        for i, node in enumerate(step):
            ok = isinstance(node, (list, tuple)) and len(node) in (3, 4)
            parent, token, score, kept = (tuple(node) + (True,))[:4] if ok else (None, None, None, None)
            ok = (ok and isinstance(token, str) and isinstance(score, (int, float, torch.Tensor))
                  and not isinstance(score, bool) and not math.isnan(float(score)))
            if not ok:
                raise ValueError(f"steps[{t}][{i}] must be a (parent, token: str, score: number[, kept: bool]) tuple, got {node!r:.60}")
            if t > 0:
                prev = nodes[t - 1]
                if isinstance(parent, bool) or not isinstance(parent, int) or not 0 <= parent < len(prev):
                    raise ValueError(f"steps[{t}][{i}] has parent {parent!r}; it must index steps[{t - 1}] (0 to {len(prev) - 1})")
                if not prev[parent][3]:
                    raise ValueError(f"steps[{t}][{i}] has parent {parent}, a pruned node of steps[{t - 1}]; only kept nodes have children")
            column.append((parent if t > 0 else None, token, float(score), bool(kept)))
        nodes.append(column)
    return nodes


def plot_beam_tree(steps, root: str = "", ax=None, title=None, highlight="best"):
    """Draw a beam search as a tree of scored hypotheses, one column per step.

    steps: one list per step of the nodes (hypotheses) made at that step, each a tuple
    (parent, token, score) or (parent, token, score, kept): `parent` indexes the previous step's list
    (ignored at step 0, whose parent is the root), `token` (str) is the token the node appends, `score`
    the hypothesis' total log-probability, `kept=False` a candidate that was pruned (drawn white; it has
    no children). root: a label for the prompt. highlight: the index of a node of the last step whose
    path is drawn in orange; "best" (default) is the best-scored kept one, None draws no path.
    Returns the Axes; nodes are ordered in each column by their parent, then by score, so no edges cross.
    """
    nodes = _check_beam_steps(steps)
    last = nodes[-1]
    if highlight == "best":
        kept_last = [i for i, n in enumerate(last) if n[3]]
        highlight = max(kept_last, key=lambda i: last[i][2]) if kept_last else None
    elif highlight is not None and (isinstance(highlight, bool) or not isinstance(highlight, int)
                                   or not 0 <= highlight < len(last)):
        raise ValueError(f"highlight must be 'best', None or an index of the last step (0 to {len(last) - 1}), got {highlight!r}")
    on_path = [set() for _ in nodes]
    i = highlight
    for t in range(len(nodes) - 1, -1, -1):
        if i is None:
            break
        on_path[t].add(i)
        i = nodes[t][i][0]

    rows = max(len(column) for column in nodes)
    ax = _axes(ax, figsize=(min(10.0, 1.4 * (len(nodes) + 1)), min(6.0, 0.4 * rows + 0.8)))
    # y of each node: its rank in the column (ordered by parent's y, then best score first), centred
    ys = [[0.0] * len(column) for column in nodes]
    parent_y = lambda t, n: 0.0 if t == 0 else ys[t - 1][n[0]]  # noqa: E731
    for t, column in enumerate(nodes):
        order = sorted(range(len(column)), key=lambda i: (parent_y(t, column[i]), -column[i][2], i))
        for rank, i in enumerate(order):
            ys[t][i] = rank - (len(column) - 1) / 2
    box = ax.get_position()
    cell_h = box.height * ax.figure.get_figheight() * 72 / rows  # points per row
    cell_w = box.width * ax.figure.get_figwidth() * 72 / (len(nodes) + 1)
    longest = max(len(token_label(n[1])) + 7 for column in nodes for n in column)
    fontsize = max(5.0, min(9.0, cell_h * 0.55, cell_w / (0.62 * longest)))

    def draw(x, y, text, face, edge, color="black", weight="normal"):
        ax.text(x, y, text, ha="center", va="center", family="monospace", fontsize=fontsize, color=color,
                fontweight=weight, zorder=3, bbox=dict(boxstyle="round,pad=0.25", facecolor=face, edgecolor=edge))

    draw(0, 0, token_label(root[-12:]) if root else "prompt", "#eeeeee", "grey")
    for t, column in enumerate(nodes):
        for i, (parent, token, score, kept) in enumerate(column):
            best = i in on_path[t]
            py = parent_y(t, column[i])
            ax.plot([t, t + 1], [py, ys[t][i]], zorder=1, color="tab:orange" if best else "tab:blue" if kept else "lightgrey",
                    lw=2.5 if best else 1.2, ls="-" if kept else "--")
            face = BEAM_COLORS["best" if best else "kept" if kept else "pruned"]
            draw(t + 1, ys[t][i], f"{token_label(token)} {score:.2f}", face, "tab:orange" if best else "grey",
                 color="black" if kept else "grey", weight="bold" if best else "normal")
    ax.set_xlim(-0.6, len(nodes) + 0.6)
    ax.set_ylim((rows - 1) / 2 + 0.6, -(rows - 1) / 2 - 0.6)
    ax.set_xticks(range(len(nodes) + 1), ["prompt"] + [f"step {t + 1}" for t in range(len(nodes))], fontsize=8)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


# --- training curves (lesson 06) ----------------------------------------------------------------


def _history_dict(history) -> dict:
    """A training history as a dict: a `lmlab.training.History` (anything with `to_dict()`) or a dict."""
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if not isinstance(history, dict):
        raise ValueError(f"history must be a training History or its dict, got {type(history).__name__}")
    for xs, ys in (("step", "train_loss"), ("step", "lr"), ("val_step", "val_loss")):
        if len(history.get(xs) or []) != len(history.get(ys) or []):
            raise ValueError(f"history must have one {xs} per {ys}, got {len(history.get(xs) or [])} "
                             f"and {len(history.get(ys) or [])}")
    return history


def _check_logged(h: dict) -> None:
    if not h.get("lr"):
        raise ValueError("history must hold at least one logged step (history.step, .train_loss, .lr), got none")


def plot_lr(history, ax=None, title="learning rate"):
    """Learning rate against step, from a training History (or its dict): the warmup, then the decay."""
    h = _history_dict(history)
    _check_logged(h)
    ax = _axes(ax, figsize=(5, 3.5))
    ax.plot(h["step"], h["lr"], color="tab:green")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set_ylim(0, max(h["lr"]) * 1.08)
    ax.set_title(title)
    return ax


def plot_training(history, axes=None, title=None):
    """Two panels from a training History (or its dict): train and validation loss, and the learning rate.

    axes: two matplotlib Axes to draw on (a new (10, 3.5) figure when None). Returns the two Axes.
    """
    h = _history_dict(history)
    _check_logged(h)
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 2]})
        if title:
            fig.suptitle(title)
    elif len(axes) != 2:
        raise ValueError(f"axes must be two matplotlib Axes (loss, learning rate), got {len(axes)}")
    plot_losses(h, ax=axes[0], title="loss")
    plot_lr(h, ax=axes[1])
    axes[0].figure.tight_layout()
    return axes
