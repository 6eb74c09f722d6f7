"""Lesson 05: the masking rule on average, the loss on the masked positions only, a masking routine that returns
its labels, and BERT's original selection of an exact number of positions per sequence."""

import torch

from lmlab.exercise_bank._properties import call, passed, require, run
from lmlab.exercises import function_exercise, register
from lmlab.objectives import mlm_loss


@function_exercise("05.expected_counts",
                   cases=[(1000, 0, 0.15, 0.8, 0.1), (1000, 100, 0.15, 0.8, 0.1), (66, 2, 0.15, 0.8, 0.1),
                          (500, 20, 0.3, 0.5, 0.25), (12, 12, 0.15, 0.8, 0.1)],
                   hints=("Two stages: first how many positions can be selected and how many of those are, then how "
                          "the selected ones split into the three kinds.",
                          "Special tokens are never selected; every other token is, with probability select_rate. "
                          "mask_rate and random_rate are shares of the SELECTED positions, and the kept share is "
                          "whatever those two leave.",
                          "selected = (n_tokens - n_special) * select_rate; return (selected * mask_rate, "
                          "selected * random_rate, selected * (1 - mask_rate - random_rate))."))
def _expected_counts(n_tokens, n_special, select_rate, mask_rate, random_rate):
    selected = (n_tokens - n_special) * select_rate
    return selected * mask_rate, selected * random_rate, selected * (1 - mask_rate - random_rate)


def _loss_cases():
    g = torch.Generator().manual_seed(0)

    def labels_like(ids, keep):
        return torch.where(keep, ids, torch.full_like(ids, -100))

    cases = []
    for batch, seq, vocab in [(1, 6, 5), (2, 8, 11), (4, 16, 30)]:
        logits = torch.randn(batch, seq, vocab, generator=g) * 2
        ids = torch.randint(vocab, (batch, seq), generator=g)
        keep = torch.rand(batch, seq, generator=g) < 0.3
        keep[:, 0] = True  # every row predicts something
        cases.append((logits, labels_like(ids, keep)))
    # rows with very different numbers of predictions: a mean of per-row means is not the mean over positions
    logits = torch.randn(2, 10, 7, generator=g) * 2
    ids = torch.randint(7, (2, 10), generator=g)
    keep = torch.tensor([[True] * 9 + [False], [True] + [False] * 9])
    cases.append((logits, labels_like(ids, keep)))
    return cases


@function_exercise("05.masked_loss", cases=_loss_cases, rtol=1e-4, atol=1e-6,
                   hints=("Only the positions whose label is not -100 are predictions; the others must not count at "
                          "all, neither in the sum nor in the number you divide by.",
                          "The mean is over all predicted positions of the batch together, not row by row (a row "
                          "with 9 predictions weighs 9 times a row with 1). F.cross_entropy wants logits (n, vocab) "
                          "and targets (n,), and it can skip a target value for you.",
                          "F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100), or pick the "
                          "rows with labels != -100 first: F.cross_entropy(logits[chosen], labels[chosen])."))
def _masked_loss(logits, labels):
    return float(mlm_loss(logits, labels))


# --- a masking routine that returns its labels (the seed's fixed) -----------------------------------------------

_VOCAB, _MASK, _SPECIAL = 30, 4, [0, 1, 2, 3]  # [PAD], [UNK], [CLS], [SEP]; 4 is [MASK]; 5..29 are ordinary


