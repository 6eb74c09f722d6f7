"""Lesson 06: the learning-rate schedule, one optimisation step, gradient accumulation, and the whole training loop
(checked against `lmlab.training.train` itself)."""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.exercises import Case, check_function, function_exercise, register
from lmlab.models import GPT, GPTConfig
from lmlab.training import TrainConfig, get_batch, lr_at, make_optimizer, train


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
                   hints=("Two regimes, split at warmup_steps: a straight line up to lr, then half a cosine down "
                          "to min_lr. Check your formula at the boundaries: step 0, the last warmup step, the first "
                          "decay step and the last step.",
                          "While step < warmup_steps the rate is lr * (step + 1) / warmup_steps, so step 0 is "
                          "already above 0. After that, progress = (step - warmup_steps) / (steps - warmup_steps) "
                          "runs from 0 to 1 and the cosine term 0.5 * (1 + cos(pi * progress)) from 1 to 0.",
                          "if step < warmup_steps: return lr * (step + 1) / warmup_steps; progress = (step - "
                          "warmup_steps) / (steps - warmup_steps); return min_lr + 0.5 * (1 + math.cos(math.pi * "
                          "progress)) * (lr - min_lr)."))
def _lr_schedule(step, lr, min_lr, warmup_steps, steps):
    return lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, steps=steps)


# --- one optimisation step ------------------------------------------------------------------------


def _small_gpt(seed, dropout=0.0):
    torch.manual_seed(seed)
    # no biases: a key bias gets a gradient that is 0 up to rounding (softmax ignores a constant added to
    # every score), and Adam would blow that rounding noise up into updates that differ between correct answers
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=False, dropout=dropout))


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
        model = _small_gpt(self.seed)
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
        return f"<small GPT, {self.optimizer}, inputs (4, 8), targets (4, 8)>"


def _step_cases():
    stale = "its .grad still holds the previous batch's gradients"
    return [Case(_StepCase("AdamW", False, 0), "AdamW, fresh gradients"), Case(_StepCase("AdamW", True, 1), stale),
            Case(_StepCase("SGD", True, 2), f"SGD with momentum; {stale}")]


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


def _check_optimisation_step(fn):
    learner = _after_one_step(fn) if callable(fn) else fn
    # a little looser than the default: a correct answer may compute the loss in another order (rounding
    # differences of ~1e-7 that Adam's normalised step can enlarge), while a wrong one is off by ~1e-3
    return check_function(learner, _after_one_step(_optimisation_step), _step_cases, rtol=1e-4, atol=1e-5)


register("06.optimisation_step", _check_optimisation_step,
         hints=("Five things happen in a step, and their order matters: clear, forward, loss, backward, update. "
                "Which of them must come before backward(), given that backward() ADDS to each .grad?",
                "optimizer.zero_grad() first (or the previous batch's gradients are added in); logits = "
                "model(inputs) is (batch, seq, vocab), and F.cross_entropy wants (batch * seq, vocab) against "
                "(batch * seq,); then loss.backward() and optimizer.step(). Return the loss before the update.",
                "optimizer.zero_grad(); logits = model(inputs); loss = F.cross_entropy(logits.flatten(0, 1), "
                "targets.flatten()); loss.backward(); optimizer.step(); return loss.item()."))


# --- gradient accumulation --------------------------------------------------------------------------


