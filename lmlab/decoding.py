"""Decoding: from next-token logits to text.

Filters map logits `(batch, vocab)` to logits of the same shape, row by row, and never modify their
input. They follow the Hugging Face `transformers` logits processors, and `filter_logits` composes
them in the order `transformers` uses:

    repetition_penalty -> no_repeat_ngram -> temperature -> top_k -> top_p -> min_p -> typical

A removed token gets the logit -inf (probability 0). Logits are finite numbers or -inf: NaN, +inf, or a
row whose every token is removed raise a ValueError (from a filter's input or from a model), since no
token can be drawn from such a row. Boundary rules:

- temperature 0 is greedy: 0 at each row's first argmax, -inf elsewhere (no division, never NaN); a
  temperature so small that it overflows a row (to +inf) gives that row its limit, greedy, alone;
- `top_p = 1`, `mass = 1`, `min_p = 0` and `k >= vocab` keep every token;
- ties at the k-th largest logit are all kept by `top_k_filter` (so a row may keep more than k);
- `top_p_filter` keeps the smallest set of most probable tokens whose mass is >= p: a token is kept
  while the mass of the tokens ranked before it is < p - 1e-6; the tolerance makes "exactly p"
  robust to float rounding (transformers compares float32 sums exactly, and keeps one token too many
  in about a fifth of such cases). Tokens are ranked by logit, as in transformers (so tokens whose
  probability underflows to 0 still rank above removed ones), equal logits by token id, lowest first;
- `min_p_filter` keeps tokens with prob >= p * max prob, compared in log space with a 1e-5 tolerance;
- `repetition_penalty` never overflows a finite logit to +-inf: the result is clamped to the dtype's range;
- `top_p`, `min_p` and `typical` compute in at least float32 (half-precision logits are upcast);
- `typical_filter` keeps the smallest typical set with mass >= mass (same tolerance as top-p), plus
  every token tied with the last one kept;
- `min_tokens_to_keep` tokens (the most probable; for `typical_filter`, the most typical) always stay.

Search (`greedy`, `sample`, `beam_search`) drives any callable `model(input_ids) -> logits (batch, seq,
vocab)`. A model with `new_cache(batch_size)` (lmlab's GPT) is fed one token per step through its
key/value cache; any other callable recomputes the whole context every step (also `use_cache=False`).

- Context: a model with `config.block_size` sees at most that many tokens. Without the cache, each step
  feeds the last `block_size` tokens (as nanoGPT does). With the cache, the prompt's last `block_size`
  tokens are prefilled; when the cache is full it is restarted with the most recent
  `(block_size + 1) // 2` tokens, so the window slides by half a block at a time and the cost of
  re-prefilling is shared by the half block of cheap steps that follow. Both paths give the same tokens
  as long as prompt + output fit in `block_size`.
- Batches: prompts of unequal lengths are padded on the left, with `attention_mask` (batch, seq) saying
  which positions are tokens (1) and which padding (0); the model (GPT, Llama: any that takes
  `attention_mask=`) then reads each row as if alone, so a padded batch gives each prompt's tokens alone
  (greedy; sampling with one seed per row). `generate` pads a list of prompts itself. The sliding window
  starts when the padded length (longest prompt + output) exceeds `block_size`.
- Rows that produce `eos_token_id` are finished: they are padded with `eos_token_id` while the others go
  on, and the search stops when every row has finished.
- Sizes: `max_new_tokens` is at most 1,000,000 and `num_beams` at most 10,000, and the generated ids
  (rows x (prompt + new)) and one step's beam candidates (prompts x num_beams x vocab) at most 2**28
  numbers each; larger requests are refused before anything is allocated.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Iterator, NamedTuple

import torch

from lmlab._checks import check_fraction, check_ids, check_nonnegative_int, check_positive_int
from lmlab.models import left_padding

_MASS_TOL = 1e-6  # probability mass this close to the threshold counts as reaching it (float rounding)
_LOG_TOL = 1e-5  # the same for min-p's ratio of probabilities, in log space
_NEG_INF = float("-inf")
MAX_NEW_TOKENS = 1_000_000  # a sane bound: generation runs at about 1,000 tokens/s on a laptop CPU
MAX_ELEMENTS = 1 << 28  # largest token or candidate tensor a search may allocate (1-2 GiB)
MAX_BEAMS = 10_000  # each step ranks 2 * num_beams candidates per prompt in Python


# ---------------------------------------------------------------------------------------------------
# argument checks


def _check_logits(logits):
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        got = (f"shape {tuple(logits.shape)} and dtype {logits.dtype}" if isinstance(logits, torch.Tensor)
               else type(logits).__name__)
        raise ValueError(f"logits must be a float tensor of shape (batch, vocab), got {got}")
    if logits.shape[1] == 0:
        raise ValueError("logits must have at least one vocabulary entry, got shape (batch, 0)")
    _check_rows(logits)


def _first_row(mask) -> int:
    return int(mask.nonzero()[0, 0])


def _bad_rows(logits, who: str) -> ValueError:
    """The error for logits (batch, vocab) with a row holding NaN or +inf, or no finite logit at all."""
    for bad, what in ((logits.isnan(), "NaN"), (logits.isposinf(), "+inf")):
        if bad.any():
            row = _first_row(bad.any(-1))
            if who == "model":
                return ValueError(f"model returned {what} logits (row {row} of the batch), which no token can be "
                                  "drawn from; check its weights and inputs")
            return ValueError(f"logits contain {what} (row {row}); allowed are finite numbers and -inf for a "
                              "removed token")
    row = _first_row(logits.amax(-1).isneginf())
    if who == "model":
        return ValueError(f"model returned -inf for every token of row {row}, which leaves no token to draw")
    return ValueError(f"logits row {row} has every token removed (all -inf); at least one must stay finite")


def _check_rows(logits, who: str = "logits"):
    # one reduction: a row's max is finite unless the row holds NaN or +inf, or nothing but -inf
    if not logits.amax(-1).isfinite().all():
        raise _bad_rows(logits, who)


def _check_history(input_ids, logits):
    check_ids(input_ids, "input_ids", vocab_size=logits.shape[1])
    if input_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"input_ids has batch size {input_ids.shape[0]} but logits has {logits.shape[0]}")


def _check_number(value, name: str, low: float, low_open: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low):
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------
# filters: logits (batch, vocab) -> logits (batch, vocab)


def _greedy_logits(logits):
    # the log of a one-hot distribution: 0 at the first argmax, -inf elsewhere
    return torch.full_like(logits, _NEG_INF).scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)


def _temperature(logits, temperature):
    if temperature == 0:
        return _greedy_logits(logits)
    scaled = logits / temperature
    # so small a temperature overflows a row (to +inf, or all to -inf, or 0 / 0): its limit, greedy, is
    # what it means, for that row alone
    overflow = ~scaled.amax(-1).isfinite()
    if overflow.any():
        scaled[overflow] = _greedy_logits(logits[overflow])
    return scaled


def apply_temperature(logits, temperature):
    """Divide logits `(batch, vocab)` by `temperature`; 0 means greedy.

    At temperature 0 the result is the log of a one-hot distribution: 0 at each row's argmax (the first
    one on ties), -inf elsewhere, so softmax gives exactly greedy decoding and never NaN. A row that a
    tiny temperature overflows gets that too; the other rows are divided.
    """
    _check_logits(logits)
    return _temperature(logits, _check_number(temperature, "temperature", 0.0))


def _top_k(logits, k, min_tokens_to_keep=1):
    k = max(k, min_tokens_to_keep)
    if k >= logits.shape[-1]:
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[:, -1:]  # (batch, 1): each row's own threshold
    return logits.masked_fill(logits < kth, _NEG_INF)


def top_k_filter(logits, k, min_tokens_to_keep=1):
    """Keep the `k` largest logits of each row `(batch, vocab)`, and every logit tied with the k-th; -inf elsewhere."""
    _check_logits(logits)
    check_positive_int(k, "k")
    check_positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    return _top_k(logits, k, min_tokens_to_keep)


def _at_least_float32(logits):
    # cumulative sums of half-precision probabilities are too coarse for the boundaries
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _top_p(logits, p, min_tokens_to_keep=1):
    if p >= 1.0:
        return logits.clone()
    # rank by logit: tokens whose probability underflows to 0 stay above removed (-inf) ones, so that
    # min_tokens_to_keep keeps real tokens
    sorted_logits, order = _at_least_float32(logits).sort(dim=-1, descending=True, stable=True)
    sorted_probs = sorted_logits.softmax(-1)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each one
    drop_sorted = mass_before >= p - _MASS_TOL
    drop_sorted[:, :min_tokens_to_keep] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back from rank order to token order
    return logits.masked_fill(drop, _NEG_INF)


def top_p_filter(logits, p, min_tokens_to_keep=1):
    """Nucleus filter: keep, per row of `(batch, vocab)`, the smallest set of most probable tokens with mass >= p.

    Mass within 1e-6 of p counts as reaching it; `p = 1` keeps every token.
    """
    _check_logits(logits)
    p = check_fraction(p, "p", 0.0, 1.0, low_open=True)
    check_positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    return _top_p(logits, p, min_tokens_to_keep)


def _min_p(logits, p, min_tokens_to_keep=1):
    if p == 0.0:
        return logits.clone()
    x = _at_least_float32(logits)  # in half precision, logit_max + log p would be rounded coarsely
    # prob_i >= p * prob_max  <=>  logit_i >= logit_max + log p: no softmax needed
    drop = x < x.amax(-1, keepdim=True) + (math.log(p) - _LOG_TOL)
    if min_tokens_to_keep > 1:
        top = x.topk(min(min_tokens_to_keep, logits.shape[-1]), dim=-1).indices
        drop.scatter_(-1, top, False)
    return logits.masked_fill(drop, _NEG_INF)


def min_p_filter(logits, p, min_tokens_to_keep=1):
    """Keep the tokens of each row `(batch, vocab)` whose probability is >= p times the row's largest."""
    _check_logits(logits)
    p = check_fraction(p, "p")
    check_positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    return _min_p(logits, p, min_tokens_to_keep)


