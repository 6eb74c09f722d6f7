"""Lesson 08: temperature with its greedy limit, a nucleus filter that is right for a batch, the whole sampling
loop (checked token for token against `decoding.sample` with one seed per row), and min-p for a batch."""

import torch

from lmlab.decoding import apply_temperature, min_p_filter, sample, top_p_filter
from lmlab.exercises import Case, function_exercise
from lmlab.models import GPT, GPTConfig


def _temperature_cases():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 10, generator=g) * 2
    vocab_sized = torch.randn(2, 69, generator=g) * 3 - 5  # all negative: logits / 0 would be -inf everywhere
    return [(logits, 1.0), (logits, 0.7), (logits, 1.5), Case((logits, 0.0), "temperature 0: greedy, never NaN"),
            (vocab_sized, 0.0), (vocab_sized, 0.25), (torch.tensor([[4.0, 1.0, 3.0, -2.0]]), 2.0)]


@function_exercise("08.temperature_probs", cases=_temperature_cases,
                   hints=("Two regimes: any T > 0 rescales the logits before the softmax; T = 0 cannot be divided "
                          "by, so think of what the distribution becomes as T shrinks towards 0.",
                          "For T > 0: the softmax of logits / T over the last dim (the vocabulary). T = 0 is the "
                          "limit T -> 0: all the probability on each row's most probable token, a one-hot row per "
                          "prompt (logits.argmax(-1) tells you where).",
                          "if temperature == 0: return F.one_hot(logits.argmax(-1), logits.shape[-1]).float(); "
                          "return (logits / temperature).softmax(-1)."))
def _temperature_probs(logits, temperature):
    return apply_temperature(logits, temperature).softmax(-1)


def _top_p_cases():
    g = torch.Generator().manual_seed(80)
    confident_and_unsure = torch.stack([torch.tensor([6.0, 1.0, 0.5, 0.0, -1.0, 0.2, 0.1, -0.5]),
                                        torch.tensor([0.3, 0.1, 0.2, 0.0, 0.25, 0.15, -0.1, 0.05])])
    return [
        Case((torch.tensor([[2.0, 1.0, 0.5, 3.0, -1.0, 0.0]]), 0.8), "one prompt: the batch bug still passes here"),
        Case((confident_and_unsure, 0.9), "two prompts whose nuclei differ: 1 token and 7"),
        (torch.randn(4, 20, generator=g) * 2, 0.5),
        (torch.randn(3, 69, generator=g) * 1.5, 0.95),
        (torch.randn(2, 10, generator=g), 1.0),
    ]


@function_exercise("08.top_p_rows", cases=_top_p_cases,
                   hints=("Work in rank order: sort each row's probabilities, decide there which tokens fall outside "
                          "the nucleus, then carry that decision back to the tokens' own places, row by row.",
                          "Sort descending (keep the indices), take the cumulative sum, and remove a token when the "
                          "mass of the tokens ranked BEFORE it is already >= p (so the most probable one always "
                          "stays). The mask is in rank order: send it back with mask.scatter(-1, sorted_indices, "
                          "mask); never index with sorted_indices[mask], which mixes the rows of a batch.",
                          "sorted_probs, order = logits.softmax(-1).sort(dim=-1, descending=True); remove = "
                          "sorted_probs.cumsum(-1) - sorted_probs >= p; return logits.masked_fill(remove.scatter(-1, "
                          "order, remove), float('-inf'))."))
def _top_p_rows(logits, p):
    return top_p_filter(logits, p)


# --- the whole sampling loop --------------------------------------------------------------------------------


