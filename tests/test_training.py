"""The training loop: schedule, batches, learning, evaluation, exact resume, Ctrl-C, bad settings."""

import math
import os
import random
import signal

import pytest
import torch

from lmlab import checkpoints, training
from lmlab.models import GPT, GPTConfig, MaskedLM, MaskedLMConfig
from lmlab.tokenizers import CharTokenizer

WORDS = "the king is dead long live the queen a horse my kingdom for a horse to be or not".split()


def text(n_words=1500, seed=0):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "\n"


def tiny_gpt(vocab, block=16, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=32, dropout=dropout))


@pytest.fixture(scope="module")
def data():
    tok = CharTokenizer.train(text())
    ids = torch.tensor(tok.encode(text()), dtype=torch.long)
    return tok, ids[:6000], ids[6000:]


@pytest.fixture(scope="module")
def mlm_data():
    tok = CharTokenizer.train(text(), special_tokens=("[PAD]", "[MASK]"))
    ids = torch.tensor(tok.encode(text()), dtype=torch.long)
    return tok, ids[:6000], ids[6000:]


# device="cpu" everywhere: the exact-resume and loss figures are CPU figures, even on a machine with a GPU
FAST = dict(steps=40, batch_size=8, lr=3e-3, log_interval=5, eval_interval=20, eval_batches=2, progress=False, device="cpu")


# ------------------------------------------------------------------------------------ schedule, batches


def test_lr_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, steps=110)
    lrs = [training.lr_at(s, **kw) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # half way through the decay: the mean of lr and min_lr
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert training.lr_at(110, **kw) == pytest.approx(0.1)
    assert training.lr_at(0, lr=1.0, min_lr=0.0, warmup_steps=0, steps=10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="min_lr=2.0"):
        training.lr_at(0, lr=1.0, min_lr=2.0, warmup_steps=0, steps=10)


def test_batches_are_windows_of_consecutive_tokens_and_the_seed_fixes_them():
    data = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    b = training.get_batch(data, 4, 17, g)
    assert b.shape == (4, 17)
    assert torch.equal(b - b[:, :1], torch.arange(17).expand(4, 17))
    assert torch.equal(b, training.get_batch(data, 4, 17, torch.Generator().manual_seed(0)))
    assert len(set(b[:, 0].tolist())) > 1  # rows start at different offsets
    # the last possible window is reachable and never runs past the end
    ends = training.get_batch(torch.arange(20), 500, 17, g)[:, -1]
    assert ends.max() == 19


def test_clm_batch_loss_is_clm_loss_on_the_window_with_every_position_scored(data):
    from lmlab.objectives import clm_loss

    tok, ids, _ = data
    model = tiny_gpt(tok.vocab_size)
    windows = training.get_batch(ids, 3, 17, torch.Generator().manual_seed(1))  # block 16 + 1
    logits = model(windows[:, :-1])  # (3, 16, vocab): the model reads 16 tokens and predicts 16
    # clm_loss ignores the logits of the last position (they predict beyond the window), so any will do
    padded = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
    assert torch.allclose(training.batch_loss(model, windows, "clm"), clm_loss(padded, windows))


# ------------------------------------------------------------------------------------------ training


def test_training_a_gpt_lowers_the_validation_loss_and_fills_the_history(data):
    tok, train_ids, val_ids = data
    model = tiny_gpt(tok.vocab_size)
    h = training.train(model, train_ids, val_ids, tokenizer=tok, sample_tokens=20, **FAST)
    assert h.step == [5, 10, 15, 20, 25, 30, 35, 40]
    assert len(h.train_loss) == len(h.lr) == len(h.tokens) == len(h.time) == len(h.tokens_per_s) == 8
    assert h.tokens[-1] == 40 * 8 * 16
    assert h.val_step == [0, 20, 40]
    assert h.val_loss[0] == pytest.approx(math.log(tok.vocab_size), abs=0.3)  # an untrained model guesses uniformly
    assert h.val_loss[-1] < h.val_loss[0] - 0.8
    assert h.train_loss[-1] < h.train_loss[0]
    assert [s for s, _ in h.samples] == [0, 20, 40] and all(isinstance(t, str) and t for _, t in h.samples)
    assert not h.interrupted and model.training
    assert training.History.from_dict(h.to_dict()) == h


def test_training_a_masked_lm_lowers_its_loss(mlm_data):
    tok, train_ids, val_ids = mlm_data
    torch.manual_seed(0)
    model = MaskedLM(MaskedLMConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32))
    h = training.train(model, train_ids, val_ids, tokenizer=tok, sample_tokens=16, **FAST)
    assert h.val_loss[-1] < h.val_loss[0] - 0.25
    assert "[MASK]" in h.samples[0][1] and "masked tokens right" in h.samples[-1][1]