def _typical(logits, mass, min_tokens_to_keep=1):
    if mass >= 1.0:
        return logits.clone()
    log_probs = _at_least_float32(logits).log_softmax(-1)
    probs = log_probs.exp()
    entropy = -(log_probs * probs).nansum(-1, keepdim=True)  # nansum: 0 * log 0 counts as 0
    # a token is typical when its surprisal -log p is close to the entropy (the expected surprisal)
    distance, order = (-log_probs - entropy).abs().sort(dim=-1, stable=True)
    cum = probs.gather(-1, order).cumsum(-1)
    last = (cum < mass - _MASS_TOL).sum(-1, keepdim=True).clamp_(max=logits.shape[-1] - 1)
    drop_sorted = distance > distance.gather(-1, last)
    drop_sorted[:, :min_tokens_to_keep] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, _NEG_INF)


def typical_filter(logits, mass, min_tokens_to_keep=1):
    """Locally typical filter: keep the tokens whose surprisal is closest to the entropy, up to `mass`.

    Per row of `(batch, vocab)`, tokens are ranked by |-log p - entropy| and the smallest set of the
    most typical ones with probability mass >= `mass` is kept; `mass = 1` keeps every token.
    """
    _check_logits(logits)
    mass = check_fraction(mass, "mass", 0.0, 1.0, low_open=True)
    check_positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    return _typical(logits, mass, min_tokens_to_keep)


