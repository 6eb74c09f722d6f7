"""Lesson 07: one greedy step, a generation loop that crops its context, one step of beam search, and the
length-penalised score of a finished beam."""

import functools

import torch

from lmlab.decoding import beam_step, greedy
from lmlab.exercises import Case, check_function, function_exercise, register
from lmlab.models import GPT, GPTConfig


def _tiny_gpt(seed, vocab_size, block_size=16, dropout=0.0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16,
                         dropout=dropout)).eval()


def _greedy_step_cases():
    g = torch.Generator().manual_seed(0)
    return [
        (_tiny_gpt(0, 11), torch.randint(0, 11, (1, 5), generator=g)),
        Case((_tiny_gpt(1, 11), torch.randint(0, 11, (2, 7), generator=g)), "a batch of 2: one token per row"),
        Case((_tiny_gpt(2, 23), torch.randint(0, 23, (3, 1), generator=g)), "prompts of one token"),
        (_tiny_gpt(3, 23), torch.randint(0, 23, (4, 12), generator=g)),
    ]


@function_exercise("07.greedy_step", cases=_greedy_step_cases,
                   hints=("The model scores every position of the text at once; only one of those positions "
                          "predicts the token that comes next. Which one, and which token does greedy take there?",
                          "model(ids) is (batch, seq, vocab): the LAST position's logits, (batch, vocab), score the "
                          "next token; greedy takes the largest of each row, over the vocabulary axis. One token id "
                          "per row: a LongTensor of shape (batch,).",
                          "return model(ids)[:, -1].argmax(dim=-1)"))
def _greedy_step(model, ids):
    with torch.no_grad():
        return model(ids)[:, -1].argmax(-1)


# --- a generation loop that crops its context ------------------------------------------------------------


def _generation_cases():
    g = torch.Generator().manual_seed(0)
    block8 = _tiny_gpt(4, 11, block_size=8)
    return [
        Case((block8, torch.randint(0, 11, (2, 5), generator=g), 10),
             "2 prompts of 5 tokens, 10 new ones: past the context of 8 after 3 steps"),
        Case((block8, torch.randint(0, 11, (3, 11), generator=g), 3), "prompts longer than the context of 8"),
        Case((_tiny_gpt(5, 17, block_size=6), torch.randint(0, 17, (1, 6), generator=g), 7),
             "a prompt that fills the context of 6 exactly"),
        Case((block8, torch.randint(0, 11, (2, 4), generator=g), 0), "no new tokens: the prompt itself"),
        Case((_tiny_gpt(6, 11, block_size=8, dropout=0.2).train(), torch.randint(0, 11, (2, 3), generator=g), 9),
             "a model with dropout, in train mode: generate with dropout off, and leave the mode as you found it"),
    ]


def _with_mode(generate):
    """Run a generation function; return its ids and whether the model is in train mode afterwards."""
    @functools.wraps(generate)
    def run(model, ids, max_new_tokens):
        out = generate(model, ids, max_new_tokens)
        return None if out is None else {"ids": out, "train mode afterwards": model.training}
    return run


def _check_generation(fn):
    learner = _with_mode(fn) if callable(fn) else fn
    return check_function(learner, _with_mode(lambda m, ids, n: greedy(m, ids, n, use_cache=False)), _generation_cases)


register("07.greedy_loop", _check_generation,
         hints=("Repeat your greedy step max_new_tokens times, appending each new token to the text; but the model "
                "reads at most block_size tokens, so decide what it gets to see once the text is longer.",
                "Feed the model only the last block_size tokens, ids[:, -model.config.block_size:], at every step; "
                "append the argmax of the last position to the FULL sequence with torch.cat(..., dim=1). Run under "
                "torch.no_grad() with dropout off (model.eval()), and put the model back in train mode afterwards "
                "if that is how it came.",
                "was_training = model.training; model.eval(); with torch.no_grad(): for _ in range(max_new_tokens): "
                "context = ids[:, -model.config.block_size:]; next_id = model(context)[:, -1].argmax(-1, "
                "keepdim=True); ids = torch.cat([ids, next_id], dim=1); then model.train(was_training); return ids."))


# --- one step of beam search --------------------------------------------------------------------------------


def _beam_step_cases():
    g = torch.Generator().manual_seed(7)

    def log_probs(rows, vocab):
        return (torch.randn(rows, vocab, generator=g) * 2).log_softmax(-1)

    inf = float("-inf")
    return [
        Case((torch.tensor([[0.0, inf, inf]]), log_probs(3, 7), 3),
             "the first step of one prompt: only beam 0 is alive (the others score -inf)"),
        Case((torch.tensor([[-0.4, -0.9, -1.3]]), log_probs(3, 6), 3), "one prompt, 3 live beams"),
        Case((torch.tensor([[-0.5, -1.0], [-8.0, -9.0]]), log_probs(4, 5), 2),
             "2 prompts on very different scales: each keeps its own best, from its own beams"),
        Case((-torch.rand(3, 4, generator=g) * 5, log_probs(12, 9), 8), "3 prompts of 4 beams, k = 2 * num_beams"),
    ]


@function_exercise("07.beam_step", cases=_beam_step_cases,
                   hints=("A candidate is a beam followed by one token, scored by the beam's score plus that token's "
                          "log-probability. Each prompt keeps its own k best candidates, whichever of its beams "
                          "they come from.",
                          "scores.view(-1, 1) + log_probs is (batch * num_beams, vocab); reshape it to (batch, "
                          "num_beams * vocab) so that each prompt's candidates are one row, and take topk(k) per row. "
                          "An index i in that row is beam i // vocab of the prompt and token i % vocab; the parent row "
                          "is a row of log_probs: b * num_beams + beam.",
                          "batch, num_beams = scores.shape; vocab = log_probs.shape[-1]; top = (scores.view(-1, 1) + "
                          "log_probs).view(batch, -1).topk(k, dim=-1); rows = top.indices // vocab + num_beams * "
                          "torch.arange(batch)[:, None]; return top.values, rows, top.indices % vocab."))
def _beam_step(scores, log_probs, k):
    return beam_step(scores, log_probs, k)


def _beam_score_cases():
    g = torch.Generator().manual_seed(0)
    hyp = torch.tensor([-0.5, -1.0, -0.25, -2.0])
    long_hyp = -torch.rand(30, generator=g) * 3
    return [(hyp, 1.0), (hyp, 0.0), (hyp, 2.0), (hyp, -1.0), (hyp, 0.5), (torch.tensor([-1.5]), 1.0),
            (long_hyp, 1.0), (long_hyp, 1.5)]


@function_exercise("07.beam_score", cases=_beam_score_cases,
                   hints=("The score divides the hypothesis' log-probability by its length raised to a power. What is "
                          "the log-probability of a whole hypothesis, given those of its tokens?",
                          "The log-probability of the hypothesis is the SUM of its tokens' log-probs (the chain "
                          "rule); its length is the number of tokens, eos included: token_logprobs.numel(). With "
                          "length_penalty = 0 the score is the plain sum, with 1 the mean.",
                          "return token_logprobs.sum().item() / token_logprobs.numel() ** length_penalty"))
def _beam_score(token_logprobs, length_penalty):
    return float(token_logprobs.sum()) / token_logprobs.numel() ** length_penalty