def test_masked_lm_needs_a_mask_token(data):
    tok, train_ids, _ = data  # no special tokens
    model = MaskedLM(MaskedLMConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        training.train(model, train_ids, tokenizer=tok, steps=2, progress=False)


def test_evaluate_is_deterministic_and_a_slice_is_close_to_the_whole(data):
    tok, train_ids, val_ids = data
    model = tiny_gpt(tok.vocab_size)
    training.train(model, train_ids, None, steps=30, batch_size=8, lr=3e-3, progress=False, device="cpu")
    whole = training.evaluate(model, val_ids)
    assert whole == training.evaluate(model, val_ids)
    part = training.evaluate(model, val_ids, batch_size=4, max_batches=2)
    assert part != whole and abs(part - whole) < 0.3
    # an evaluation does not switch the model out of training mode
    assert model.training


def test_the_same_seed_gives_the_same_run_and_another_seed_another(data):
    tok, train_ids, val_ids = data
    runs = [training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, seed=s, **{**FAST, "steps": 10})
            for s in (1, 1, 2)]
    assert runs[0].train_loss == runs[1].train_loss
    assert runs[0].train_loss != runs[2].train_loss


def test_a_run_interrupted_and_resumed_reproduces_the_uninterrupted_run_exactly(data, tmp_path):
    tok, train_ids, val_ids = data
    # dropout > 0 so that the saved generator state matters too
    settings = dict(steps=16, batch_size=4, lr=3e-3, log_interval=1, eval_interval=4, eval_batches=2,
                    checkpoint_interval=5, progress=False, tokenizer=tok, device="cpu")
    full_model = tiny_gpt(tok.vocab_size, dropout=0.1)
    full = training.train(full_model, train_ids, val_ids, out_dir=tmp_path / "full", **settings)

    stop_at_7 = lambda h: h.step[-1] == 7  # noqa: E731  (a step between two checkpoints)
    first = training.train(tiny_gpt(tok.vocab_size, dropout=0.1), train_ids, val_ids, out_dir=tmp_path / "cut",
                           callback=stop_at_7, **settings)
    assert first.interrupted and first.step[-1] == 7
    assert checkpoints.load_checkpoint(tmp_path / "cut").step == 7

    resumed_model = tiny_gpt(tok.vocab_size, dropout=0.1, seed=123)  # other initial weights: all come from the checkpoint
    resumed = training.train(resumed_model, train_ids, val_ids, out_dir=tmp_path / "cut", resume=True, **settings)
    assert resumed.step == full.step
    assert resumed.train_loss == full.train_loss  # exact, float for float
    assert resumed.val_loss == full.val_loss
    assert not resumed.interrupted
    for p, q in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


def test_resume_with_more_steps_continues_from_the_saved_step(data, tmp_path):
    tok, train_ids, val_ids = data
    training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path, **{**FAST, "steps": 10})
    h = training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path, resume=True,
                       steps=20, progress=False, device="cpu")
    assert h.step[0] == 5 and h.step[-1] == 20
    assert checkpoints.load_checkpoint(tmp_path).step == 20


def test_resume_into_another_architecture_or_from_nothing_is_one_sentence(data, tmp_path):
    tok, train_ids, val_ids = data
    training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path, **{**FAST, "steps": 5})
    torch.manual_seed(0)
    wider = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=64))
    with pytest.raises(ValueError, match=r"another architecture \(n_embd=32\), but the model has n_embd=64"):
        training.train(wider, train_ids, val_ids, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        training.train(tiny_gpt(tok.vocab_size), train_ids, out_dir=tmp_path / "nothing", resume=True, progress=False)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        training.train(tiny_gpt(tok.vocab_size), train_ids, resume=True, progress=False)


def test_ctrl_c_stops_after_the_current_step_and_saves_a_checkpoint(data, tmp_path):
    tok, train_ids, val_ids = data

    def press_ctrl_c(h):
        if h.step[-1] == 10:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the handler train() installed

    previous = signal.getsignal(signal.SIGINT)
    h = training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path,
                       callback=press_ctrl_c, **{**FAST, "log_interval": 5, "checkpoint_interval": 100})
    assert h.interrupted and h.step[-1] == 10
    assert checkpoints.load_checkpoint(tmp_path).step == 10
    assert signal.getsignal(signal.SIGINT) is previous  # the learner's own handler is back