def _repetition_penalty(logits, input_ids, penalty):
    if penalty == 1.0:
        return logits.clone()
    seen = logits.gather(-1, input_ids)
    # dividing a negative logit would raise its probability: negative ones are multiplied instead
    penalised = torch.where(seen < 0, seen * penalty, seen / penalty)
    # a tiny or huge penalty must not turn a finite logit into +inf (softmax NaN) or -inf (removed)
    big = torch.finfo(logits.dtype).max
    penalised = torch.where(seen.isneginf(), seen, penalised.clamp(-big, big))
    return logits.scatter(-1, input_ids, penalised)  # a token seen twice is still penalised once


def repetition_penalty(logits, input_ids, penalty):
    """CTRL's repetition penalty: for each token already in the row of `input_ids` (batch, seq),
    divide its logit by `penalty` if positive, multiply it if negative; `penalty = 1` changes nothing.
    A finite logit stays finite (clamped to the dtype's range)."""
    _check_logits(logits)
    _check_history(input_ids, logits)
    penalty = _check_number(penalty, "penalty", 0.0, low_open=True)
    return _repetition_penalty(logits, input_ids.long(), penalty)


def _no_repeat_ngram(logits, input_ids, n, name="n", pad=None):
    batch, length = input_ids.shape
    vocab = logits.shape[-1]
    if length < n:
        return logits.clone()
    windows = input_ids.unfold(1, n, 1)  # (batch, length - n + 1, n): every n-gram of each row
    prefix = input_ids[:, length - n + 1 :]  # the n - 1 last tokens, which the next token would extend
    matches = (windows[..., :-1] == prefix[:, None]).all(-1)
    if pad is not None:  # left padding (batch,): n-grams that reach into it are not the row's
        matches &= torch.arange(windows.shape[1], device=pad.device)[None, :] >= pad[:, None]
    # the n-grams that start with the prefix ban their last token; the others write to a spare column
    banned = torch.zeros(batch, vocab + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1], vocab), True)
    out = logits.masked_fill(banned[:, :vocab], _NEG_INF)
    full = out.amax(-1).isneginf()
    if full.any():
        raise ValueError(f"{name}={n} has banned every token of row {_first_row(full)}, which leaves nothing to "
                         f"generate; use a larger {name}")
    return out


def no_repeat_ngram(logits, input_ids, n):
    """Ban (-inf) every token that would repeat an n-gram already in the row of `input_ids` (batch, seq).

    A row left with no token raises a ValueError (use a larger n)."""
    _check_logits(logits)
    _check_history(input_ids, logits)
    check_positive_int(n, "n")
    return _no_repeat_ngram(logits, input_ids.long(), n)


def _processors(temperature=1.0, top_k=None, top_p=None, min_p=None, typical_p=None,
                repetition_penalty=None, no_repeat_ngram_size=None, min_tokens_to_keep=1, pad=None):
    """Check the options and return the filters they ask for, in order, as functions (logits, input_ids) -> logits."""
    temperature = _check_number(temperature, "temperature", 0.0)
    keep = check_positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    steps = []
    if repetition_penalty is not None:
        penalty = _check_number(repetition_penalty, "repetition_penalty", 0.0, low_open=True)
        steps.append(lambda x, ids: _repetition_penalty(x, ids, penalty))
    if no_repeat_ngram_size is not None:
        n = check_positive_int(no_repeat_ngram_size, "no_repeat_ngram_size")
        steps.append(lambda x, ids: _no_repeat_ngram(x, ids, n, "no_repeat_ngram_size", pad))
    if temperature != 1.0:
        steps.append(lambda x, ids: _temperature(x, temperature))
    if top_k is not None:
        k = check_positive_int(top_k, "top_k")
        steps.append(lambda x, ids: _top_k(x, k, keep))
    if top_p is not None:
        p = check_fraction(top_p, "top_p", 0.0, 1.0, low_open=True)
        steps.append(lambda x, ids: _top_p(x, p, keep))
    if min_p is not None:
        mp = check_fraction(min_p, "min_p")
        steps.append(lambda x, ids: _min_p(x, mp, keep))
    if typical_p is not None:
        mass = check_fraction(typical_p, "typical_p", 0.0, 1.0, low_open=True)
        steps.append(lambda x, ids: _typical(x, mass, keep))
    return steps


def filter_logits(logits, input_ids=None, *, temperature=1.0, top_k=None, top_p=None, min_p=None,
                  typical_p=None, repetition_penalty=None, no_repeat_ngram_size=None, min_tokens_to_keep=1):
    """Apply the filters that are set, in the order of `transformers`, to logits `(batch, vocab)`:
    repetition penalty, no-repeat n-gram, temperature, top-k, top-p, min-p, typical.

    `input_ids` (batch, seq), the tokens so far, is needed only by the first two.
    """
    _check_logits(logits)
    steps = _processors(temperature, top_k, top_p, min_p, typical_p, repetition_penalty,
                        no_repeat_ngram_size, min_tokens_to_keep)
    if repetition_penalty is not None or no_repeat_ngram_size is not None:
        if input_ids is None:
            raise ValueError("input_ids must be given when repetition_penalty or no_repeat_ngram_size is set")
        _check_history(input_ids, logits)
        input_ids = input_ids.long()
    out = logits.clone()
    for step in steps:
        out = step(out, input_ids)
    return out


# ---------------------------------------------------------------------------------------------------
# search


def _block_size(model):
    return getattr(getattr(model, "config", None), "block_size", None)


