"""Lesson 00: from logits to the next-token distribution."""

import torch

from lmlab.exercises import function_exercise, value_exercise


def _cases():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, 3, 5, generator=g),), (torch.randn(2, 4, 7, generator=g),),
            (torch.randn(3, 1, 65, generator=g) * 10,)]


@function_exercise("00.next_token_probs", cases=_cases,
                   hint="take the logits at the last position with logits[:, -1] (shape (batch, vocab)), then "
                        "softmax over the vocabulary, dim=-1; each row of the result sums to 1.")
def _next_token_probs(logits):
    return logits[:, -1].softmax(dim=-1)


def _most_likely_after_window():
    from lmlab import pretrained

    model, tokenizer = pretrained.load("shakespeare-char")
    ids = torch.tensor([tokenizer.encode("ROMEO:\nBut soft, what light through yonder window brea")])
    with torch.no_grad():
        return tokenizer.id_to_token(int(model(ids)[0, -1].argmax()))


value_exercise("00.most_likely_after_window", expected=_most_likely_after_window,
               hint="encode the line, run the model on torch.tensor([ids]), take the argmax of the logits at the "
                    "last position and turn that id back into a character with tokenizer.id_to_token.")
