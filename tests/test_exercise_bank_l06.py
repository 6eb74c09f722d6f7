"""Lesson 06's exercises pass with their solutions and fail with the mistakes learners make."""

import math

import torch
import torch.nn.functional as F

from lmlab.exercises import check


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
    assert not result and "NotImplementedError" in repr(result) and "Hint:" in repr(result)


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