@dataclass(frozen=True)
class _AccumulationCase:
    """A small GPT with SGD (whose update, unlike Adam's, shows the scale of the gradient) and micro-batches."""

    n_micro: int
    micro_size: int
    stale_grads: bool
    seed: int

    def build(self):
        model = _small_gpt(self.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        g = torch.Generator().manual_seed(self.seed)
        if self.stale_grads:
            old = torch.randint(13, (4, 9), generator=g)
            _optimisation_step(model, optimizer, old[:, :-1], old[:, 1:])
        windows = torch.randint(13, (self.n_micro, self.micro_size, 9), generator=g)
        return model, optimizer, [(w[:, :-1], w[:, 1:]) for w in windows]

    def __repr__(self):
        return f"<small GPT, SGD, {self.n_micro} x (inputs, targets) ({self.micro_size}, 8)>"


def _accumulation_cases():
    def case(n_micro, micro_size, stale, seed):
        what = f"{n_micro} micro-batches of {micro_size} windows" + (
            "; .grad still holds the previous batch's gradients" if stale else "")
        return Case(_AccumulationCase(n_micro, micro_size, stale, seed), what)
    return [case(4, 2, False, 0), case(2, 3, True, 1), case(1, 4, True, 2), case(3, 1, True, 3)]


def _reference_accumulation(model, optimizer, micro_batches):
    """One step on the micro-batches put together: what accumulation must reproduce."""
    inputs = torch.cat([i for i, _ in micro_batches])
    targets = torch.cat([t for _, t in micro_batches])
    return _optimisation_step(model, optimizer, inputs, targets)


def _after_accumulation(step_fn):
    @functools.wraps(step_fn)
    def run(case):
        model, optimizer, micro_batches = case.build()
        loss = step_fn(model, optimizer, micro_batches)
        if loss is None:
            return None
        return {"loss": loss, "parameters": {n: p.detach().clone() for n, p in model.named_parameters()}}
    return run


def _check_accumulation(fn):
    learner = _after_accumulation(fn) if callable(fn) else fn
    return check_function(learner, _after_accumulation(_reference_accumulation), _accumulation_cases,
                          rtol=1e-4, atol=1e-5)


register("06.accumulation_step", _check_accumulation,
         hints=("The goal is the very update that one step on all the micro-batches together would make. What "
                "does backward() do to .grad when it is called several times, and what is the loss of the big "
                "batch in terms of the micro-batches' losses?",
                "Clear the gradients once, before the first micro-batch (not inside the loop); backward() then "
                "sums the micro-batches' gradients. The big batch's loss is the MEAN of the micro-batches' losses "
                "(they have the same size), so divide each loss by the number of micro-batches before backward(). "
                "Step once, after the loop, and return the mean of the (undivided) losses.",
                "optimizer.zero_grad(); total = 0.0; for inputs, targets in micro_batches: loss = "
                "F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()); (loss / len(micro_batches))"
                ".backward(); total += loss.item(); then optimizer.step(); return total / len(micro_batches)."))


# --- the whole training loop, against lmlab.training.train ----------------------------------------------


_LOOP_CONFIG = dict(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=False)
_LOOP_DATA_SEED = 7


@dataclass(frozen=True)
class _LoopCase:
    """A small GPT to train for `steps` steps of 4 windows; what `train` does with these settings is the answer."""

    steps: int
    lr: float
    warmup_steps: int
    grad_clip: float
    dropout: float = 0.0
    eval_mode: bool = False  # the model arrives in eval mode, as an evaluation or a decoder may leave it
    seed: int = 0

    def data(self):
        return torch.randint(13, (400,), generator=torch.Generator().manual_seed(_LOOP_DATA_SEED))

    def model(self):
        torch.manual_seed(self.seed)
        model = GPT(GPTConfig(**_LOOP_CONFIG, dropout=self.dropout))
        return model.eval() if self.eval_mode else model

    def settings(self):
        return dict(steps=self.steps, batch_size=4, lr=self.lr, min_lr=self.lr / 10, warmup_steps=self.warmup_steps,
                    grad_clip=self.grad_clip, seed=self.seed)

    def batch_of_step(self, step):
        """The windows (4, block_size + 1) that `train` draws at `step`: its generator is seeded with the step."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 * 1_000_003 + step)
        return get_batch(self.data(), 4, _LOOP_CONFIG["block_size"] + 1, g)

    def __repr__(self):
        return "<small GPT>"


def _loop_cases():
    def case(description, **settings):
        loop = _LoopCase(**settings)
        return Case(loop, f"{loop.steps} steps of 4 windows, lr {loop.lr}, warmup {loop.warmup_steps}, grad_clip "
                          f"{loop.grad_clip}: {description}")
    return [
        case("warmup, then cosine decay, clipped", steps=6, lr=1e-2, warmup_steps=2, grad_clip=0.25),
        case("no warmup, and grad_clip 0 turns clipping off", steps=5, lr=3e-2, warmup_steps=0, grad_clip=0.0, seed=1),
        case("dropout 0.1, and the model arrives in eval mode (as an evaluation or a decoder may leave it)",
             steps=8, lr=1e-2, warmup_steps=3, grad_clip=0.5, dropout=0.1, eval_mode=True, seed=2),
    ]


def _parameters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _by_train(case):
    """What lmlab.training.train does: the loss of every step, and the weights at the end."""
    model = case.model()
    history = train(model, case.data(), log_interval=1, progress=False, device="cpu", **case.settings())
    return {"losses": history.train_loss, "parameters": _parameters(model)}


def _by_learner(fn):
    @functools.wraps(fn)
    def run(case):
        model = case.model()
        optimizer = make_optimizer(model, TrainConfig(**case.settings()))  # the optimizer train makes
        torch.manual_seed(case.seed)  # dropout's generator, seeded as train seeds it
        s = case.settings()
        losses = fn(model, optimizer, case.batch_of_step, s["steps"], s["lr"], s["min_lr"], s["warmup_steps"],
                    s["grad_clip"])
        if losses is None:
            return None
        return {"losses": losses, "parameters": _parameters(model)}
    return run


def _check_training_loop(fn):
    learner = _by_learner(fn) if callable(fn) else fn
    # losses agree to ~1e-6 whatever the order of the sums; a wrong loop is off by 1e-3 or more
    return check_function(learner, _by_train, _loop_cases, rtol=1e-4, atol=1e-4)


register("06.training_loop", _check_training_loop,
         hints=("Every step does what train does, in train's order: set this step's learning rate, take this step's "
                "windows, split them into inputs and targets, forward, loss, clear the old gradients, backward, "
                "clip, update. And before the first step, make sure dropout is on.",
                "model.train() first. Per step: the rate lr_at(step, lr=lr, min_lr=min_lr, warmup_steps="
                "warmup_steps, steps=steps) (or your lr_schedule) goes into group['lr'] of every group in "
                "optimizer.param_groups; windows = batch_of_step(step) is (batch, block_size + 1): inputs "
                "windows[:, :-1], targets windows[:, 1:]; clip with torch.nn.utils.clip_grad_norm_("
                "model.parameters(), grad_clip) only when grad_clip > 0; record loss.item().",
                "model.train(); losses = []; for step in range(steps): for group in optimizer.param_groups: "
                "group['lr'] = lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, steps=steps); windows = "
                "batch_of_step(step); logits = model(windows[:, :-1]); loss = F.cross_entropy(logits.flatten(0, 1), "
                "windows[:, 1:].flatten()); optimizer.zero_grad(); loss.backward(); if grad_clip > 0: "
                "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip); optimizer.step(); "
                "losses.append(loss.item()); then return losses."))