class _NextTokenLogits:
    """Last-position logits `(batch, vocab)` of `model` for a growing sequence `(batch, seq)`.

    With a KV cache only the tokens the cache has not seen are fed; otherwise the context is recomputed.
    """

    def __init__(self, model, use_cache: bool, pad=None):
        self.model = model
        self.pad = pad  # (batch,) left padding of each row, or None
        self.block_size = _block_size(model)
        self.use_cache = use_cache and hasattr(model, "new_cache") and self.block_size is not None
        self.cache = None
        self.fed = 0  # length of the sequence the cache has seen

    def __call__(self, seq):
        if not self.use_cache:
            context = seq if self.block_size is None else seq[:, -self.block_size :]
            return self._forward(context, self._mask(seq, context))
        if self.cache is None:
            self.cache = self.model.new_cache(seq.shape[0])
            feed = seq[:, -self.block_size :]
        elif self.cache.length + seq.shape[1] - self.fed > self.block_size:
            self.cache.crop(0)  # full: restart from the most recent half block
            feed = seq[:, -((self.block_size + 1) // 2) :]
        else:
            feed, self.fed = seq[:, self.fed :], seq.shape[1]
            return self._forward(feed, None, cache=self.cache)  # the cache remembers the padding
        self.fed = seq.shape[1]
        return self._forward(feed, self._mask(seq, feed), cache=self.cache)

    def _mask(self, seq, feed):
        """The attention mask of `feed`, the last columns of `seq`, or None when unpadded."""
        if self.pad is None:
            return None
        columns = torch.arange(seq.shape[1] - feed.shape[1], seq.shape[1], device=seq.device)
        return (columns[None, :] >= self.pad[:, None]).long()

    def _forward(self, ids, attention_mask, **kwargs):
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        logits = self.model(ids, **kwargs)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != ids.shape:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"model must return logits of shape (batch, seq, vocab) = "
                             f"({ids.shape[0]}, {ids.shape[1]}, vocab), got {got}")
        logits = logits[:, -1]
        _check_rows(logits, "model")  # NaN would otherwise come out as token 0, forever
        return logits

    def reorder(self, index):
        """Keep rows `index` (new_batch,) of the cache, in that order (beam search)."""
        if self.cache is not None:
            self.cache.reorder(index)
        if self.pad is not None:
            self.pad = self.pad[index]


@contextlib.contextmanager
def _generating(model):
    """Inference mode (no autograd bookkeeping), and dropout off; the model's train/eval mode is restored after.

    Tensors made inside are inference tensors: whatever is returned is copied into ordinary ones first,
    so that a learner can still train on generated ids.
    """
    training = getattr(model, "training", False)
    if training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if training:
            model.train()


def _check_prompt(input_ids):
    check_ids(input_ids, "input_ids")
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids must hold at least one prompt, got batch size 0")
    return input_ids.long()


def _padding(model, input_ids, attention_mask):
    """Each row's left padding (batch,) from `attention_mask` (checked), or None when no row is padded."""
    pad = left_padding(attention_mask, input_ids)
    if pad is not None:
        forward = getattr(model, "forward", model)
        params = inspect.signature(forward).parameters if callable(forward) else {}
        if "attention_mask" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise ValueError(f"attention_mask pads some prompts, but model ({type(model).__name__}) takes no "
                             "attention_mask; generate its prompts one at a time")
    return pad


def _unpadded_history(input_ids, pad):
    """input_ids with each row's padding replaced by its first token: a repetition penalty, which looks at
    the set of tokens seen, then sees what the prompt alone would show."""
    if pad is None:
        return input_ids
    first = input_ids.gather(1, pad[:, None])
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    return torch.where(columns[None, :] < pad[:, None], first, input_ids)


def _check_eos(eos_token_id):
    # an id is stored in int64 tensors: a larger one would overflow deep inside torch
    if eos_token_id is not None and (check_nonnegative_int(eos_token_id, "eos_token_id") >= 2**63):
        raise ValueError(f"eos_token_id must be a token id below 2**63, got {eos_token_id}")


def _check_new_tokens(max_new_tokens, rows: int, prompt_len: int):
    """Refuse a length that no one means before the (rows, prompt_len + max_new_tokens) ids are allocated."""
    n = max_new_tokens
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be an integer in [0, {MAX_NEW_TOKENS:,}], got {n!r}")
    if rows * (prompt_len + n) > MAX_ELEMENTS:
        raise ValueError(f"max_new_tokens={n:,} makes {rows:,} rows of {prompt_len + n:,} ids, more than the "
                         f"{MAX_ELEMENTS:,} ids a search may hold; generate fewer tokens or rows at a time")


def _argmax(logits, seq):
    return logits.argmax(-1)


def _steps(model, seq, prompt_len, pick, eos_token_id, use_cache, pad=None) -> Iterator[torch.Tensor]:
    """Fill `seq[:, prompt_len:]` one column per step and yield each new column (batch,)."""
    logits_of = _NextTokenLogits(model, use_cache, pad)
    finished = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    for t in range(prompt_len, seq.shape[1]):
        with _generating(model):  # per step: the caller runs between two yields with its own modes
            tokens = pick(logits_of(seq[:, :t]), seq[:, :t])
            if eos_token_id is not None:
                tokens = tokens.masked_fill(finished, eos_token_id)
                finished |= tokens == eos_token_id
        seq[:, t] = tokens
        yield seq[:, t]  # a view of the ordinary tensor `seq`, not the inference tensor `tokens`
        if eos_token_id is not None and finished.all():
            return


def _run(model, input_ids, max_new_tokens, pick, eos_token_id, streamer, use_cache, pad=None):
    batch, prompt_len = input_ids.shape
    seq = input_ids.new_empty(batch, prompt_len + max_new_tokens)
    seq[:, :prompt_len] = _unpadded_history(input_ids, pad)
    length = prompt_len
    for tokens in _steps(model, seq, prompt_len, pick, eos_token_id, use_cache, pad):
        length += 1
        if streamer is not None:
            streamer(tokens)
    seq[:, :prompt_len] = input_ids  # the caller's padding ids back
    return seq[:, :length]


def greedy(model, input_ids, max_new_tokens, eos_token_id=None, streamer=None, use_cache=True,
           attention_mask=None):
    """Append the most probable next token, `max_new_tokens` times: (batch, seq) -> (batch, seq + new).

    `streamer(tokens)` is called with the new tokens (batch,) after every step. attention_mask (batch, seq):
    1 = token, 0 = left padding, for prompts of unequal lengths; each row then continues as if alone.
    """
    input_ids = _check_prompt(input_ids)
    _check_new_tokens(max_new_tokens, *input_ids.shape)
    _check_eos(eos_token_id)
    pad = _padding(model, input_ids, attention_mask)
    return _run(model, input_ids, max_new_tokens, _argmax, eos_token_id, streamer, use_cache, pad)


def _generators(generator, seed, batch, device):
    """None (torch's global RNG), one torch.Generator for the batch, or a list with one per row."""
    if generator is not None and seed is not None:
        raise ValueError("seed and generator are alternatives: give at most one of them")
    if seed is not None:
        seeds = seed if isinstance(seed, (list, tuple)) else None
        for s in seeds if seeds is not None else [seed]:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**64:
                raise ValueError(f"seed must be an integer in [0, 2**64) or a list of them, got {s!r}")
        make = lambda s: torch.Generator(device=device).manual_seed(s)  # noqa: E731
        generator = [make(s) for s in seeds] if seeds is not None else make(seed)
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"generator must be a torch.Generator or a list of them, got {generator!r}")
    if isinstance(generator, (list, tuple)) and len(generator) != batch:
        name = "seed" if seed is not None else "generator"
        raise ValueError(f"{name} must hold one entry per prompt ({batch}) when it is a list, got {len(generator)}")
    return generator