def test_pick_device():
    assert training.pick_device("cpu") == torch.device("cpu")
    assert training.pick_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be"):
        training.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            training.pick_device("cuda")


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("setting, value, message", [
    ("block_size", 0, "block_size must be a positive integer, got 0"),
    ("block_size", -3, "block_size must be a positive integer, got -3"),
    ("block_size", 17, "block_size must be at most the model's context length 16, got 17"),
    ("batch_size", 0, "batch_size must be a positive integer, got 0"),
    ("lr", 0, "lr must be a number > 0, got 0"),
    ("lr", -1e-3, "lr must be a number > 0, got -0.001"),
    ("steps", 0, "steps must be a positive integer, got 0"),
    ("min_lr", 1.0, r"min_lr must be in \[0, lr=0.001\], got 1.0"),
    ("grad_clip", -1, "grad_clip must be a number >= 0"),
    ("objective", "mlm", "objective 'mlm' does not fit a gpt model"),
    ("device", "tpu", "device must be"),
    ("colour", "red", "colour is not a training setting"),
])
def test_each_bad_setting_is_one_sentence_naming_it(data, setting, value, message):
    tok, train_ids, _ = data
    with pytest.raises(ValueError, match=message) as err:
        training.train(tiny_gpt(tok.vocab_size), train_ids, progress=False, **{setting: value})
    assert "\n" not in str(err.value)


def test_a_corpus_shorter_than_one_window_is_one_sentence(data):
    tok, train_ids, val_ids = data
    with pytest.raises(ValueError, match=r"train_data holds 16 tokens but one training window needs 17 \(block_size 16 \+ 1\)"):
        training.train(tiny_gpt(tok.vocab_size), train_ids[:16], progress=False)
    with pytest.raises(ValueError, match="val_data holds 5 tokens"):
        training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids[:5], progress=False)
    with pytest.raises(ValueError, match="train_data must be a 1-D tensor"):
        training.train(tiny_gpt(tok.vocab_size), train_ids.view(2, -1), progress=False)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        training.train(tiny_gpt(tok.vocab_size), train_ids + 100, progress=False)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        training.train(tiny_gpt(tok.vocab_size), train_ids, sample_tokens=5, progress=False)


def test_a_second_ctrl_c_during_the_save_lets_the_save_finish(data, tmp_path, monkeypatch, capfd):
    tok, train_ids, val_ids = data
    real_save = checkpoints.save_checkpoint

    def impatient_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C arrives while the checkpoint is being written
        return real_save(*args, **kwargs)

    def press_ctrl_c(h):
        if h.step[-1] == 10:
            os.kill(os.getpid(), signal.SIGINT)
            monkeypatch.setattr(checkpoints, "save_checkpoint", impatient_save)

    try:
        h = training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path,
                           callback=press_ctrl_c, **{**FAST, "log_interval": 5, "checkpoint_interval": 100})
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C broke off the save")
    assert h.interrupted and checkpoints.load_checkpoint(tmp_path).step == 10
    assert "finishing the checkpoint save, then stopping" in capfd.readouterr().err


# ----------------------------------------------------------------------------------- a diverging run


def test_a_diverging_run_stops_with_one_sentence_and_keeps_the_last_finite_checkpoint(data, tmp_path):
    tok, train_ids, val_ids = data
    settings = dict(FAST, warmup_steps=0, log_interval=1, checkpoint_interval=1, tokenizer=tok, out_dir=tmp_path, lr=1e6)
    with pytest.raises(FloatingPointError, match=r"training diverged at step 2: the training loss is nan, so it stopped; "
                                                 r"the last checkpoint in '.*' \(step 1\) is kept; lower the learning "
                                                 r"rate \(now 1e\+06\)") as err:
        training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, **settings)
    assert "\n" not in str(err.value)
    ckpt = checkpoints.load_checkpoint(tmp_path)
    assert ckpt.step == 1 and all(p.isfinite().all() for p in ckpt.build_model().parameters())


def test_weights_that_overflow_with_a_finite_loss_are_never_saved(data, tmp_path):
    tok, train_ids, val_ids = data
    # lr 1e39 overflows float32 in the first update while that step's loss is still finite
    settings = dict(FAST, warmup_steps=0, log_interval=1, checkpoint_interval=1, tokenizer=tok, out_dir=tmp_path, lr=1e39)
    with pytest.raises(FloatingPointError, match=r"training diverged at step 1: the weights hold nan or inf \(in .*\), "
                                                 r"so it stopped; no checkpoint was saved"):
        training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, **settings)
    assert not (tmp_path / "checkpoint.json").exists()


