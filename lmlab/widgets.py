"""Playgrounds for the notebooks: move a slider, watch the next-token distribution change.

    from lmlab.widgets import Playground
    Playground(prompt="ROMEO:\\n")          # the shipped char model, with a menu that switches to SmolLM2
    Playground("smollm2-135m", prompt="The cat sat on the")
    Playground(model, tokenizer)            # any lmlab model + tokenizer (shown as "custom")

`next_token_view` is the computation behind the plot, a pure function on logits `(batch, vocab)`;
`Playground` wires it to ipywidgets. How the playground stays fast:

- The model runs only when the prompt changes: the next-token logits of each prompt are cached, and a
  filter or strategy change only re-filters those cached logits.
- The plot is an `ipywidgets.Image` holding a PNG rendered by one reused matplotlib Figure (Agg, no
  pyplot). Swapping the picture's bytes never flickers, and a redraw only repaints the bars over a
  saved background (blitting): the axes, token labels and titles are drawn again only when the prompt,
  the strategy or the y-axis range changes.
- The sampled continuation costs one forward pass per token, so it is generated only when asked for
  (Regenerate, New seed, a new seed, prompt or model), never on a slider move; it streams in as it is
  generated, and is marked as out of date when the settings change after it was drawn.
- The model picker loads each model on its first pick and keeps it, with its labels and its logits cache,
  so that switching back is instant.

A model switch while a continuation is being generated: the kernel handles one widget message at a time,
so a pick made in the page waits until the generation ends, then shows the new model. A switch made from
code during a generation (a `set(model=...)` from inside the stream) abandons the old generation: it stops
writing, and the new model's view and continuation are shown.
"""

from __future__ import annotations

import contextlib
import html
import io
import time
from collections import OrderedDict
from typing import NamedTuple

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from lmlab import decoding
from lmlab._checks import check_fraction, check_nonnegative_int, check_positive_int
from lmlab.viz import plot_distribution, token_label

STRATEGIES = ("sample", "greedy", "beam")
MODELS = ("shakespeare-char", "smollm2-135m")  # the picker's models, loaded by `lmlab.pretrained.load` when picked
CUSTOM = "custom"  # the picker's name for a model given to the constructor
_MAX_LABEL = 14  # characters of a bar's label: longer tokens are cut with "…"
_YLIMS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # y-axis steps: the background is redrawn only on a step change
_KEPT_COLOR, _AFTER_COLOR, _DROPPED_COLOR = "tab:blue", "tab:orange", "lightgrey"
_MAX_SEED = 2**31 - 1
_BIG_MODEL = 10_000_000  # parameters: above this the playground writes shorter continuations by default


class NextTokenView(NamedTuple):
    """The next-token distribution before and after decoding's filters, row by row."""

    probs: torch.Tensor  # (batch, vocab) softmax of the model's logits
    filtered_probs: torch.Tensor  # (batch, vocab) the distribution the strategy picks from
    kept: torch.Tensor  # (batch, vocab) bool: tokens the filters keep
    entropy: torch.Tensor  # (batch,) nats, of probs
    filtered_entropy: torch.Tensor  # (batch,) nats, of filtered_probs
    num_kept: torch.Tensor  # (batch,) long


def _entropy(probs):
    return torch.special.entr(probs).sum(-1)  # entr(0) = 0: removed tokens add nothing