def _sampler(batch, device, temperature=1.0, top_k=None, top_p=None, min_p=None, typical_p=None,
             repetition_penalty=None, no_repeat_ngram_size=None, generator=None, seed=None, pad=None):
    """Check sample's options and return its `pick(logits, seq) -> next tokens (batch,)`; `pad` (batch,): each
    row's left padding, or None."""
    steps = _processors(temperature, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size,
                        pad=pad)
    generator = _generators(generator, seed, batch, device)

    def pick(logits, seq):
        # the model's rows were checked (no NaN, +inf or empty row), and no filter empties a row
        # without raising: softmax gives a distribution
        for step in steps:
            logits = step(logits, seq)
        if temperature == 0:
            return logits.argmax(-1)
        return _draw(logits.softmax(-1), generator)

    return pick


def _draw(probs, generator):
    """One token per row of `probs` (batch, vocab): argmax of p_i / E_i with E_i ~ Exponential(1).

    The smallest E_i / p_i of independent exponentials falls on token i with probability p_i, so this is
    sampling from `probs`, in a few cheap ops (torch.multinomial validates its input at every call).
    """
    noise = torch.empty_like(probs)
    if isinstance(generator, (list, tuple)):  # one generator per row: a row's draws ignore the others
        for row, g in zip(noise, generator):
            row.exponential_(generator=g)
    else:
        noise.exponential_(generator=generator)
    # an exact 0 draw would make 0 / 0 = NaN, which argmax would pick: keep E_i > 0
    return probs.div_(noise.clamp_min_(torch.finfo(noise.dtype).tiny)).argmax(-1)


def sample(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, min_p=None,
           typical_p=None, repetition_penalty=None, no_repeat_ngram_size=None, generator=None, seed=None,
           eos_token_id=None, streamer=None, use_cache=True, attention_mask=None):
    """Draw each next token from the filtered distribution: (batch, seq) -> (batch, seq + new).

    Filters apply in `filter_logits`'s order; temperature 0 is greedy. Reproducible with `seed` (an int)
    or `generator` (a torch.Generator): the same seed and the same batch give the same tokens. The rows of
    a batch draw from that one generator in turn, so a prompt sampled in a batch differs from the same
    prompt sampled alone; give a list of seeds or generators, one per row, to make each row independent
    of the others (row i then equals sampling prompt i alone with seed[i]). Without either, torch's
    global generator is used (`torch.manual_seed`). attention_mask (batch, seq): 1 = token, 0 = left
    padding, as for `greedy`.
    """
    input_ids = _check_prompt(input_ids)
    _check_new_tokens(max_new_tokens, *input_ids.shape)
    _check_eos(eos_token_id)
    pad = _padding(model, input_ids, attention_mask)
    pick = _sampler(input_ids.shape[0], input_ids.device, temperature, top_k, top_p, min_p, typical_p,
                    repetition_penalty, no_repeat_ngram_size, generator, seed, pad)
    return _run(model, input_ids, max_new_tokens, pick, eos_token_id, streamer, use_cache, pad)


class BeamSearchOutput(NamedTuple):
    """Finished hypotheses, best first for each prompt (rows `i * num_return_sequences + j`)."""

    sequences: torch.Tensor  # (batch * num_return_sequences, seq): prompt + continuation, eos-padded at the end
    scores: torch.Tensor  # (batch * num_return_sequences,): sum of token log-probs / new_tokens ** length_penalty


class _Hypotheses:
    """The best `num_beams` finished sequences of one prompt, with their length-penalised scores."""

    def __init__(self, num_beams, length_penalty):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.items: list[tuple[float, torch.Tensor]] = []

    def add(self, sum_log_probs, new_tokens, sequence):
        score = sum_log_probs / new_tokens**self.length_penalty
        if len(self.items) < self.num_beams or score > self.items[-1][0]:
            self.items.append((score, sequence))
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.num_beams :]

    def done(self, best_running, new_tokens, max_new_tokens, early_stopping):
        """Can no running beam still beat the worst kept hypothesis? (transformers' stopping rule)"""
        if len(self.items) < self.num_beams:
            return False
        if early_stopping is True:
            return True
        # the best a running beam can reach: its score now, or at full length if the penalty favours length
        longest = max_new_tokens if early_stopping == "never" and self.length_penalty > 0 else new_tokens
        return self.items[-1][0] >= best_running / longest**self.length_penalty