def test_the_loss_is_checked_at_each_log_where_it_is_not_read_every_step(data, monkeypatch):
    tok, train_ids, _ = data
    model = tiny_gpt(tok.vocab_size)
    real_loss = training.batch_loss
    calls = []

    def loss_turning_nan(*args, **kwargs):  # the 3rd step's loss is NaN, as a GPU run would meet it
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(training, "batch_loss", loss_turning_nan)
    monkeypatch.setattr(training, "_loss_read_every_step", lambda device, dist_info: False)  # as on a GPU
    with pytest.raises(FloatingPointError, match=r"training diverged at step 5: the training loss is not finite"):
        training.train(model, train_ids, steps=20, batch_size=4, log_interval=5, checkpoint_interval=100, progress=False,
                       device="cpu")


def test_seeds_cover_the_whole_range_of_torch_generators(data):
    tok, train_ids, _ = data
    for seed in (2**40, 2**64 - 1):  # the per-step seeds wrap around instead of overflowing
        h = training.train(tiny_gpt(tok.vocab_size), train_ids, seed=seed, **{**FAST, "steps": 2, "log_interval": 1})
        assert len(h.train_loss) == 2
    for seed in (2**64, -1, 1.5):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got"):
            training.train(tiny_gpt(tok.vocab_size), train_ids, seed=seed, progress=False)


def test_a_batch_that_cannot_fit_in_memory_is_one_sentence_before_anything_is_allocated(data):
    tok, train_ids, _ = data
    with pytest.raises(ValueError, match=r"batch_size 1000000000000 of 16-token windows needs at least .* PB for one "
                                         r"step, more than the .* left on cpu; use a smaller batch_size"):
        training.train(tiny_gpt(tok.vocab_size), train_ids, batch_size=10**12, progress=False, device="cpu")


def test_a_damaged_history_or_train_config_in_the_checkpoint_is_one_sentence(data, tmp_path):
    import json

    tok, train_ids, val_ids = data
    training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path, **{**FAST, "steps": 5})
    good = json.loads((tmp_path / "checkpoint.json").read_text())
    cases = [
        (lambda r: r["history"].update(train_loss=["a"]), r"has a damaged history\.train_loss must be a list of finite numbers"),
        (lambda r: r["history"].update(val_loss=[1.0, 2.0, 3.0, 4.0]), r"one per evaluation in each of val_step"),
        (lambda r: r["history"].update(samples=[[0]]), r"history\.samples must be a list of \[step, text\] pairs"),
        (lambda r: r["train_config"].update(colour="red"), r"has train_config\.colour, which is not a training setting"),
        (lambda r: r["train_config"].update(steps="many"), r"steps must be a positive integer, got 'many'"),
        (lambda r: r["extra"].update(partial_loss=[1.0]), r"has extra\.partial_loss \[1\.0\]; expected"),
    ]
    for change, message in cases:
        record = json.loads(json.dumps(good))
        change(record)
        (tmp_path / "checkpoint.json").write_text(json.dumps(record))
        with pytest.raises(ValueError, match=message) as err:
            training.train(tiny_gpt(tok.vocab_size), train_ids, val_ids, tokenizer=tok, out_dir=tmp_path, resume=True,
                           progress=False, device="cpu")
        assert "\n" not in str(err.value)


def test_a_run_cleans_the_temporary_files_a_killed_save_left_when_it_starts(data, tmp_path):
    tok, train_ids, _ = data
    leftovers = [tmp_path / ".tmpXy12Ab", tmp_path / ".model-00000005.safetensors.tmp-4242"]
    for p in leftovers:
        p.write_bytes(b"killed mid-write")

    def look(h):
        assert not any(p.exists() for p in leftovers)  # gone before the first save

    training.train(tiny_gpt(tok.vocab_size), train_ids, tokenizer=tok, out_dir=tmp_path, callback=look,
                   **{**FAST, "steps": 5, "checkpoint_interval": 5, "log_interval": 1})


def test_a_model_without_trainable_parameters_is_one_sentence_not_an_index_error():
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=8)).requires_grad_(False)
    with pytest.raises(ValueError, match=r"model has no parameter that requires a gradient .* call model.requires_grad_\(\)"):
        training.make_optimizer(model, training.TrainConfig())
    assert training.make_optimizer(model.requires_grad_(), training.TrainConfig()).param_groups[0]["params"]