def next_token_view(logits, strategy="sample", temperature=1.0, top_k=None, top_p=None, min_p=None,
                    num_beams=4) -> NextTokenView:
    """What `strategy` does to next-token logits `(batch, vocab)`.

    "sample" applies temperature, top-k, top-p and min-p (None = off) in `decoding.filter_logits`'s
    order; "greedy" keeps each row's most probable token; "beam" keeps the `num_beams` most probable
    first tokens (and their ties), the ones beam search follows, renormalised for display.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "sample":  # each decoding function checks the logits and its own argument
        filtered = decoding.filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    elif strategy == "greedy":
        filtered = decoding.apply_temperature(logits, 0)
    else:
        filtered = decoding.top_k_filter(logits, check_positive_int(num_beams, "num_beams"))
    probs, filtered_probs = logits.detach().float().softmax(-1), filtered.detach().float().softmax(-1)
    kept = torch.isfinite(filtered)
    return NextTokenView(probs, filtered_probs, kept, _entropy(probs), _entropy(filtered_probs), kept.sum(-1))


def _byte_level_bytes():
    """The byte-level BPE alphabet: the printable character that stands for each byte (Ġ for a space) -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


_BYTE_OF = _byte_level_bytes()


def _piece_text(piece: str) -> str:
    """A byte-level piece ("Ġthe", "âĢ") as text; bytes of an unfinished character as \\xNN."""
    if not all(c in _BYTE_OF for c in piece):
        return piece  # not a byte-level piece (a control token's name, a WordPiece "##ing")
    return bytes(_BYTE_OF[c] for c in piece).decode("utf-8", errors="backslashreplace")


def readable_label(text: str, max_len: int = _MAX_LABEL) -> str:
    """`text` as a bar label: whitespace made visible (␣ ↵ ⇥), other control characters as \\xNN, cut at `max_len`."""
    text = "".join(c if c.isprintable() or c in " \n\t" else f"\\x{ord(c):02x}" for c in text)
    label = token_label(text)
    return label if len(label) <= max_len else label[: max_len - 1] + "…"


def token_labels(tokenizer) -> list[str]:
    """A short printable label for every token id of `tokenizer`.

    The token's text with whitespace made visible ("␣the", "↵"); a control token by its name
    ("<|im_end|>"); a byte-level piece that is only part of a character by its bytes ("\\xe2\\x80").
    """
    if not all(hasattr(tokenizer, name) for name in ("encode", "decode", "vocab_size")):
        raise ValueError(f"tokenizer must have encode, decode and vocab_size (an lmlab tokenizer), got {type(tokenizer).__name__}")
    labels = []
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode([i])
        if not text or "\ufffd" in text:  # a special token, or a piece of a multi-byte character
            text = _piece_text(tokenizer.id_to_token(i)) if hasattr(tokenizer, "id_to_token") else f"<{i}>"
        labels.append(readable_label(text))
    return labels


def _device(model):
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


