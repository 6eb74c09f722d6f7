"""The chain rule: a language model gives P(w_1 .. w_n) as a product of next-token conditionals.

    log P(w_1 .. w_n | w_0) = sum_t log P(w_t | w_0 .. w_{t-1})

Every function here works with any causal model, i.e. any callable mapping input_ids (batch, seq) to
logits (batch, seq, vocab) where logits[:, t] scores the token at t + 1: a `GPT`, or the count-based
`NGramModel` below. The first token of a sequence is never scored: it is the condition (use a BOS or
separator token there if you want the probability of the whole text).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F

from lmlab._checks import check_ids, check_positive_int
from lmlab.models import left_padding


def _context_size(model) -> int | None:
    """The longest input the model accepts, or None when it has no limit."""
    return getattr(getattr(model, "config", None), "block_size", None)


def _next_token_logprobs(model, input_ids, attention_mask=None):
    """log P(input_ids[:, t] | input_ids[:, :t]) for t = 1 .. seq-1 from one forward pass: (batch, seq-1)."""
    logits = model(input_ids) if attention_mask is None else model(input_ids, attention_mask=attention_mask)
    B, T = input_ids.shape
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != (B, T):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must map input_ids {(B, T)} to logits (batch, seq, vocab) of shape ({B}, {T}, vocab), got {got}")
    if int(input_ids.max()) >= logits.shape[-1]:
        raise ValueError(f"input_ids contains id {int(input_ids.max())}, outside the model's vocabulary [0, {logits.shape[-1]})")
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # in fp32: log-probs of tiny numbers need the range
    scores = logp.gather(-1, input_ids[:, 1:].long().unsqueeze(-1)).squeeze(-1)
    if attention_mask is not None:  # no conditional for padding nor for a row's first token: 0
        scored = attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()
        scores = scores.masked_fill(~scored, 0.0)
    # a row of logits with NaN or +inf, or all -inf, has no distribution: log_softmax gives NaN everywhere
    bad = scores.isnan()
    if bad.any():
        b, t = bad.nonzero()[0].tolist()
        raise ValueError(f"model returned logits with NaN or +inf, or only -inf, for row {b} at position {t}, "
                         "so the log-probabilities there are undefined; check its weights and inputs")
    return scores


def token_logprobs(model, input_ids, stride: int | None = None, attention_mask=None):
    """Per-token conditional log-probabilities log P(w_t | w_0 .. w_{t-1}) for t >= 1.

    input_ids (batch, seq) with seq >= 2 -> (batch, seq - 1), in nats. Runs without gradients, with
    an `nn.Module` put in eval mode for the call (dropout would make the numbers random).

    A sequence longer than the model's context (`model.config.block_size`) is refused unless `stride`
    is given: then a window of block_size tokens slides `stride` tokens at a time and each token is
    scored once, conditioned on the (at least block_size - stride) tokens before it that fit in its
    window. Those are approximations of the true conditionals, which would need the whole past.

    attention_mask (batch, seq), 1 = token, 0 = padding on the left, scores a batch of texts of unequal
    lengths (the model must take `attention_mask=`, as GPT and Llama do): each row's scores are those of
    its text alone, and 0 where there is no conditional (padding, and each row's first token).
    """
    check_ids(input_ids)
    if attention_mask is not None:
        if left_padding(attention_mask, input_ids) is None:
            attention_mask = None  # nothing padded: the plain call
        elif stride is not None:
            raise ValueError("stride cannot be combined with a padded attention_mask; score long texts one at a time")
        else:
            attention_mask = attention_mask.to(input_ids.device).long()
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must hold at least 2 tokens per row (the first one is only conditioned on), got {input_ids.shape[1]}")
    if input_ids.min() < 0:
        raise ValueError(f"input_ids contains id {int(input_ids.min())}, but token ids must be >= 0")
    block = _context_size(model)
    seq = input_ids.shape[1]
    if stride is not None:
        if block is None:
            raise ValueError("stride only applies to a model with a context limit (model.config.block_size), got a model without one")
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride < block:
            raise ValueError(f"stride must be an integer in [1, {block - 1}] (below the model's block_size {block}), got {stride!r}")
    elif block is not None and seq > block:
        raise ValueError(f"input_ids has {seq} positions but the model's context holds {block}; pass stride=... to score it with a sliding window")

    was_training = isinstance(model, torch.nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            if stride is None or seq <= block:
                return _next_token_logprobs(model, input_ids, attention_mask)
            return _sliding_logprobs(model, input_ids, block, stride)
    finally:
        if was_training:
            model.train()


def _sliding_logprobs(model, input_ids, block: int, stride: int):
    parts = [_next_token_logprobs(model, input_ids[:, :block])]  # scores tokens 1 .. block-1
    scored, seq = block, input_ids.shape[1]  # tokens before `scored` are done
    while scored < seq:
        end = min(scored + stride, seq)
        # the window ends at `end`; keep only the scores of the tokens it adds, scored .. end-1
        parts.append(_next_token_logprobs(model, input_ids[:, end - block : end])[:, scored - end :])
        scored = end
    return torch.cat(parts, dim=1)


def sequence_logprob(model, input_ids, prompt_len: int = 1, stride: int | None = None):
    """log P(w_prompt_len .. w_n-1 | w_0 .. w_prompt_len-1): the chain rule's sum of token log-probs.

    input_ids (batch, seq) -> (batch,). With the default prompt_len=1 every token after the first is
    scored; a larger prompt_len scores only the continuation of a prompt. `stride` as in `token_logprobs`.
    """
    check_ids(input_ids)
    seq = input_ids.shape[1]
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or not 1 <= prompt_len < max(seq, 2):
        raise ValueError(f"prompt_len must be an integer in [1, {max(seq - 1, 1)}] for sequences of {seq} tokens, got {prompt_len!r}")
    return token_logprobs(model, input_ids, stride=stride)[:, prompt_len - 1 :].sum(dim=1)


def perplexity(model, input_ids, stride: int | None = None) -> float:
    """exp of the mean negative log-probability per scored token, pooled over every row of the batch.

    A model that spreads its probability evenly over V tokens has perplexity V: perplexity is the
    number of tokens the model is "choosing between" on average. Per-row values:
    `token_logprobs(model, ids).mean(1).neg().exp()`.
    """
    return math.exp(-token_logprobs(model, input_ids, stride=stride).mean().item())


class NGramModel:
    """A count-based n-gram language model with add-k smoothing:

        P(w | context) = (count(context, w) + k) / (count(context, *) + k * vocab_size)

    where the context is the n-1 tokens before w. Near the start of a sequence, where fewer tokens
    exist, the shorter context is used with the counts of the matching lower order (a bigram model
    of a trigram model predicts the second token). With k = 0 an unseen pair gets probability 0
    (log-probability -inf) and an unseen context a uniform distribution.

    Calling the model on input_ids (batch, seq) returns log-probabilities (batch, seq, vocab), which
    are valid logits, so it works with `token_logprobs`, `perplexity` and decoding like a transformer.
    """

    max_table_size = 20_000_000  # the counts are dense tensors of vocab_size ** n entries

    def __init__(self, vocab_size: int, n: int = 2, k: float = 1.0):
        check_positive_int(vocab_size, "vocab_size")
        check_positive_int(n, "n")
        if vocab_size**n > self.max_table_size:
            raise ValueError(f"n must keep vocab_size ** n <= {self.max_table_size:,}, got {vocab_size} ** {n} = {vocab_size**n:,}")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not k >= 0 or math.isinf(k):
            raise ValueError(f"k must be a finite number >= 0, got {k!r}")
        self.vocab_size, self.n, self.k = vocab_size, n, float(k)
        # tables[m - 1][a, b, ...] = how often the m tokens a, b, ... occur in a row, for m = 1 .. n
        self.tables = [torch.zeros((vocab_size,) * m, dtype=torch.long) for m in range(1, n + 1)]
        self._logprob_tables = None

    @property
    def counts(self) -> torch.Tensor:
        """n-gram counts, shape (vocab,) * n: counts[a, b] = how often b follows a (for n = 2)."""
        return self.tables[-1]

    def fit(self, ids) -> "NGramModel":
        """Count every m-gram (m = 1 .. n) in `ids` and return self; previous counts are discarded.

        ids: a LongTensor (batch, seq) or (seq,), a list of ints, or a list of such lists (one per
        text); n-grams never cross from one row or list into the next.
        """
        V = self.vocab_size
        self.tables = [torch.zeros((V,) * m, dtype=torch.long) for m in range(1, self.n + 1)]
        for row in self._rows(ids):
            for m, table in enumerate(self.tables, start=1):
                if len(row) < m:
                    break
                windows = row.unfold(0, m, 1)  # (len - m + 1, m): every run of m tokens
                flat = (windows * V ** torch.arange(m - 1, -1, -1)).sum(dim=1)
                table.view(-1).add_(torch.bincount(flat, minlength=V**m))
        self._logprob_tables = None
        return self

    def _rows(self, ids):
        if isinstance(ids, torch.Tensor):
            if ids.dim() == 1:
                ids = ids[None]
            check_ids(ids, name="ids", vocab_size=self.vocab_size)
            return list(ids.long())
        if not isinstance(ids, (list, tuple)) or not ids:
            raise ValueError(f"ids must be a LongTensor, a list of ints or a list of lists of ints, got {type(ids).__name__ if ids else ids!r}")
        rows = ids if isinstance(ids[0], (list, tuple, torch.Tensor)) else [ids]
        out = []
        for row in rows:
            try:
                t = torch.as_tensor(row, dtype=torch.long)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"ids must be a list of ints or a list of lists of ints, got an element {row!r:.60}") from None
            if t.dim() != 1 or (t.numel() and (t.min() < 0 or t.max() >= self.vocab_size)):
                raise ValueError(f"ids must hold token ids in [0, {self.vocab_size}) in flat lists, got {row!r:.60}")
            out.append(t)
        return out

    def _logprobs(self):
        """log P(w | context) for every order: a list of tensors shaped like `tables`."""
        if self._logprob_tables is None:
            self._logprob_tables = []
            for table in self.tables:
                counts = table.double() + self.k
                totals = counts.sum(dim=-1, keepdim=True)
                # unseen context with k = 0: nothing to go on, so every token is equally likely
                probs = torch.where(totals > 0, counts / totals.clamp(min=1e-300), 1.0 / self.vocab_size)
                self._logprob_tables.append(probs.log().float())
        return self._logprob_tables

    def prob(self, context, token: int) -> float:
        """P(token | context): context is a sequence of ids, of which the last n - 1 are used."""
        context = [operator.index(c) for c in (context.tolist() if isinstance(context, torch.Tensor) else context)]
        token = operator.index(token)
        for i in [*context, token]:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"context and token must be ids in [0, {self.vocab_size}), got {i}")
        used = context[len(context) - min(len(context), self.n - 1) :]
        row = self.tables[len(used)][tuple(used)]  # counts of every token after this context
        total = row.sum().item() + self.k * self.vocab_size
        return (row[token].item() + self.k) / total if total > 0 else 1.0 / self.vocab_size

    def __call__(self, input_ids):
        """input_ids (batch, seq) -> log P(next token | last n-1 tokens) as logits (batch, seq, vocab)."""
        check_ids(input_ids, vocab_size=self.vocab_size)
        ids = input_ids.long()
        B, T = ids.shape
        V, c = self.vocab_size, self.n - 1  # c: tokens of context
        tables = self._logprobs()
        out = torch.empty(B, T, V)
        # the first positions have fewer than c tokens before them: use the lower-order tables
        for t in range(min(c - 1, T)):
            out[:, t] = tables[t + 1].view(-1, V)[self._flat(ids[:, : t + 1])]
        if T >= c:
            contexts = ids.unfold(1, c, 1) if c else ids.new_zeros(B, T, 0)  # (batch, T - c + 1, c)
            out[:, max(c - 1, 0) :] = tables[c].view(-1, V)[self._flat(contexts)]
        return out

    def _flat(self, contexts):
        """Row index into a table viewed as (V ** len, V): (..., len) -> (...)."""
        m = contexts.shape[-1]
        return (contexts * self.vocab_size ** torch.arange(m - 1, -1, -1)).sum(dim=-1)