def _framed_batch(rows, seq, seed):
    """`rows` rows of ordinary tokens framed by [CLS] ... [SEP] and padded to `seq`, each row to its own length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, _VOCAB, (rows, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (rows,), generator=g)
    for row, length in enumerate(lengths.tolist()):
        ids[row, 0], ids[row, length - 1] = 2, 3
        ids[row, length:] = 0
    return ids


def _masking_cases():
    one_line = _framed_batch(1, 40, 1).expand(300, 40).clone()  # the same line 300 times: rows must still differ
    only_specials = torch.tensor([[2, 3, 0, 0, 0, 0], [2, 7, 9, 11, 3, 0]])
    return [(_framed_batch(400, 250, 0), "400 framed and padded rows of different lengths"),
            (one_line, "one line repeated in 300 rows"),
            (only_specials, "a row of special tokens and padding only, next to a short one")]


def _check_masking_result(out, ids, where):
    require(isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out),
            f"{where} returned {type(out).__name__}; return two tensors, (masked_ids, labels): without labels a "
            f"training step cannot tell which positions to score", "not (masked_ids, labels)")
    masked, labels = out
    require(masked.shape == ids.shape and labels.shape == ids.shape,
            f"{where}: masked_ids has shape {tuple(masked.shape)} and labels {tuple(labels.shape)}, expected "
            f"{tuple(ids.shape)} for both", "wrong shape")
    require(labels.dtype == torch.long, f"{where}: labels has dtype {labels.dtype}, expected torch.long (the targets "
            f"of F.cross_entropy)", "labels dtype")
    selected = labels != -100
    require(bool((labels[selected] == ids[selected]).all()),
            f"{where}: some labels are neither -100 nor the original token; a label holds the token that was at "
            f"that position before masking", "labels not the originals")
    require(bool((masked[~selected] == ids[~selected]).all()),
            f"{where}: some positions whose label is -100 were changed; only selected positions may be corrupted",
            "unselected position changed")
    special = torch.isin(ids, torch.tensor(_SPECIAL + [_MASK]))
    require(not bool(selected[special].any()),
            f"{where}: special tokens or padding were selected; they never are", "special selected")
    replaced = selected & (masked != ids) & (masked != _MASK)
    require(not bool(torch.isin(masked[replaced], torch.tensor(_SPECIAL + [_MASK])).any()),
            f"{where}: a random replacement is a special token; draw replacements from the ordinary tokens only",
            "special drawn")
    return masked, labels, selected, replaced


def _check_masking(fn):
    cases = _masking_cases()
    for k, (ids, description) in enumerate(cases, 1):
        where = f"case {k} of {len(cases)} ({description})"
        args = (ids, _MASK, _VOCAB, list(_SPECIAL), torch.Generator().manual_seed(k))
        masked, labels, selected, replaced = _check_masking_result(call(fn, args, where), ids, where)
        if k == 1:
            ordinary = ~torch.isin(ids, torch.tensor(_SPECIAL))
            share = selected.sum() / ordinary.sum()
            require(abs(share - 0.15) < 0.01, f"{where}: {share:.1%} of the ordinary tokens were selected; the rule "
                    f"selects each one with probability 15 %", "selection rate")
            n = selected.sum()
            shares = {"[MASK]": (selected & (masked == _MASK)).sum() / n, "random": replaced.sum() / n}
            require(abs(shares["[MASK]"] - 0.8) < 0.03, f"{where}: {shares['[MASK]']:.1%} of the selected positions "
                    f"became [MASK]; the rule says 80 %", "mask share")
            require(abs(shares["random"] - 0.1) < 0.03, f"{where}: {shares['random']:.1%} of the selected positions "
                    f"got a random token; the rule says 10 % (of the selected, not of the rest)", "random share")
            require(len(masked[replaced].unique()) > 15, f"{where}: the random replacements use only "
                    f"{len(masked[replaced].unique())} different tokens; draw them uniformly from the 25 ordinary "
                    f"tokens", "random not uniform")
        if k == 2:
            distinct = len({tuple(row) for row in selected.tolist()})
            require(distinct > 200, f"{where}: only {distinct} different selections among 300 rows; every position "
                    f"of every row needs its own random draw (shape (batch, seq), not (seq,))", "rows share a draw")
        again = call(fn, (ids, _MASK, _VOCAB, list(_SPECIAL), torch.Generator().manual_seed(k)), where)
        require(all(torch.equal(a, b) for a, b in zip(again, (masked, labels))),
                f"{where}: two calls with generators seeded alike gave different results; draw every random number "
                f"with generator=generator", "not reproducible")
    return passed(len(cases))


register("05.mask_tokens", run(_check_masking),
         hints=("Three random decisions per position: is it selected, and if so, what does the model see there? "
                "Then the labels: the original token where selected, -100 elsewhere. Change a copy, never the input.",
                "Draw a (batch, seq) tensor of uniform numbers for the selection and another for the kind; a "
                "selected position becomes [MASK] when its second number is < 0.8, a random ordinary token when it "
                "is in [0.8, 0.9), and stays otherwise. Never select special tokens or [MASK]; pass "
                "generator=generator to every draw.",
                "never = torch.tensor(special_ids + [mask_token_id]); selected = (torch.rand(ids.shape, "
                "generator=generator) < 0.15) & ~torch.isin(ids, never); kind = torch.rand(ids.shape, "
                "generator=generator); ordinary = [i for i in range(vocab_size) if i not in never.tolist()]; "
                "random_ids = torch.tensor(ordinary)[torch.randint(len(ordinary), ids.shape, generator=generator)]; "
                "masked = ids.clone(); masked[selected & (kind < 0.8)] = mask_token_id; r = selected & (kind >= 0.8) "
                "& (kind < 0.9); masked[r] = random_ids[r]; labels = torch.where(selected, ids, -100); "
                "return masked, labels."))


# --- BERT's original selection: an exact number of positions per sequence ----------------------------------------


def _bert_count(length):
    return max(1, round(0.15 * length))


def _selection_cases():
    # lengths 10, 30, 50, ... would make 0.15 * length end in .5, where roundings differ: none are used
    g = torch.Generator().manual_seed(5)
    varied = torch.randint(5, _VOCAB, (6, 48), generator=g)
    for row, length in enumerate([48, 41, 27, 16, 7, 3]):
        varied[row, 0], varied[row, length - 1] = 2, 3
        varied[row, length:] = 0
    line = torch.cat([torch.tensor([2]), torch.randint(5, _VOCAB, (38,), generator=g), torch.tensor([3])])
    same = line.expand(3000, 40).clone()  # [CLS] + 38 ordinary tokens + [SEP]: 6 of them are selected
    return [(varied, "6 rows padded to different lengths: 48, 41, 27, 16, 7 and 3 tokens"),
            (same, "one line of 40 tokens repeated in 3000 rows")]


def _check_selection(fn):
    cases = _selection_cases()
    for k, (ids, description) in enumerate(cases, 1):
        where = f"case {k} of {len(cases)} ({description})"
        out = call(fn, (ids, list(_SPECIAL), 0, torch.Generator().manual_seed(k)), where)
        require(isinstance(out, torch.Tensor) and out.shape == ids.shape and out.dtype == torch.bool,
                f"{where} returned {type(out).__name__}{'' if not isinstance(out, torch.Tensor) else f' of shape {tuple(out.shape)} and dtype {out.dtype}'}; "
                f"return a bool tensor of the shape of ids, True at the selected positions", "not a bool mask")
        require(not bool(out[torch.isin(ids, torch.tensor(_SPECIAL))].any()),
                f"{where}: a special token or padding was selected; candidates are the ordinary tokens only",
                "special selected")
        lengths = (ids != 0).sum(1)
        for row, (length, count) in enumerate(zip(lengths.tolist(), out.sum(1).tolist())):
            require(count == _bert_count(length),
                    f"{where}: row {row} ({length} tokens, [CLS] and [SEP] included, padding not) has {count} positions "
                    f"selected; BERT selects max(1, round(0.15 * {length})) = {_bert_count(length)}",
                    "wrong count per row")
        if k == 2:
            distinct = len({tuple(row) for row in out.tolist()})
            require(distinct > 2000, f"{where}: only {distinct} different selections among 3000 rows; each row needs "
                    f"its own random choice", "rows share a draw")
            share = out[:, 1:39].float().mean(0)  # how often each ordinary position was chosen: 6/38 each
            require(float(share.max() / share.min()) < 1.5,
                    f"{where}: some positions are chosen far more often than others ({float(share.min()):.0%} to "
                    f"{float(share.max()):.0%}); every candidate must be equally likely", "not uniform")
        again = call(fn, (ids, list(_SPECIAL), 0, torch.Generator().manual_seed(k)), where)
        require(isinstance(again, torch.Tensor) and torch.equal(again, out),
                f"{where}: two calls with generators seeded alike gave different selections; draw with "
                f"generator=generator", "not reproducible")
    return passed(len(cases))


register("05.bert_selection", run(_check_selection),
         hints=("Per row: how many positions (from that row's own length), then which ones (a uniformly random "
                "choice among its ordinary tokens, without repeats).",
                "The count of a row is max(1, round(0.15 * length)), length = its tokens that are not padding. A "
                "random order per row gives a choice without repeats: give every candidate a random number, every "
                "special position a number that sorts last, and take each row's first `count` in sorted order.",
                "scores = torch.rand(ids.shape, generator=generator).masked_fill(torch.isin(ids, "
                "torch.tensor(special_ids)), 2.0); rank = scores.argsort(-1).argsort(-1) (the place of each position "
                "in its row's random order); counts = [max(1, round(0.15 * n)) for n in (ids != pad_id).sum(1).tolist()]; "
                "return rank < torch.tensor(counts)[:, None]."))


def _reference_selection(ids, special_ids, pad_id, generator):
    """BERT's original choice: exactly max(1, round(15 % of the length)) ordinary positions per row."""
    scores = torch.rand(ids.shape, generator=generator).masked_fill(torch.isin(ids, torch.tensor(special_ids)), 2.0)
    rank = scores.argsort(-1).argsort(-1)
    counts = torch.tensor([_bert_count(n) for n in (ids != pad_id).sum(1).tolist()])
    return rank < counts[:, None]


def _reference_masking(ids, mask_token_id, vocab_size, special_ids, generator):
    from lmlab.objectives import mask_tokens

    return mask_tokens(ids, mask_token_id=mask_token_id, vocab_size=vocab_size, special_token_ids=special_ids,
                       generator=generator)

