"""The training plots draw a History from `lmlab.training` (or its dict) and reject bad input in one sentence."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from lmlab import viz
from lmlab.models import GPT, GPTConfig
from lmlab.training import History, lr_at, train


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def made_up_history():
    steps = list(range(10, 110, 10))
    return History(step=steps, train_loss=[4.0 - s / 50 for s in steps],
                   lr=[lr_at(s - 1, lr=1e-3, min_lr=1e-4, warmup_steps=20, steps=100) for s in steps],
                   val_step=[0, 50, 100], val_loss=[4.2, 3.1, 2.2])


def test_plot_training_draws_train_and_validation_loss_and_the_learning_rate():
    h = made_up_history()
    loss_ax, lr_ax = viz.plot_training(h)
    train_line, val_line = loss_ax.lines
    assert list(train_line.get_xdata()) == h.step and list(train_line.get_ydata()) == h.train_loss
    assert list(val_line.get_xdata()) == h.val_step and list(val_line.get_ydata()) == h.val_loss
    (lr_line,) = lr_ax.lines
    assert list(lr_line.get_ydata()) == h.lr
    assert lr_ax.get_ylim()[0] == 0 and lr_ax.get_ylim()[1] > max(h.lr)


def test_plot_training_takes_the_dict_too_and_draws_on_given_axes():
    fig, axes = plt.subplots(1, 2)
    returned = viz.plot_training(made_up_history().to_dict(), axes=axes)
    assert list(returned) == list(axes) and len(axes[0].lines) == 2


def test_plot_training_of_a_real_run_shows_its_warmup_then_decay():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=8))
    ids = torch.randint(5, (200,), generator=torch.Generator().manual_seed(0))
    h = train(model, ids, ids[:50], steps=20, batch_size=2, warmup_steps=5, log_interval=1, eval_interval=10,
              eval_batches=1, progress=False, device="cpu")
    _, lr_ax = viz.plot_training(h)
    lrs = list(lr_ax.lines[0].get_ydata())
    peak = lrs.index(max(lrs))
    assert peak == 4 and lrs[:5] == sorted(lrs[:5]) and lrs[4:] == sorted(lrs[4:], reverse=True)


def test_a_run_without_validation_data_plots_the_training_loss_only():
    h = made_up_history()
    h.val_step, h.val_loss = [], []
    loss_ax, _ = viz.plot_training(h)
    assert len(loss_ax.lines) == 1


@pytest.mark.parametrize("history, message", [
    ([1, 2, 3], "history must be a training History or its dict, got list"),
    ({"step": [1, 2], "train_loss": [3.0], "lr": [1e-3, 1e-3]}, "history must have one step per train_loss, got 2 and 1"),
    ({"step": [1], "train_loss": [3.0], "lr": [1e-3], "val_step": [0], "val_loss": []},
     "history must have one val_step per val_loss, got 1 and 0"),
    (History(), "history must hold at least one logged step"),
])
def test_bad_histories_are_one_sentence(history, message):
    with pytest.raises(ValueError, match=message) as err:
        viz.plot_training(history)
    assert "\n" not in str(err.value)


def test_axes_must_be_two():
    with pytest.raises(ValueError, match="axes must be two matplotlib Axes"):
        viz.plot_training(made_up_history(), axes=[plt.gca()])
