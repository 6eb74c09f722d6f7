"""Lesson 08's exercises pass with their solutions and fail with the mistakes learners make."""

import torch
import torch.nn.functional as F

from lmlab.decoding import apply_temperature, top_k_filter, top_p_filter
from lmlab.exercises import check


def test_temperature_probs_passes_with_a_one_hot_at_zero():
    def temperature_probs(logits, temperature):
        if temperature == 0:
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        return (logits / temperature).softmax(-1)

    assert check("08.temperature_probs", temperature_probs)


def test_temperature_probs_fails_with_a_plain_division_at_zero():
    def divides_by_zero(logits, temperature):  # NaN at T = 0
        return (logits / temperature).softmax(-1)

    result = check("08.temperature_probs", divides_by_zero)
    assert not result and "case 4 of" in repr(result)


def test_temperature_probs_fails_when_multiplying_or_when_returning_logits():
    assert not check("08.temperature_probs", lambda logits, t: (logits * t).softmax(-1) if t else F.one_hot(
        logits.argmax(-1), logits.shape[-1]).float())
    assert not check("08.temperature_probs", lambda logits, t: logits / max(t, 1e-9))


def test_temperature_probs_fails_with_the_argmax_index_at_zero():
    def index_not_distribution(logits, temperature):
        return logits.argmax(-1) if temperature == 0 else (logits / temperature).softmax(-1)

    assert not check("08.temperature_probs", index_not_distribution)


def straightforward_top_p(logits, p):
    probs = logits.softmax(-1)
    sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
    remove = sorted_probs.cumsum(-1) - sorted_probs >= p
    return logits.masked_fill(remove.scatter(-1, sorted_indices, remove), float("-inf"))


def test_top_p_rows_passes_with_a_straightforward_row_wise_filter():
    assert check("08.top_p_rows", straightforward_top_p)


def test_top_p_rows_fails_with_the_batch_indexing_bug_on_the_first_batch_of_two():
    def flattened_indices(logits, p):
        probs = logits.softmax(-1)
        sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
        mask = sorted_probs.cumsum(-1) - sorted_probs >= p
        out = logits.clone()
        out[:, sorted_indices[mask]] = float("-inf")
        return out

    result = check("08.top_p_rows", flattened_indices)
    assert not result and "case 2 of" in repr(result)


def test_top_p_rows_fails_without_mapping_the_mask_back_to_token_order():
    def mask_left_in_rank_order(logits, p):
        sorted_probs, _ = logits.softmax(-1).sort(dim=-1, descending=True)
        return logits.masked_fill(sorted_probs.cumsum(-1) - sorted_probs >= p, float("-inf"))

    assert not check("08.top_p_rows", mask_left_in_rank_order)


def test_top_p_rows_fails_when_the_token_that_crosses_p_is_dropped():
    def one_token_short(logits, p):  # keeps the tokens with cumulative mass <= p, then at least one
        probs = logits.softmax(-1)
        sorted_probs, sorted_indices = probs.sort(dim=-1, descending=True)
        remove = sorted_probs.cumsum(-1) > p
        remove[:, 0] = False
        return logits.masked_fill(remove.scatter(-1, sorted_indices, remove), float("-inf"))

    assert not check("08.top_p_rows", one_token_short)


def test_top_p_rows_fails_when_removed_tokens_get_the_logit_0_instead_of_minus_inf():
    def zeroed(logits, p):  # logit 0 is not probability 0: the removed tokens could still be drawn
        out = straightforward_top_p(logits, p)
        return out.masked_fill(out.isinf(), 0.0)

    assert not check("08.top_p_rows", zeroed)


def test_the_unanswered_starter_fails_with_a_hint():
    def temperature_probs(logits, temperature):
        raise NotImplementedError("your code here")

    result = check("08.temperature_probs", temperature_probs)
    assert not result and "NotImplementedError" in repr(result) and "Hint" in repr(result)


# --- 08.sample_loop, against decoding.sample with one seed per row -------------------------------------------



