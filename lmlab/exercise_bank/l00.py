"""Lesson 00: from logits to the next-token distribution, and the whole pipeline on a batch."""

import torch

from lmlab.exercises import Case, function_exercise, value_exercise
from lmlab.models import GPT, GPTConfig


def _probs_cases():
    g = torch.Generator().manual_seed(0)
    rows_differ = torch.randn(3, 4, 7, generator=g)
    return [
        Case((torch.randn(1, 3, 5, generator=g),), "one sequence of 3 positions, a vocabulary of 5"),
        Case((rows_differ,), "a batch of 3 sequences whose last positions differ: one distribution per row"),
        Case((torch.randn(2, 1, 65, generator=g),), "sequences of a single position"),
        Case((torch.randn(2, 3, 6, generator=g) * 400,),
             "logits in the hundreds, as a confident model gives: exp() of them overflows a float32"),
    ]


@function_exercise("00.next_token_probs", cases=_probs_cases, hints=(
    "Which position's logits score the token that comes after the whole sequence? And over which axis must "
    "the probabilities of one distribution add up to 1?",
    "The result has shape (batch, vocab): take the logits at the last position of every sequence, then "
    "normalise each row over the vocabulary. torch's softmax is safe with huge logits; exp() / sum is not.",
    "return logits[:, -1].softmax(dim=-1)",
))
def _next_token_probs(logits):
    return logits[:, -1].softmax(dim=-1)


def _most_likely_after_window():
    from lmlab import pretrained

    model, tokenizer = pretrained.load("shakespeare-char")
    ids = torch.tensor([tokenizer.encode("ROMEO:\nBut soft, what light through yonder window brea")])
    with torch.no_grad():
        return tokenizer.id_to_token(int(model(ids)[0, -1].argmax()))


value_exercise("00.most_likely_after_window", expected=_most_likely_after_window, hints=(
    "The answer is one character: the one with the largest logit at the last position of the line.",
    "Encode the line into ids, run the model on a batch of one, look at the logits of the last position, "
    "and turn the id of the largest one back into a character.",
    "ids = torch.tensor([tokenizer.encode(line)]); answer = tokenizer.id_to_token(int(model(ids)[0, -1].argmax()))",
))


def _tiny_gpt(seed: int, **config) -> GPT:
    """A small random GPT in which every piece matters: LayerNorms that are not the identity, strong positions."""
    with torch.random.fork_rng():  # leave the learner's random state alone
        torch.manual_seed(seed)
        model = GPT(GPTConfig(**config))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ln" in name:  # a LayerNorm starts as the identity map: make forgetting one show
                    p.add_(torch.randn_like(p) * 0.5)
                if "emb" in name or "head" in name:  # logits of order 1, not 0.01: every mistake shows
                    p.mul_(20)
    return model.eval()


def _pipeline_cases():
    g = torch.Generator().manual_seed(3)
    two_layers = _tiny_gpt(0, vocab_size=7, block_size=8, n_layer=2, n_head=2, n_embd=16)
    three_layers = _tiny_gpt(1, vocab_size=11, block_size=6, n_layer=3, n_head=4, n_embd=16, tie_weights=False)
    return [
        Case((two_layers, torch.tensor([[1, 2, 3, 4, 5]])), "one sequence of 5 tokens, a model with 2 blocks"),
        Case((two_layers, torch.randint(0, 7, (3, 5), generator=g)), "a batch of 3 different sequences"),
        Case((three_layers, torch.randint(0, 11, (2, 6), generator=g)),
             "3 blocks, sequences as long as block_size, an output layer not tied to the embedding"),
        Case((three_layers, torch.tensor([[4], [9]])), "sequences of one token"),
        Case((two_layers, torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3]])),
             "the same token at every position: only the position embeddings tell the positions apart"),
    ]


@function_exercise("00.logits_by_hand", cases=_pipeline_cases, rtol=1e-4, atol=1e-4, hints=(
    "Follow the data through the model as this lesson did, in the same order, for a whole batch: what is added "
    "to the token embeddings, what runs after the last block, and what turns a vector into logits?",
    "model.tok_emb(ids) gives (batch, seq, n_embd); model.pos_emb takes the positions 0 .. seq - 1 (not the "
    "ids); every block of model.blocks runs in turn; then model.ln_f, then model.head.",
    "x = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1])); for block in model.blocks: "
    "x = block(x); return model.head(model.ln_f(x))",
))
def _logits_by_hand(model, ids):
    with torch.no_grad():
        return model(ids)