@contextlib.contextmanager
def _one_thread():
    """torch on one thread, restored afterwards (why: see `_inference`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _inference(model):
    """No gradients, dropout off and one thread; the model's mode and torch's threads are restored afterwards.

    One prompt, one token at a time is too little work to share between threads: on a busy machine the
    threads wait for each other far longer than they save (measured on the course's 2-core machine under
    load: 2 ms per token of the char model with one thread, over 100 ms with two).
    """
    training = getattr(model, "training", False)
    if training:
        model.eval()
    try:
        with torch.no_grad(), _one_thread():
            yield
    finally:
        if training:
            model.train()


_PRETRAINED = {}  # name -> (model, tokenizer): every playground of a kernel shares one copy of each model


def _default_new_tokens(model) -> int:
    """Continuation length when none is given: 200 tokens for a small model, 40 for a big one (SmolLM2-135M
    writes about 20 tokens a second on one laptop core, and the controls wait while it writes)."""
    parameters = model.parameters() if isinstance(model, torch.nn.Module) else ()
    return 40 if sum(p.numel() for p in parameters) > _BIG_MODEL else 200


def _load_pretrained(name):
    from lmlab import pretrained

    if name not in _PRETRAINED:
        _PRETRAINED[name] = pretrained.load(name)
    return _PRETRAINED[name]


class _Chart:
    """Two bar charts over the same top tokens, before and after filtering, rendered to PNG bytes.

    Everything but the bars and the y axes is drawn once per set of tokens into a saved background; the
    y axes are painted over it once per y range (a handful of steps, each kept), and `png` repaints only
    the bars. A temperature sweep thus never redraws the token labels, the costliest part.
    """

    def __init__(self, figsize, dpi):
        self.fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(self.fig)
        # fixed margins and title positions: automatic layout would triple the cost of a background redraw
        self.fig.subplots_adjust(left=0.07, right=0.99, bottom=0.1, top=0.9, wspace=0.04)
        self.ax_before, self.ax_after = self.fig.subplots(1, 2, sharey=True)
        self.key = None  # (token ids, labels, titles) of the saved backgrounds
        self.backgrounds = {}  # y range -> background with that range's y axes

    def png(self, ids, labels, probs, filtered_probs, kept, titles, ylim) -> bytes:
        """PNG of the bars of token `ids` (top,): probs and filtered_probs (vocab,), kept (vocab,) bool."""
        key = (tuple(ids), tuple(labels[i] for i in ids), titles)  # labels too: another model, other tokens
        if key != self.key:
            self._draw_axes(ids, labels, probs, titles)
            self.fig.canvas.draw()
            self.key, self.backgrounds = key, {None: self.fig.canvas.copy_from_bbox(self.fig.bbox)}
        if ylim not in self.backgrounds:  # a new y range: only the y axes are drawn over the base
            self.fig.canvas.restore_region(self.backgrounds[None])
            self.ax_before.set_ylim(0, ylim)
            for ax in (self.ax_before, self.ax_after):
                ax.draw_artist(ax.yaxis)
            self.backgrounds[ylim] = self.fig.canvas.copy_from_bbox(self.fig.bbox)
        self.ax_before.set_ylim(0, ylim)  # for the bars' scale
        self.fig.canvas.restore_region(self.backgrounds[ylim])
        ids = torch.as_tensor(ids)
        before_colors = np.where(kept[ids].numpy(), _KEPT_COLOR, _DROPPED_COLOR)
        for bar, color in zip(self.ax_before.patches, before_colors):
            bar.set_color(color)
            self.ax_before.draw_artist(bar)
        for bar, height in zip(self.ax_after.patches, filtered_probs[ids].tolist()):
            bar.set_height(height)
            self.ax_after.draw_artist(bar)
        buffer = io.BytesIO()
        # compress_level 1: a few ms instead of tens, for a file only slightly larger
        Image.fromarray(np.asarray(self.fig.canvas.buffer_rgba())).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()

    def _draw_axes(self, ids, labels, probs, titles):
        top = len(ids)
        # a character's label fits under its bar; longer tokens ("␣golden") stand upright, with room made below
        longest = max(len(labels[i]) for i in ids)
        rotation = 0 if longest <= 2 else 90
        below = 0.3 if rotation == 0 else 0.2 + 0.07 * longest  # inches: 9-point characters are ~0.07 in wide
        self.fig.subplots_adjust(bottom=below / self.fig.get_figheight())
        # both panels show the same tokens in the same order: filters only remove, temperature keeps the order
        for ax, title, color in zip((self.ax_before, self.ax_after), titles, (_KEPT_COLOR, _AFTER_COLOR)):
            ax.clear()
            plot_distribution(probs, labels, top=top, ax=ax, color=color)
            ax.set_title(title, fontsize=10, loc="left", y=1.0)
            ax.tick_params(axis="x", labelsize=9, labelrotation=rotation)
            ax.set_xlim(-0.6, top - 0.4)
            for artist in (*ax.patches, ax.yaxis):
                artist.set_animated(True)  # left out of the background, painted by `png`
        self.ax_after.set_ylabel("")


def _grid_slider(description, low, high, step, value, layout, style):
    """A slider over the values low, low + step, ..., high, starting at the one nearest `value`.

    A SelectionSlider syncs the index of a value, not the float itself. A FloatSlider's page turns a value
    like 0.06 into 0.06000000000000001 and sends it back; when a cell sets a slider twice, that late echo
    of the first value would undo the second.
    """
    grid = [round(low + i * step, 2) for i in range(round((high - low) / step) + 1)]
    slider = widgets.SelectionSlider(options=[(f"{v:.2f}", v) for v in grid], description=description,
                                     layout=layout, style=style)
    slider.value = _on_grid(value, slider)
    return slider


def _on_grid(value, slider):
    """The step of `slider` nearest to `value`."""
    return min(slider.options, key=lambda option: abs(option[1] - value))[1]


class Playground:
    """Next-token distribution of a prompt under temperature, top-k, top-p, min-p and a strategy, live.

    model: one of the picker's model names (`MODELS`: "shakespeare-char", "smollm2-135m"; None: the first),
    or any callable `model(input_ids (batch, seq)) -> logits (batch, seq, vocab)` (an lmlab GPT, or a
    plain nn.Module) with its `tokenizer` (encode, decode, vocab_size), shown in the picker as "custom".
    `models` replaces the picker's list: {name: loader}, each loader a function returning (model, tokenizer),
    called on the name's first pick. Sliders start at `temperature`, `top_k` (0 = off), `top_p` (1 = off) and
    `min_p` (0 = off). The chart shows the `top` most probable next tokens, before (grey: removed by
    the filters) and after filtering; the continuation has `max_new_tokens` tokens, drawn with `seed`
    (None: 200 for a model under 10 M parameters, 40 above, so that a real model's continuation takes a
    couple of seconds on a laptop core: the controls wait while it is written).

    Display it as the last expression of a cell (or with `display`). From code: `set(temperature=0.5)`
    (or `set(model="smollm2-135m")`) changes controls with one redraw, `regenerate()` samples the continuation again, and `logits`,
    `view`, `text` and `png` hold what is shown.
    """

    def __init__(self, model=None, tokenizer=None, prompt="ROMEO:\n", *, strategy="sample", temperature=1.0,
                 top_k=0, top_p=1.0, min_p=0.0, num_beams=4, seed=0, max_new_tokens=None, top=20,
                 figsize=(10, 3.2), dpi=80, cache_size=64, models=None):
        if models is None:
            models = {name: (lambda name=name: _load_pretrained(name)) for name in MODELS}
        if not isinstance(models, dict) or not all(isinstance(k, str) and callable(v) for k, v in models.items()):
            raise ValueError("models must be a dict {name: loader}, each loader a function returning (model, tokenizer)")
        self._loaders, self._loaded = dict(models), {}  # name -> loader; name -> (model, tokenizer, labels, logits cache)
        if isinstance(model, str) or model is None:
            if tokenizer is not None:
                raise ValueError("tokenizer must be left out when model is a name: each named model brings its own")
            if not self._loaders:
                raise ValueError("models must name at least one model when no model is given")
            name = next(iter(self._loaders)) if model is None else model
            self._check_model_name(name)
        else:
            if tokenizer is None:
                raise ValueError("model and tokenizer must be given together, or model given as a name")
            if not callable(model):
                raise ValueError(f"model must be a callable mapping input_ids to logits, got {type(model).__name__}")
            name = CUSTOM
            self._loaded[CUSTOM] = (model, tokenizer, token_labels(tokenizer), OrderedDict())
            self._loaders = {CUSTOM: None, **{k: v for k, v in self._loaders.items() if k != CUSTOM}}
        self.num_beams = check_positive_int(num_beams, "num_beams")
        self._new_tokens = None if max_new_tokens is None else check_nonnegative_int(max_new_tokens, "max_new_tokens")
        self._top = check_positive_int(top, "top")
        self.cache_size = check_positive_int(cache_size, "cache_size")
        self._use_model(name)
        self._chart = _Chart(figsize, dpi)
        self._build_controls(name, prompt, strategy, temperature, top_k, top_p, min_p, seed, figsize, dpi)
        self._holding = False
        self._generation = 0  # counts generations: a generation that is no longer the latest stops writing
        self._text, self._text_settings = "", None
        self._view, self._ids = None, None
        self._logits = self._next_token_logits(prompt)  # a bad prompt or model raises here, before any widget shows
        self._redraw()
        self.regenerate()

    # ---- models -------------------------------------------------------------------------------------

    def _check_model_name(self, name):
        if name not in self._loaders:
            raise ValueError(f"model must be one of {list(self._loaders)}, got {name!r}")

    def _use_model(self, name):
        """Make `name` the current model, loading it (once) when it is picked for the first time."""
        self._check_model_name(name)
        if name not in self._loaded:
            loaded = self._loaders[name]()
            if not (isinstance(loaded, tuple) and len(loaded) == 2 and callable(loaded[0])):
                raise ValueError(f"models[{name!r}] must return (model, tokenizer), got {type(loaded).__name__}")
            self._loaded[name] = (*loaded, token_labels(loaded[1]), OrderedDict())
        self.model_name = name
        self.model, self.tokenizer, self.labels, self._logits_cache = self._loaded[name]
        self.top = min(self._top, len(self.labels))
        self._max_k = len(self.labels)
        self.max_new_tokens = self._new_tokens if self._new_tokens is not None else _default_new_tokens(self.model)

    def _switch_model(self, name, prompt):
        """Switch to model `name` and return its logits for `prompt`; on any error the old model stays."""
        old = self.model_name
        if name not in self._loaded:
            self.status.value = f'<i style="color:#777">loading {html.escape(name)}…</i>'
        try:
            self._use_model(name)
            logits = self._next_token_logits(prompt)
        except Exception:
            self._use_model(old)
            self.status.value = ""
            raise
        holding, self._holding = self._holding, True
        try:  # a smaller vocabulary lowers top-k's value with its max: no redraw until the new logits are in
            self.top_k.value = min(self.top_k.value, self._max_k)
            self.top_k.max = self._max_k
        finally:
            self._holding = holding
        self._logits = logits
        return logits

    # ---- controls -----------------------------------------------------------------------------------

    def _check(self, name, value):
        """`value` for control `name`, checked against what the control allows."""
        if name == "model":
            self._check_model_name(value)
        elif name == "prompt":
            self._next_token_logits(value)  # a prompt is fine when the model can read it
        elif name == "strategy" and value not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {value!r}")
        elif name == "temperature":
            return _on_grid(check_fraction(value, "temperature", 0.0, 2.0), self.temperature)
        elif name == "top_k" and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self._max_k):
            raise ValueError(f"top_k must be an integer in [0, {self._max_k}] (0 = off), got {value!r}")
        elif name == "top_p":
            return _on_grid(check_fraction(value, "top_p", 0.01, 1.0), self.top_p)
        elif name == "min_p":
            return _on_grid(check_fraction(value, "min_p"), self.min_p)
        elif name == "seed" and check_nonnegative_int(value, "seed") > _MAX_SEED:
            raise ValueError(f"seed must be <= {_MAX_SEED}, got {value}")
        return value

    def _build_controls(self, model_name, prompt, strategy, temperature, top_k, top_p, min_p, seed, figsize, dpi):
        for name, value in (("strategy", strategy), ("top_k", top_k), ("seed", seed)):
            self._check(name, value)
        temperature = check_fraction(temperature, "temperature", 0.0, 2.0)
        top_p, min_p = check_fraction(top_p, "top_p", 0.01, 1.0), check_fraction(min_p, "min_p")
        wide, style = widgets.Layout(width="320px"), {"description_width": "90px"}
        # a text area, since prompts have line breaks ("ROMEO:\n"); the model runs when it loses focus
        self.prompt = widgets.Textarea(value=prompt, description="prompt", rows=2, continuous_update=False,
                                       layout=widgets.Layout(width="500px"), style=style)
        self.model_picker = widgets.Dropdown(options=list(self._loaders), value=model_name, description="model",
                                             layout=widgets.Layout(width="260px"), style={"description_width": "45px"})
        self.strategy = widgets.Dropdown(options=STRATEGIES, value=strategy, description="strategy",
                                         layout=widgets.Layout(width="220px"), style={"description_width": "60px"})
        self.temperature = _grid_slider("temperature", 0.0, 2.0, 0.05, temperature, wide, style)
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=self._max_k, description="top-k", layout=wide, style=style)
        self.top_p = _grid_slider("top-p", 0.01, 1.0, 0.01, top_p, wide, style)
        self.min_p = _grid_slider("min-p", 0.0, 1.0, 0.01, min_p, wide, style)
        self.seed = widgets.BoundedIntText(value=seed, min=0, max=_MAX_SEED, description="seed",
                                           layout=widgets.Layout(width="180px"), style={"description_width": "40px"})
        self.regenerate_button = widgets.Button(description="Regenerate", icon="refresh",
                                                tooltip="sample the continuation again with these settings and this seed")
        self.new_seed_button = widgets.Button(description="New seed", tooltip="seed + 1, then regenerate")
        width, height = (round(size * dpi) for size in figsize)  # pixel for pixel: a scaled PNG looks blurred
        self.plot = widgets.Image(format="png", layout=widgets.Layout(width=f"{width}px", height=f"{height}px",
                                                                      max_width="none"))
        self.readout = widgets.HTML()
        self.status = widgets.HTML()
        self.continuation = widgets.HTML(layout=widgets.Layout(width="800px"))
        # stable CSS classes: the browser tests (and anyone styling the page) find the parts by them
        for name in ("model_picker", "prompt", "strategy", "temperature", "top_k", "top_p", "min_p", "seed", "plot", "readout",
                     "status", "continuation", "regenerate_button", "new_seed_button"):
            getattr(self, name).add_class("lmlab-" + name.replace("_", "-"))
        self.model_picker.observe(self._on_model, names="value")
        self.prompt.observe(self._on_prompt, names="value")
        for control in (self.strategy, self.temperature, self.top_k, self.top_p, self.min_p):
            control.observe(self._on_filter, names="value")
        self.seed.observe(lambda change: self._generate(), names="value")
        self.regenerate_button.on_click(lambda button: self._generate())
        self.new_seed_button.on_click(lambda button: self._next_seed())
        self.ui = widgets.VBox([
            widgets.HBox([self.model_picker]),
            widgets.HBox([self.prompt, self.strategy]),
            widgets.HBox([self.temperature, self.top_k]),
            widgets.HBox([self.top_p, self.min_p]),
            self.plot,
            self.readout,
            widgets.HBox([self.seed, self.regenerate_button, self.new_seed_button, self.status]),
            self.continuation,
        ])
        self.ui.add_class("lmlab-playground")
        self._enable_sliders()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "lmlab Playground (a live widget: run the notebook in JupyterLab or Voila to use it)"
        return bundle

    def settings(self) -> dict:
        """The current settings: strategy and the filters that `next_token_view` and `sample` take."""
        return {
            "strategy": self.strategy.value,
            "temperature": self.temperature.value,
            "top_k": self.top_k.value or None,
            "top_p": self.top_p.value if self.top_p.value < 1.0 else None,
            "min_p": self.min_p.value or None,
        }

    def set(self, **values):
        """Change several controls at once (model, prompt, strategy, temperature, top_k, top_p, min_p, seed) with one update.

        A model is loaded (once) and checked on the prompt before any control changes: a prompt it cannot
        read raises, and the old model stays.
        """
        names = ("model", "prompt", "strategy", "temperature", "top_k", "top_p", "min_p", "seed")
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"set takes the controls {names}, got unknown {unknown}")
        old_model = self.model_name
        if "model" in values:
            self._check_model_name(values["model"])
            prompt = values.get("prompt", self.prompt.value)
            if not isinstance(prompt, str) or not prompt:
                raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
            self._switch_model(values["model"], prompt)
        try:
            values = {name: self._check(name, value) for name, value in values.items()}
        except ValueError:
            self._switch_model(old_model, self.prompt.value)
            raise
        widget = {name: self.model_picker if name == "model" else getattr(self, name) for name in names}
        old = {name: widget[name].value for name in names}
        self._holding = True
        try:
            for name, value in values.items():
                widget[name].value = value
        finally:
            self._holding = False
        changed = {name for name in names if widget[name].value != old[name]}
        if changed & {"model", "prompt"}:
            self._on_prompt(None)
        elif changed - {"seed"}:
            self._on_filter(None)
        if "seed" in changed and not changed & {"model", "prompt"}:
            self._generate()

    # ---- reactions ----------------------------------------------------------------------------------

    def _on_prompt(self, change):
        if self._holding:
            return
        try:
            self._logits = self._next_token_logits(self.prompt.value)
        except ValueError as error:
            self.status.value = f'<span style="color:#b00">{html.escape(str(error))}</span>'
            return
        self._redraw()
        self._generate()

    def _on_model(self, change):
        if self._holding:
            return
        try:
            self._switch_model(change.new, self.prompt.value)
        except Exception as error:  # a model that fails to load or to read the prompt: the old one stays
            self._holding = True
            try:
                self.model_picker.value = change.old
            finally:
                self._holding = False
            self.status.value = f'<span style="color:#b00">{html.escape(str(error))}</span>'
            return
        self._on_prompt(None)

    def _on_filter(self, change):
        if self._holding:
            return
        self._enable_sliders()
        self._redraw()
        self._show_text()

    def _next_seed(self):
        self.seed.value = (self.seed.value + 1) % (_MAX_SEED + 1)  # the seed observer regenerates

    def _enable_sliders(self):
        sampling = self.strategy.value == "sample"
        for slider in (self.temperature, self.top_k, self.top_p, self.min_p):
            slider.disabled = not sampling

    # ---- model and plot -----------------------------------------------------------------------------

    def _next_token_logits(self, prompt) -> torch.Tensor:
        """Logits (1, vocab) for the token after `prompt`, from the cache or one forward pass."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if prompt in self._logits_cache:
            self._logits_cache.move_to_end(prompt)
            return self._logits_cache[prompt]
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise ValueError(f"prompt must encode to at least one token, got none for {prompt!r}")
        block_size = getattr(getattr(self.model, "config", None), "block_size", None)
        ids = torch.tensor([ids[-block_size:] if block_size else ids], dtype=torch.long, device=_device(self.model))
        with _inference(self.model):
            logits = self.model(ids)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != ids.shape:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"model must return logits of shape (batch, seq, vocab), got {got} for input_ids of shape {tuple(ids.shape)}")
        if logits.shape[-1] != len(self.labels):
            raise ValueError(f"model has {logits.shape[-1]} logits per position but the tokenizer has {len(self.labels)} tokens; they must match")
        logits = logits[:, -1].float().cpu()
        self._logits_cache[prompt] = logits
        if len(self._logits_cache) > self.cache_size:
            self._logits_cache.popitem(last=False)
        return logits

    def _titles(self):
        strategy = self.strategy.value
        after = {"sample": "after temperature and filters: what sampling draws from",
                 "greedy": "greedy: always the most probable token",
                 "beam": f"beam search: the {self.num_beams} first tokens it follows"}[strategy]
        return "the model's next-token distribution (grey: removed)", after

    def _redraw(self):
        s = self.settings()
        with _one_thread():  # filtering a 49k vocabulary is a few ms: threads would only wait for each other
            view = next_token_view(self._logits, s["strategy"], s["temperature"], s["top_k"], s["top_p"], s["min_p"],
                                   self.num_beams)
        probs, filtered, kept = view.probs[0], view.filtered_probs[0], view.kept[0]
        ids = probs.topk(self.top).indices.tolist()
        highest = max(float(probs.max()), float(filtered[ids].max()))
        ylim = next(y for y in _YLIMS if y >= highest * 1.05) if highest * 1.05 <= 1.0 else 1.05
        self.plot.value = self._chart.png(ids, self.labels, probs, filtered, kept, self._titles(), ylim)
        self._view, self._ids = view, ids
        self.readout.value = (
            f"entropy <b>{float(view.entropy[0]):.3f}</b> nats before → <b>{float(view.filtered_entropy[0]):.3f}</b> "
            f"nats after &nbsp;·&nbsp; tokens kept: <b>{int(view.num_kept[0])}</b> of {len(self.labels)}"
        )
        self.status.value = ""

    # ---- continuation -------------------------------------------------------------------------------

    def _text_key(self):
        return (self.prompt.value, self.model_name, self.seed.value, tuple(sorted(self.settings().items())))

    def _generate(self):
        if self._holding:
            return
        prompt = self.prompt.value
        try:
            self._next_token_logits(prompt)  # checks the prompt (and is cached)
        except ValueError as error:
            self.status.value = f'<span style="color:#b00">{html.escape(str(error))}</span>'
            return
        s = self.settings()
        self._generation += 1
        generation, model = self._generation, self.model
        self._text, self._text_settings = "", self._text_key()
        self._show_text(generating=True)
        with _inference(model):
            if s["strategy"] == "beam":
                text = decoding.generate(model, self.tokenizer, prompt, "beam", self.max_new_tokens,
                                         num_beams=self.num_beams)
                if generation != self._generation:
                    return
                self._text = text
            else:
                options = {} if s["strategy"] == "greedy" else {
                    "temperature": s["temperature"], "top_k": s["top_k"], "top_p": s["top_p"], "min_p": s["min_p"],
                    "seed": self.seed.value}
                shown = time.perf_counter()
                for piece in decoding.stream(model, self.tokenizer, prompt, s["strategy"], self.max_new_tokens, **options):
                    if generation != self._generation:  # a newer generation (or model) took over: stop writing
                        return
                    self._text += piece
                    if time.perf_counter() - shown > 0.1:  # stream to the page ten times a second, not per token
                        self._show_text(generating=True)
                        shown = time.perf_counter()
        self._show_text()

    def _show_text(self, generating=False):
        stale = self._text_settings is not None and self._text_settings != self._text_key()
        note = ("generating…" if generating else
                "settings changed since this sample: press Regenerate" if stale else "")
        self.status.value = f'<i style="color:#777">{note}</i>' if note else ""
        prompt, text = self._text_settings[0] if self._text_settings else "", self._text
        color = "#999" if stale else "inherit"
        self.continuation.value = (
            '<pre style="white-space:pre-wrap;margin:0;font-size:13px">'
            f'<span style="color:#888">{html.escape(prompt)}</span><span style="color:{color}">{html.escape(text)}</span></pre>'
        )

    def regenerate(self, seed=None) -> str:
        """Sample the continuation again (with `seed`, when given) and return it."""
        if seed is not None and self._check("seed", seed) != self.seed.value:
            self.seed.value = seed  # the seed observer regenerates
        else:
            self._generate()
        return self._text

    # ---- what is shown ------------------------------------------------------------------------------

    @property
    def view(self) -> NextTokenView:
        """The distribution shown now (batch of one)."""
        return self._view

    @property
    def logits(self) -> torch.Tensor:
        """The model's next-token logits (1, vocab) for the prompt shown now."""
        return self._logits

    @property
    def top_ids(self) -> list[int]:
        """Token ids of the bars, most probable first."""
        return list(self._ids)

    @property
    def text(self) -> str:
        """The continuation shown now (without the prompt)."""
        return self._text

    @property
    def png(self) -> bytes:
        """The chart shown now, as PNG bytes."""
        return bytes(self.plot.value)