def _beam_step(scores, log_probs, k):
    batch, num_beams = scores.shape
    vocab = log_probs.shape[-1]
    candidates = (scores.reshape(-1, 1) + log_probs).view(batch, num_beams * vocab)  # every beam x every token
    top = candidates.topk(k, dim=-1)  # per prompt: its own beams compete, never another prompt's
    beam, tokens = top.indices // vocab, top.indices % vocab
    parent_rows = beam + num_beams * torch.arange(batch, device=scores.device)[:, None]
    return top.values, parent_rows, tokens


def beam_step(scores, log_probs, k):
    """One step of beam search: the `k` best one-token extensions of each prompt's beams.

    scores (batch, num_beams): the total log-probability of each beam (-inf: a beam that is not alive);
    log_probs (batch * num_beams, vocab): each beam's next-token log-probabilities, prompt after prompt.
    Returns (scores, parent_rows, tokens), each (batch, k), best first: candidate j of prompt b extends row
    parent_rows[b, j] of `log_probs` (a row of the whole batch) by token tokens[b, j], and scores
    scores[b, j]. `beam_search` takes k = 2 * num_beams, so that beams ending in eos leave enough to go on.
    """
    for value, name, dim in ((scores, "scores", "(batch, num_beams)"), (log_probs, "log_probs", "(batch * num_beams, vocab)")):
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or not value.is_floating_point() or 0 in value.shape:
            got = (f"shape {tuple(value.shape)} and dtype {value.dtype}" if isinstance(value, torch.Tensor)
                   else type(value).__name__)
            raise ValueError(f"{name} must be a non-empty float tensor of shape {dim}, got {got}")
        if value.isnan().any():
            raise ValueError(f"{name} must not hold NaN, got {int(value.isnan().sum())} NaN values")
    if log_probs.shape[0] != scores.numel():
        raise ValueError(f"log_probs must have one row per beam, batch * num_beams = {scores.numel()}, "
                         f"got {log_probs.shape[0]}")
    check_positive_int(k, "k")
    if k > scores.shape[1] * log_probs.shape[1]:
        raise ValueError(f"k must be at most num_beams * vocab = {scores.shape[1] * log_probs.shape[1]}, got {k}")
    return _beam_step(scores, log_probs, k)


def _check_beam_args(input_ids, num_beams, max_new_tokens, length_penalty, eos_token_id, early_stopping,
                     num_return_sequences):
    batch, prompt_len = input_ids.shape
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or not 1 <= num_beams <= MAX_BEAMS:
        raise ValueError(f"num_beams must be an integer in [1, {MAX_BEAMS:,}] (each step ranks 2 x num_beams "
                         f"candidates per prompt), got {num_beams!r}")
    _check_new_tokens(max_new_tokens, batch * num_beams, prompt_len)
    # new_tokens ** length_penalty must stay a float: |length_penalty| <= 10 keeps it finite and nonzero
    # up to MAX_NEW_TOKENS (1e6 ** 10 = 1e60)
    lp = length_penalty
    if isinstance(lp, bool) or not isinstance(lp, (int, float)) or not -10 <= lp <= 10:
        raise ValueError(f"length_penalty must be a number in [-10, 10] (usual values are 0.6 to 2), got {lp!r}")
    _check_eos(eos_token_id)
    if not (isinstance(early_stopping, bool) or (isinstance(early_stopping, str) and early_stopping == "never")):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    check_positive_int(num_return_sequences, "num_return_sequences")
    if num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences must be <= num_beams ({num_beams}), got {num_return_sequences}")


def beam_search(model, input_ids, num_beams, max_new_tokens, length_penalty=1.0, eos_token_id=None,
                early_stopping=True, num_return_sequences=1, use_cache=True, attention_mask=None,
                repetition_penalty=None, no_repeat_ngram_size=None) -> BeamSearchOutput:
    """Keep the `num_beams` most probable continuations of each prompt `(batch, seq)`, as in `transformers`.

    Every step advances all `batch * num_beams` beams in one batched forward (the cache rows follow their
    beams with `cache.reorder`). Of the `2 * num_beams` best candidates, those ending in eos within the top
    `num_beams` become finished hypotheses, the others continue; after `max_new_tokens` the top
    `num_beams` candidates are finished too. A hypothesis scores `sum log p / new_tokens ** length_penalty`
    (new_tokens counts its eos): `length_penalty > 0` favours long sequences, `< 0` short ones.
    `early_stopping`: True stops a prompt as soon as it has `num_beams` hypotheses; False once no running
    beam can beat them at its current length; "never" at the best length it could still reach. (The
    default, True, is the cheaper rule; transformers' `generate` defaults to False.)
    attention_mask (batch, seq): 1 = token, 0 = left padding, as for `greedy`; sequences keep the padding.
    `repetition_penalty` and `no_repeat_ngram_size` act on each beam's log-probabilities before they are
    added to its score, as in transformers (so the penalty multiplies a log-probability, which is negative:
    the same rule as `repetition_penalty` on logits, on a different scale from sampling's).
    """
    input_ids = _check_prompt(input_ids)
    _check_beam_args(input_ids, num_beams, max_new_tokens, length_penalty, eos_token_id, early_stopping,
                     num_return_sequences)
    pad = _padding(model, input_ids, attention_mask)
    # the repetition options only, in filter_logits' order; a beam has no temperature or truncation
    steps = _processors(repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                        pad=None if pad is None else pad.repeat_interleave(num_beams))  # rows are beams
    batch, prompt_len = input_ids.shape
    if max_new_tokens == 0:
        return BeamSearchOutput(input_ids.repeat_interleave(num_return_sequences, 0),
                                torch.zeros(batch * num_return_sequences))
    with _generating(model):
        hyps = _beam_search(model, input_ids, num_beams, max_new_tokens, length_penalty, eos_token_id,
                            early_stopping, use_cache, pad, steps)
    return _beam_output(hyps, input_ids, num_return_sequences, eos_token_id)


