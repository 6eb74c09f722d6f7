"""Lesson 09's exercises pass with their solutions and fail with the mistakes learners make."""

import torch

from lmlab.exercises import check
from lmlab.probability import token_logprobs


def test_distinct_n_passes_with_the_reference():
    def distinct_n(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    assert check("09.distinct_n", distinct_n)


def test_distinct_n_fails_for_the_usual_mistakes():
    def unigrams_always(tokens, n):
        return len(set(tokens)) / len(tokens) if len(tokens) else 0.0

    def over_all_tokens(tokens, n):  # divides by the number of tokens, not of n-grams
        grams = {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
        return len(grams) / len(tokens) if len(tokens) else 0.0

    def crashes_when_short(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(set(grams)) / len(grams)

    def repetition_instead(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return 1 - len(set(grams)) / len(grams) if grams else 0.0

    for fn in (unigrams_always, over_all_tokens, repetition_instead):
        assert not check("09.distinct_n", fn), fn.__name__
    result = check("09.distinct_n", crashes_when_short)
    assert not result and "ZeroDivisionError" in repr(result)


def test_continuation_logprob_passes_with_the_reference_and_by_hand():
    assert check("09.continuation_logprob", lambda m, ids, k: token_logprobs(m, ids)[:, k - 1 :].mean(dim=1))

    def by_hand(model, ids, prompt_len):
        with torch.no_grad():
            logp = model(ids).log_softmax(-1)  # (batch, seq, vocab): position t predicts t + 1
        scores = logp[:, prompt_len - 1 : -1].gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
        return scores.mean(1)

    assert check("09.continuation_logprob", by_hand)


def test_continuation_logprob_fails_for_the_usual_mistakes():
    wrong = {
        "off by one": lambda m, ids, k: token_logprobs(m, ids)[:, k:].mean(1),
        "the prompt included": lambda m, ids, k: token_logprobs(m, ids).mean(1),
        "a sum": lambda m, ids, k: token_logprobs(m, ids)[:, k - 1 :].sum(1),
        "pooled over the batch": lambda m, ids, k: token_logprobs(m, ids)[:, k - 1 :].mean(),
    }
    for name, fn in wrong.items():
        assert not check("09.continuation_logprob", fn), name


def test_stubs_fail_cleanly_with_a_nudge_that_gives_no_code():
    from lmlab import exercises

    def stub(*args):
        raise NotImplementedError("your code here")

    for name in ("09.distinct_n", "09.continuation_logprob", "09.trade_off_front"):
        exercises._SHOWN.pop(name, None)
        message = repr(check(name, stub))
        assert "NotImplementedError" in message and "hint 1 of 3" in message, name
        assert "return " not in message, name


# --- 09.trade_off_front ----------------------------------------------------------------------------------------


def trade_off_front(points):
    def dominates(b, a):
        return b[0] >= a[0] and b[1] >= a[1] and b != a
    return {name for name, point in points.items() if not any(dominates(other, point) for other in points.values())}


def test_trade_off_front_passes_with_the_reference_and_a_sort_based_version():
    assert check("09.trade_off_front", trade_off_front)

    def by_sorting(points):  # best log P first; a point is on the front when it beats every diversity seen so far
        front, best = set(), None
        for name, (logp, div) in sorted(points.items(), key=lambda kv: (-kv[1][0], -kv[1][1])):
            if best is None or div > best[1] or (logp, div) == best:
                front.add(name)
                best = (logp, div) if best is None or div > best[1] else best
        return front

    assert check("09.trade_off_front", by_sorting)


def test_trade_off_front_fails_for_the_usual_mistakes():
    def strict_only(points):  # a tie on one axis is not seen as a loss
        return {n for n, p in points.items() if not any(o[0] > p[0] and o[1] > p[1] for o in points.values())}

    def identical_points_dominate(points):
        return {n for n, p in points.items()
                if not any(o[0] >= p[0] and o[1] >= p[1] for m, o in points.items() if m != n)}

    def best_of_each_axis(points):
        return {max(points, key=lambda n: points[n][0]), max(points, key=lambda n: points[n][1])}

    def as_a_list(points):
        return sorted(trade_off_front(points))

    for wrong in (strict_only, identical_points_dominate, best_of_each_axis):
        assert not check("09.trade_off_front", wrong), wrong.__name__
    assert not check("09.trade_off_front", as_a_list)  # a list is not the set asked for
