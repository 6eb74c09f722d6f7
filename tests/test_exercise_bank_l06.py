"""Lesson 06's exercises pass with their solutions and fail with the mistakes learners make."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab import exercises
from lmlab.exercises import check
from lmlab.training import lr_at


@pytest.fixture(autouse=True)
def first_hints():
    """Each test starts with no hint shown yet (a repeated failure shows the next level)."""
    exercises._SHOWN.clear()


def lr_schedule(step, lr, min_lr, warmup_steps, steps):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


def test_lr_schedule_passes_with_the_reference():
    assert check("06.lr_schedule", lr_schedule)


def test_lr_schedule_fails_when_the_warmup_starts_at_zero():
    def from_zero(step, lr, min_lr, warmup_steps, steps):
        if step < warmup_steps:
            return lr * step / warmup_steps
        return lr_schedule(step, lr, min_lr, warmup_steps, steps)

    result = check("06.lr_schedule", from_zero)
    assert not result and "case 1 of" in repr(result)


def test_lr_schedule_fails_when_the_decay_ignores_min_lr_or_the_warmup():
    def to_zero(step, lr, min_lr, warmup_steps, steps):
        return lr_schedule(step, lr, 0.0, warmup_steps, steps)

    def over_all_steps(step, lr, min_lr, warmup_steps, steps):
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        return min_lr + 0.5 * (1 + math.cos(math.pi * step / steps)) * (lr - min_lr)

    def linear(step, lr, min_lr, warmup_steps, steps):
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        return lr - (lr - min_lr) * (step - warmup_steps) / (steps - warmup_steps)

    for wrong in (to_zero, over_all_steps, linear):
        assert not check("06.lr_schedule", wrong), wrong.__name__


def test_lr_schedule_that_is_not_written_yet_is_a_normal_failure():
    def lr_schedule(step, lr, min_lr, warmup_steps, steps):
        raise NotImplementedError("your code here")

    result = check("06.lr_schedule", lr_schedule)
    assert not result and "NotImplementedError" in repr(result) and "Hint" in repr(result)


def optimisation_step(model, optimizer, inputs, targets):
    optimizer.zero_grad()
    logits = model(inputs)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    optimizer.step()
    return loss.item()


def test_optimisation_step_passes_with_the_reference_and_with_equivalent_spellings():
    assert check("06.optimisation_step", optimisation_step)

    def other_spelling(model, optimizer, inputs, targets):  # model.zero_grad, the loss over dim 1, a tensor returned
        model.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(inputs).transpose(1, 2), targets)
        loss.backward()
        optimizer.step()
        return loss

    assert check("06.optimisation_step", other_spelling)


def test_optimisation_step_fails_without_zero_grad_on_the_stale_gradient_case():
    def no_zero_grad(model, optimizer, inputs, targets):
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        return loss.item()

    result = check("06.optimisation_step", no_zero_grad)
    assert not result and "case 2 of 3" in repr(result) and "previous batch" in repr(result)


def test_optimisation_step_fails_for_the_usual_misorderings():
    def zero_grad_before_step(model, optimizer, inputs, targets):  # the gradients are gone when step() reads them
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        return loss.item()

    def no_step(model, optimizer, inputs, targets):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        loss.backward()
        return loss.item()

    def loss_after_the_update(model, optimizer, inputs, targets):
        optimisation_step(model, optimizer, inputs, targets)
        with torch.no_grad():
            return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).item()

    def summed_loss(model, optimizer, inputs, targets):  # Adam hardly notices the scale; the loss does
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), reduction="sum")
        loss.backward()
        optimizer.step()
        return loss.item()

    for wrong in (zero_grad_before_step, no_step, loss_after_the_update, summed_loss):
        assert not check("06.optimisation_step", wrong), wrong.__name__


def test_optimisation_step_that_forgets_to_return_or_is_not_written_is_a_normal_failure():
    def no_return(model, optimizer, inputs, targets):
        optimisation_step(model, optimizer, inputs, targets)

    def optimisation_step_todo(model, optimizer, inputs, targets):
        raise NotImplementedError("your code here")

    assert "forget a `return`" in repr(check("06.optimisation_step", no_return))
    result = check("06.optimisation_step", optimisation_step_todo)
    assert not result and "NotImplementedError" in repr(result)
    assert not check("06.optimisation_step", None)


# --- 06.training_loop, against lmlab.training.train ------------------------------------------------------



def training_loop(model, optimizer, batch_of_step, steps, lr, min_lr, warmup_steps, grad_clip, *, mode="train",
                  clip=True, schedule=True, shift=True):
    """The reference loop, with switches for the mistakes the tests make on purpose."""
    if mode == "train":
        model.train()
    losses = []
    for step in range(steps):
        rate = lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, steps=steps) if schedule else lr
        for group in optimizer.param_groups:
            group["lr"] = rate
        windows = batch_of_step(step)
        inputs, targets = (windows[:, :-1], windows[:, 1:]) if shift else (windows[:, :-1], windows[:, :-1])
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        if clip == "always" or (clip and grad_clip > 0):
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_loop_passes_with_the_reference_and_with_other_spellings():
    assert check("06.training_loop", training_loop)

    def other_spelling(model, optimizer, batch_of_step, steps, lr, min_lr, warmup_steps, grad_clip):
        model.train(True)
        losses = []
        for step in range(steps):
            optimizer.param_groups[0]["lr"] = optimizer.param_groups[1]["lr"] = lr_schedule(
                step, lr, min_lr, warmup_steps, steps)
            windows = batch_of_step(step)
            optimizer.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(windows[:, :-1]).transpose(1, 2), windows[:, 1:])
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=False)
            optimizer.step()
            losses.append(loss.detach())  # tensors are fine too
        return losses

    assert check("06.training_loop", other_spelling)


def test_training_loop_fails_for_the_usual_mistakes():
    import functools

    wrong = {
        "left in eval mode": functools.partial(training_loop, mode="as given"),
        "clipping at grad_clip 0": functools.partial(training_loop, clip="always"),
        "no clipping": functools.partial(training_loop, clip=False),
        "constant learning rate": functools.partial(training_loop, schedule=False),
        "targets not shifted": functools.partial(training_loop, shift=False),
    }
    for name, fn in wrong.items():
        result = check("06.training_loop", fn)
        assert not result, name

    def schedule_one_step_late(model, optimizer, batch_of_step, steps, lr, min_lr, warmup_steps, grad_clip):
        model.train()
        losses = []
        for step in range(steps):
            windows = batch_of_step(step)
            loss = F.cross_entropy(model(windows[:, :-1]).flatten(0, 1), windows[:, 1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else None
            optimizer.step()
            for group in optimizer.param_groups:  # set after the step: step s runs with the rate of step s - 1
                group["lr"] = lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, steps=steps)
            losses.append(loss.item())
        return losses

    assert not check("06.training_loop", schedule_one_step_late)


def test_training_loop_case_names_what_it_tests_and_the_stub_fails_cleanly():
    result = check("06.training_loop", functools_partial_mode())
    assert "arrives in eval mode" in repr(result)

    def stub(model, optimizer, batch_of_step, steps, lr, min_lr, warmup_steps, grad_clip):
        raise NotImplementedError("your code here")

    result = check("06.training_loop", stub)
    assert not result and "NotImplementedError" in repr(result) and "Hint" in repr(result)


def functools_partial_mode():
    import functools

    return functools.partial(training_loop, mode="as given")


# --- 06.accumulation_step -------------------------------------------------------------------------------


def accumulation_step(model, optimizer, micro_batches):
    optimizer.zero_grad()
    total = 0.0
    for inputs, targets in micro_batches:
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        (loss / len(micro_batches)).backward()
        total += loss.item()
    optimizer.step()
    return total / len(micro_batches)


def test_accumulation_step_passes_with_the_reference():
    assert check("06.accumulation_step", accumulation_step)


def test_accumulation_step_fails_for_the_usual_mistakes():
    def not_divided(model, optimizer, micro_batches):
        optimizer.zero_grad()
        losses = [F.cross_entropy(model(i).flatten(0, 1), t.flatten()) for i, t in micro_batches]
        for loss in losses:
            loss.backward()
        optimizer.step()
        return sum(loss.item() for loss in losses) / len(losses)

    def zero_grad_in_the_loop(model, optimizer, micro_batches):  # only the last micro-batch counts
        total = 0.0
        for inputs, targets in micro_batches:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
            (loss / len(micro_batches)).backward()
            total += loss.item()
        optimizer.step()
        return total / len(micro_batches)

    def step_per_micro_batch(model, optimizer, micro_batches):
        return sum(optimisation_step(model, optimizer, i, t) for i, t in micro_batches) / len(micro_batches)

    def no_zero_grad(model, optimizer, micro_batches):
        total = 0.0
        for inputs, targets in micro_batches:
            loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
            (loss / len(micro_batches)).backward()
            total += loss.item()
        optimizer.step()
        return total / len(micro_batches)

    def summed_loss_returned(model, optimizer, micro_batches):
        return accumulation_step(model, optimizer, micro_batches) * len(micro_batches)

    for wrong in (not_divided, zero_grad_in_the_loop, step_per_micro_batch, no_zero_grad, summed_loss_returned):
        assert not check("06.accumulation_step", wrong), wrong.__name__
    stub = check("06.accumulation_step", lambda *args: (_ for _ in ()).throw(NotImplementedError("your code here")))
    assert not stub and "NotImplementedError" in repr(stub)


def test_hints_go_from_a_nudge_to_the_recipe():
    from lmlab.exercises import hint

    def stub(*args):
        raise NotImplementedError("your code here")

    first = repr(check("06.training_loop", stub))
    assert "hint 1 of 3" in first and "clip_grad_norm_" not in first
    assert "hint 2 of 3" in repr(hint("06.training_loop"))
    assert "the recipe" in repr(hint("06.training_loop"))