def _beam_search(model, input_ids, num_beams, max_new_tokens, length_penalty, eos_token_id, early_stopping, use_cache,
                 pad=None, steps=()):
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    logits_of = _NextTokenLogits(model, use_cache, pad)
    logits = logits_of(input_ids)  # the prompt is fed once, then its cache row is copied to every beam
    vocab = logits.shape[-1]
    if batch * num_beams * vocab > MAX_ELEMENTS:
        raise ValueError(f"num_beams={num_beams:,} with {batch} prompt(s) and a vocabulary of {vocab:,} makes "
                         f"{batch * num_beams * vocab:,} candidates per step, more than {MAX_ELEMENTS:,}; "
                         "use fewer beams")
    copies = torch.arange(batch, device=device).repeat_interleave(num_beams)
    logits_of.reorder(copies)
    logits = logits[copies]
    seq = input_ids.new_empty(batch * num_beams, prompt_len + max_new_tokens)
    seq[:, :prompt_len] = _unpadded_history(input_ids, pad)[copies]  # what a repetition penalty may see
    # only the first beam of each prompt is alive at first, so its continuations are not counted num_beams times
    beam_scores = torch.full((batch, num_beams), _NEG_INF, device=device)
    beam_scores[:, 0] = 0.0
    hyps = [_Hypotheses(num_beams, length_penalty) for _ in range(batch)]
    done = [False] * batch
    for step in range(max_new_tokens):
        t, last = prompt_len + step, step == max_new_tokens - 1
        log_probs = logits.float().log_softmax(-1)
        for step_fn in steps:
            log_probs = step_fn(log_probs, seq[:, :t])
        top = _beam_step(beam_scores, log_probs, min(2 * num_beams, num_beams * logits.shape[-1]))
        scores, rows, tokens = _next_beams(top, num_beams, seq[:, :t], step + 1, hyps, done, last, eos_token_id)
        if last:
            break
        beam_scores = torch.tensor(scores, device=device).view(batch, num_beams)
        for b in range(batch):
            done[b] = done[b] or hyps[b].done(scores[b * num_beams], step + 1, max_new_tokens, early_stopping)
        if all(done) or beam_scores[:, 0].eq(_NEG_INF).all():
            break
        index = torch.tensor(rows, device=device)
        seq = seq[index]
        seq[:, t] = torch.tensor(tokens, device=device)
        logits_of.reorder(index)
        logits = logits_of(seq[:, : t + 1])
    return hyps


def _next_beams(top, num_beams, seq, new_tokens, hyps, done, last, eos_token_id):
    """Sort one step's best candidates (`_beam_step`'s scores, parent rows, tokens) into finished hypotheses
    and the next beams; return the beams' scores, source rows and tokens as flat lists."""
    scores, rows, tokens = [], [], []
    for b, (cand_scores, cand_rows, cand_tokens) in enumerate(zip(*(t.tolist() for t in top))):
        kept = 0
        for rank, (score, row, token) in enumerate(zip(cand_scores, cand_rows, cand_tokens)):
            if score == _NEG_INF or kept == num_beams:
                break
            if token == eos_token_id or last:
                if rank < num_beams and not done[b]:
                    hyps[b].add(score, new_tokens, torch.cat([seq[row], seq.new_tensor([token])]))
                continue
            scores.append(score), rows.append(row), tokens.append(token)
            kept += 1
        for _ in range(kept, num_beams):  # fewer live candidates than beams (tiny vocabularies): dead beams
            scores.append(_NEG_INF), rows.append(b * num_beams), tokens.append(0)
    return scores, rows, tokens


def _beam_output(hyps, input_ids, num_return_sequences, eos_token_id):
    sequences, scores = [], []
    for b, h in enumerate(hyps):
        if len(h.items) < num_return_sequences:
            raise ValueError(f"num_return_sequences={num_return_sequences} exceeds the {len(h.items)} distinct "
                             f"continuations of prompt {b}")
        for score, seq in h.items[:num_return_sequences]:
            sequences.append(seq), scores.append(score)
    width = max(len(s) for s in sequences)
    out = input_ids.new_full((len(sequences), width), eos_token_id if eos_token_id is not None else 0)
    for i, s in enumerate(sequences):  # only sequences that ended with eos are shorter
        out[i, : len(s)] = s
    out[:, : input_ids.shape[1]] = input_ids.repeat_interleave(num_return_sequences, 0)  # the caller's padding ids
    return BeamSearchOutput(out, torch.tensor(scores))


# ---------------------------------------------------------------------------------------------------
# text in, text out


_STRATEGIES = ("greedy", "sample", "beam")


def _device(model):
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def _encode(tokenizer, prompt, device):
    """A prompt (str) or a list of them -> input_ids (batch, seq), left-padded, and attention_mask (batch, seq).

    Padding uses the tokenizer's `pad_token_id` if it has one, else 0: padded positions are masked, so
    the id does not matter.
    """
    prompts = prompt if isinstance(prompt, (list, tuple)) else [prompt]
    if not prompts:
        raise ValueError("prompt must be a non-empty string or a non-empty list of them, got an empty list")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt must be a string or a list of strings, got a {type(p).__name__} at item {i} "
                             "(pass token ids to greedy/sample/beam_search instead)")
        if not p:
            raise ValueError(f"prompt must not hold an empty string (item {i}); every prompt needs some text")
    ids = [tokenizer.encode(p) for p in prompts]
    if not all(ids):
        raise ValueError(f"prompt must encode to at least one token, got none for {prompts[ids.index([])]!r}")
    width = max(len(i) for i in ids)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = pad_id if isinstance(pad_id, int) and not isinstance(pad_id, bool) and pad_id >= 0 else 0
    input_ids = torch.tensor([[pad_id] * (width - len(i)) + i for i in ids], dtype=torch.long, device=device)
    attention_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
    return input_ids, attention_mask