def _tiny_gpt(seed, vocab_size, block_size):
    """A small GPT whose next-token distributions are as peaked and context-dependent as a trained model's.

    (A freshly initialised GPT gives nearly uniform distributions, on which filter order and per-row draws
    hardly matter: weights of a larger scale make those mistakes show.)
    """
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def _sampling_cases():
    g = torch.Generator().manual_seed(0)
    model = _tiny_gpt(8, 11, block_size=8)
    wide = _tiny_gpt(9, 29, block_size=16)
    return [
        Case((model, torch.randint(0, 11, (2, 5), generator=g), 10, 0.8, 5, 0.9, [0, 1]),
             "2 prompts, temperature 0.8, top-k 5, top-p 0.9, past the context of 8"),
        Case((wide, torch.randint(0, 29, (3, 4), generator=g), 12, 1.5, None, 0.6, [5, 5, 6]),
             "3 prompts, two of them with the same seed: top-p only, at temperature 1.5"),
        Case((wide, torch.randint(0, 29, (2, 6), generator=g), 8, 1.0, 3, None, [2, 7]), "top-k 3 only"),
        Case((model, torch.randint(0, 11, (2, 3), generator=g), 6, 0.0, 4, 0.5, [3, 4]),
             "temperature 0: greedy, whatever the filters, and nothing drawn"),
        Case((wide, torch.randint(0, 29, (1, 5), generator=g), 0, 1.0, None, None, [9]), "no new tokens"),
    ]


@function_exercise("08.sample_loop", cases=_sampling_cases,
                   hints=("Per step: the cropped context, the last position's logits, the filters in sample's order "
                          "(temperature, top-k, top-p), the probabilities, then one draw per row from that row's "
                          "own generator, appended to the text. Temperature 0 draws nothing.",
                          "One generator per row: torch.Generator().manual_seed(seed) for each seed. Filters: "
                          "apply_temperature (T = 0 -> take the argmax, skip the draw), then top_k_filter if top_k is "
                          "not None, then top_p_filter if top_p is not None. The draw of row i: "
                          "torch.multinomial(probs[i], 1, generator=gens[i]), or the exponential race of section 7, "
                          "which is the same draw. Feed the model ids[:, -block_size:].",
                          "gens = [torch.Generator().manual_seed(s) for s in seeds]; with torch.no_grad(): for _ in "
                          "range(max_new_tokens): logits = model(ids[:, -model.config.block_size:])[:, -1]; "
                          "logits = apply_temperature(logits, temperature); if top_k: logits = top_k_filter(logits, "
                          "top_k); if top_p: logits = top_p_filter(logits, top_p); if temperature == 0: nxt = "
                          "logits.argmax(-1) else: probs = logits.softmax(-1); nxt = torch.stack([(probs[i] / "
                          "torch.empty_like(probs[i]).exponential_(generator=g)).argmax() for i, g in "
                          "enumerate(gens)]); ids = torch.cat([ids, nxt[:, None]], dim=1); return ids."))
def _sample_loop(model, ids, max_new_tokens, temperature, top_k, top_p, seeds):
    return sample(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seeds,
                  use_cache=False)


# --- min-p for a batch (a further exercise) ------------------------------------------------------------------


def _min_p_cases():
    g = torch.Generator().manual_seed(81)
    confident_and_unsure = torch.stack([torch.tensor([6.0, 1.0, 0.5, 0.0, -1.0, 0.2, 0.1, -0.5]),
                                        torch.tensor([0.3, 0.1, 0.2, 0.0, 0.25, 0.15, -0.1, 0.05])])
    return [
        Case((torch.tensor([[2.0, 1.0, 0.5, 3.0, -1.0, 0.0]]), 0.3), "one prompt: the batch bug still passes here"),
        Case((confident_and_unsure, 0.15), "a confident prompt and an unsure one: each its own threshold"),
        (torch.randn(4, 20, generator=g) * 2, 0.05),
        (torch.randn(3, 69, generator=g) * 3, 0.2),
        Case((torch.randn(2, 10, generator=g), 0.0), "p = 0 keeps every token"),
    ]


@function_exercise("08.min_p_rows", cases=_min_p_cases, rtol=0.0, atol=0.0,
                   hints=("The threshold is relative to each row's own best token, so every row has its own.",
                          "Keep a token when its probability is >= p times the largest probability OF ITS ROW: "
                          "probs.max(dim=-1, keepdim=True), shape (batch, 1), not probs.max() of the whole batch. "
                          "Set the others to -inf.",
                          "probs = logits.softmax(-1); keep = probs >= p * probs.max(dim=-1, keepdim=True).values; "
                          "return logits.masked_fill(~keep, float('-inf'))."))
def _min_p_rows(logits, p):
    return min_p_filter(logits, p)
