"""Lesson 06: the learning-rate schedule (warmup, then cosine decay) and one optimisation step."""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.exercises import check_function, function_exercise, register
from lmlab.training import lr_at


def _schedule_cases():
    run = (1e-3, 1e-4, 10, 100)  # lr, min_lr, warmup_steps, steps
    long_run = (6e-4, 6e-5, 100, 1000)
    return [
        (0, *run),  # the very first step already gets lr / warmup_steps, not 0
        (4, *run),
        (9, *run),  # the last warmup step reaches the peak
        (10, *run),  # the decay starts at the peak
        (55, *run),  # half way through the decay: the mean of lr and min_lr
        (99, *run),  # the last step, close to min_lr
        (250, *long_run),
        (0, 1e-2, 0.0, 0, 50),  # no warmup: the decay starts at step 0
        (25, 1e-2, 0.0, 0, 50),
    ]


@function_exercise("06.lr_schedule", cases=_schedule_cases,
                   hint="two cases. While step < warmup_steps, grow linearly: lr * (step + 1) / warmup_steps "
                        "(so step 0 is already above 0). After it, progress = (step - warmup_steps) / "
                        "(steps - warmup_steps) runs from 0 to 1, and the rate is "
                        "min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr): lr at progress 0, min_lr at 1.")
def _lr_schedule(step, lr, min_lr, warmup_steps, steps):
    return lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, steps=steps)


# --- one optimisation step ------------------------------------------------------------------------


@dataclass(frozen=True)
class _StepCase:
    """A small GPT, its optimizer and a batch, built afresh for each function that is checked.

    (Built, not deep-copied: a deep copy of a model drops the gradients in `.grad`, and those are
    what the stale-gradient cases are about.)
    """

    optimizer: str  # "AdamW" or "SGD"
    stale_grads: bool  # True: one step on an earlier batch has already run and left its gradients in .grad
    seed: int

    def build(self):
        from lmlab.models import GPT, GPTConfig

        torch.manual_seed(self.seed)
        # no biases: a key bias gets a gradient that is 0 up to rounding (softmax ignores a constant added to
        # every score), and Adam would blow that rounding noise up into updates that differ between correct answers
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=False))
        if self.optimizer == "AdamW":
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        g = torch.Generator().manual_seed(self.seed)
        windows = torch.randint(13, (2, 4, 9), generator=g)  # two batches of 4 windows of 8 + 1 tokens
        if self.stale_grads:
            _optimisation_step(model, optimizer, windows[0, :, :-1], windows[0, :, 1:])
        return model, optimizer, windows[1, :, :-1], windows[1, :, 1:]

    def __repr__(self):
        stale = ", its .grad still holding the previous batch's gradients" if self.stale_grads else ""
        return f"<a small GPT with {self.optimizer}{stale}, inputs (4, 8), targets (4, 8)>"


def _step_cases():
    return [_StepCase("AdamW", False, 0), _StepCase("AdamW", True, 1), _StepCase("SGD", True, 2)]


def _optimisation_step(model, optimizer, inputs, targets):
    optimizer.zero_grad()
    logits = model(inputs)  # (batch, seq, vocab)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    optimizer.step()
    return loss.item()


def _after_one_step(step_fn):
    """A function of a case: run `step_fn` on it, return the loss it gave and the parameters afterwards."""
    @functools.wraps(step_fn)
    def run(case):
        model, optimizer, inputs, targets = case.build()
        loss = step_fn(model, optimizer, inputs, targets)
        if loss is None:
            return None
        return {"loss": loss, "parameters": {n: p.detach().clone() for n, p in model.named_parameters()}}
    return run


_STEP_HINT = ("five lines, in this order: optimizer.zero_grad() (a backward pass ADDS to .grad, so the previous "
              "batch's gradients must go first); logits = model(inputs); loss = F.cross_entropy over the "
              "flattened logits (batch * seq, vocab) and targets (batch * seq,); loss.backward(); optimizer.step(). "
              "Return loss.item(), the loss before the update.")


def _check_optimisation_step(fn):
    learner = _after_one_step(fn) if callable(fn) else fn
    # a little looser than the default: a correct answer may compute the loss in another order (rounding
    # differences of ~1e-7 that Adam's normalised step can enlarge), while a wrong one is off by ~1e-3
    return check_function(learner, _after_one_step(_optimisation_step), _step_cases,
                          rtol=1e-4, atol=1e-5)


register("06.optimisation_step", _check_optimisation_step, _STEP_HINT)