def _decode_new(tokenizer, ids, eos_token_id):
    """Text of the generated ids (a list), cut before the first eos.

    A byte-level tokenizer can stop in the middle of a multi-byte character, which decodes to U+FFFD:
    such an unfinished character at the very end is dropped (as `stream` never shows it either).
    """
    if eos_token_id is not None and eos_token_id in ids:
        ids = ids[: ids.index(eos_token_id)]
    return tokenizer.decode(ids).rstrip("\ufffd")


def _check_options(options, fn, strategy, given=()):
    """Refuse an option that `fn` does not take (which would be a TypeError deep inside) in one sentence."""
    allowed = [name for name in inspect.signature(fn).parameters if name not in given]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"options {unknown} do not apply to strategy {strategy!r}, which takes {allowed}")


def generate(model, tokenizer, prompt, strategy="greedy", max_new_tokens=100, **options):
    """Continue the text `prompt` and return the continuation (without the prompt) as a str.

    `strategy` is "greedy", "sample" or "beam"; `options` go to `greedy`, `sample` or `beam_search`
    (e.g. temperature=0.8, top_k=50, seed=0; num_beams=4, the best beam is returned). The text stops
    before `eos_token_id`. A list of prompts gives a list of str: they are padded on the left to a
    batch and generated together, each continuation as that prompt's alone (sampling: with one seed
    per prompt, seed=[...]).
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    search = {"greedy": greedy, "sample": sample, "beam": beam_search}[strategy]
    _check_options(options, search, strategy, given=("model", "input_ids", "max_new_tokens", "attention_mask"))
    input_ids, attention_mask = _encode(tokenizer, prompt, _device(model))
    if not attention_mask.all():
        options["attention_mask"] = attention_mask
    if strategy == "beam":
        options.setdefault("num_beams", 4)
        out = beam_search(model, input_ids, max_new_tokens=max_new_tokens, **options).sequences
        out = out[:: options.get("num_return_sequences", 1)]  # the best hypothesis of each prompt
    else:
        out = (greedy if strategy == "greedy" else sample)(model, input_ids, max_new_tokens, **options)
    texts = [_decode_new(tokenizer, row, options.get("eos_token_id")) for row in out[:, input_ids.shape[1] :].tolist()]
    return texts if isinstance(prompt, (list, tuple)) else texts[0]


def stream(model, tokenizer, prompt, strategy="greedy", max_new_tokens=100, eos_token_id=None,
           use_cache=True, **options) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece as it is generated ("greedy" or "sample").

    `options` are `sample`'s (temperature, top_k, ..., seed). `"".join(stream(...))` equals `generate(...)`
    with the same arguments. Text that is not complete yet (part of a multi-byte character) is held back.

        for piece in stream(model, tok, "ROMEO:", "sample", seed=0):
            print(piece, end="")  # in a notebook, no flush=True: Jupyter flushes often enough, and each
                                  # flush would be stored as an output of its own
    """
    if strategy not in ("greedy", "sample"):
        raise ValueError(f"strategy must be 'greedy' or 'sample' for streaming (beams change until the end), "
                         f"got {strategy!r}")
    if strategy == "greedy" and options:
        raise ValueError(f"options must be empty for greedy streaming, got {sorted(options)}")
    _check_options(options, _sampler, strategy, given=("batch", "device", "pad"))
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be one string for streaming, got {type(prompt).__name__}")
    input_ids, _ = _encode(tokenizer, prompt, _device(model))  # one prompt: no padding
    _check_new_tokens(max_new_tokens, *input_ids.shape)
    _check_eos(eos_token_id)
    pick = _argmax if strategy == "greedy" else _sampler(1, input_ids.device, **options)
    seq = input_ids.new_empty(1, input_ids.shape[1] + max_new_tokens)
    seq[:, : input_ids.shape[1]] = input_ids
    steps = _steps(model, seq, input_ids.shape[1], pick, eos_token_id, use_cache)
    return _stream_text(tokenizer, steps, eos_token_id)


def _stream_text(tokenizer, steps, eos_token_id):
    """Decode incrementally: each step decodes only a short window of ids, `ids[start:]`, where
    `ids[start:done]` was decoded and yielded already; the window's text minus that text is the new piece.

    The window starts with an id already shown, so that a tokenizer whose text for a token depends on
    the one before it (WordPiece's `##`, a leading space stripped at the start) decodes it as in the
    whole text. A window whose text ends in U+FFFD may end inside a multi-byte character (byte-level
    BPE): it is held back until the character completes; one still unfinished at the end is dropped.
    """
    ids, start, done = [], 0, 0
    for tokens in steps:
        token = tokens[0].item()
        if token == eos_token_id:
            break
        ids.append(token)
        shown = tokenizer.decode(ids[start:done]) if done > start else ""
        text = tokenizer.decode(ids[start:])
        if len(text) > len(shown) and not text.endswith("\ufffd"):
            yield text[len(shown) :]
            start, done = done, len(ids)
    shown = tokenizer.decode(ids[start:done]) if done > start else ""
    text = tokenizer.decode(ids[start:]).rstrip("\ufffd")
    if len(text) > len(shown):
        yield text[len(shown) :]