def sample_loop(model, ids, max_new_tokens, temperature, top_k, top_p, seeds, *, crop=True, order="tkp",
                shared_generator=False, draw="race"):
    """The reference loop, with switches for the mistakes the tests make on purpose."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    if shared_generator:
        gens = [gens[0]] * len(seeds)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            context = ids[:, -model.config.block_size :] if crop else ids
            logits = model(context)[:, -1]
            steps = {"t": lambda x: apply_temperature(x, temperature),
                     "k": lambda x: top_k_filter(x, top_k) if top_k else x,
                     "p": lambda x: top_p_filter(x, top_p) if top_p else x}
            for name in order:
                logits = steps[name](logits)
            if temperature == 0:
                nxt = logits.argmax(-1)
            elif draw == "race":
                probs = logits.softmax(-1)
                nxt = torch.stack([(probs[i] / torch.empty_like(probs[i]).exponential_(generator=g)).argmax()
                                   for i, g in enumerate(gens)])
            else:  # "global": torch's global generator
                nxt = torch.multinomial(logits.softmax(-1), 1).squeeze(1)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    return ids


def test_sample_loop_passes_with_the_exponential_race_and_with_multinomial():
    assert check("08.sample_loop", sample_loop)

    def with_multinomial(model, ids, max_new_tokens, temperature, top_k, top_p, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = decoding_filters(model(ids[:, -model.config.block_size :])[:, -1], temperature, top_k, top_p)
                if temperature == 0:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    probs = logits.softmax(-1)
                    nxt = torch.stack([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)])
                ids = torch.cat([ids, nxt], dim=1)
        return ids

    assert check("08.sample_loop", with_multinomial)


def decoding_filters(logits, temperature, top_k, top_p):
    from lmlab.decoding import filter_logits

    return filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)


def test_sample_loop_fails_for_the_usual_mistakes():
    import functools

    wrong = {
        "no cropping": (functools.partial(sample_loop, crop=False), "context"),
        "top-p before temperature": (functools.partial(sample_loop, order="pkt"), "case 2 of 5"),
        "one generator for the batch": (functools.partial(sample_loop, shared_generator=True), ""),
        "torch's global generator": (functools.partial(sample_loop, draw="global"), ""),
    }
    for name, (fn, words) in wrong.items():
        result = check("08.sample_loop", fn)
        assert not result and words in repr(result), name

    def stub(model, ids, max_new_tokens, temperature, top_k, top_p, seeds):
        raise NotImplementedError("your code here")

    result = check("08.sample_loop", stub)
    assert not result and "NotImplementedError" in repr(result) and "Hint" in repr(result)


# --- 08.min_p_rows ---------------------------------------------------------------------------------------------


def test_min_p_rows_passes_row_by_row_and_fails_with_one_threshold_for_the_batch():
    def min_p_rows(logits, p):
        probs = logits.softmax(-1)
        return logits.masked_fill(probs < p * probs.max(dim=-1, keepdim=True).values, float("-inf"))

    def one_threshold(logits, p):
        probs = logits.softmax(-1)
        return logits.masked_fill(probs < p * probs.max(), float("-inf"))

    def relative_to_the_logit(logits, p):  # p times the best LOGIT: not a probability rule
        return logits.masked_fill(logits < p * logits.max(dim=-1, keepdim=True).values, float("-inf"))

    assert check("08.min_p_rows", min_p_rows)
    result = check("08.min_p_rows", one_threshold)
    assert not result and "case 2 of 5" in repr(result)
    assert not check("08.min_p_rows", relative_to_the_logit)


def test_every_stub_fails_cleanly_with_a_nudge_that_gives_no_code():
    from lmlab import exercises

    def stub(*args):
        raise NotImplementedError("your code here")

    for name in ("08.temperature_probs", "08.top_p_rows", "08.sample_loop", "08.min_p_rows"):
        exercises._SHOWN.pop(name, None)
        message = repr(check(name, stub))
        assert "NotImplementedError" in message and "hint 1 of 3" in message, name
        assert "return " not in message and "masked_fill" not in message, name
