"""The command line: help on every flag, training on one's own text end to end, resume, Ctrl-C, bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmlab import checkpoints
from lmlab.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
WORDS = "the king is dead long live the queen a horse my kingdom for a horse to be or not".split()
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-batches", "2", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(120)]
    path = tmp_path_factory.mktemp("data") / "my_text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, text=True, env=ENV,
                          cwd=kwargs.pop("cwd", ROOT), timeout=kwargs.pop("timeout", 120), **kwargs)


def test_every_flag_of_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "sample", "export", "fetch"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        shown = capsys.readouterr().out
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in shown
    for flag in ("--data", "--tokenizer", "--out", "--objective", "--steps", "--batch-size", "--lr", "--eval-interval",
                 "--device", "--seed", "--resume", "--n-layer", "--n-embd", "--block-size"):
        assert flag in commands["train"].format_help()
    for flag in ("--checkpoint", "--prompt", "--temperature", "--top-k", "--top-p", "--max-new-tokens", "--seed"):
        assert flag in commands["sample"].format_help()


def test_training_on_your_own_text_file_then_sampling_works_end_to_end(text_file, tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", "--data", str(text_file), "--out", str(out), "--steps", "20", "--eval-interval", "10",
                   "--sample-tokens", "10", *TINY)
    assert done.returncode == 0, done.stderr
    assert "validation loss" in done.stderr and "Traceback" not in done.stderr
    ckpt = checkpoints.load_checkpoint(out)
    assert ckpt.step == 20 and ckpt.metadata["args"]["data"] == str(text_file)
    assert ckpt.metadata["commands"][0].startswith("python -m lmlab train --data")
    assert ckpt.history["val_step"] == [0, 10, 20] and ckpt.history["val_loss"][-1] < ckpt.history["val_loss"][0]

    sample = run_cli("sample", "--checkpoint", str(out), "--prompt", "the king", "--max-new-tokens", "30", "--seed", "3")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("the king") and len(sample.stdout.rstrip("\n")) == len("the king") + 30
    again = run_cli("sample", "--checkpoint", str(out), "--prompt", "the king", "--max-new-tokens", "30", "--seed", "3",
                    "--top-k", "5", "--top-p", "0.9", "--temperature", "0")
    assert again.returncode == 0, again.stderr


def test_the_same_seed_samples_the_same_text(text_file, tmp_path, capsys):
    assert main(["train", "--data", str(text_file), "--out", str(tmp_path), "--steps", "5", "--sample-tokens", "0", *TINY]) == 0
    texts = []
    for seed in ("1", "1", "2"):
        assert main(["sample", "--checkpoint", str(tmp_path), "--prompt", "a", "--max-new-tokens", "40", "--seed", seed]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] != texts[2]


def test_bpe_tokenizer_and_resume_with_more_steps(text_file, tmp_path, capsys):
    args = ["train", "--data", str(text_file), "--out", str(tmp_path), "--tokenizer", "bpe", "--vocab-size", "300",
            "--sample-tokens", "0", *TINY]
    assert main([*args, "--steps", "6"]) == 0
    ckpt = checkpoints.load_checkpoint(tmp_path)
    assert ckpt.tokenizer_dict["type"] == "bpe" and ckpt.model_config["vocab_size"] == 300
    # the same --out again without --resume would overwrite a run: refused
    assert main([*args, "--steps", "6"]) == 2
    assert "already holds a checkpoint; add --resume" in capsys.readouterr().err
    # resume takes every setting from the run; only --steps changes
    assert main(["train", "--out", str(tmp_path), "--resume", "--steps", "12", "--no-progress", "--device", "cpu"]) == 0
    ckpt = checkpoints.load_checkpoint(tmp_path)
    assert ckpt.step == 12 and ckpt.metadata["args"]["tokenizer"] == "bpe" and len(ckpt.metadata["commands"]) == 2
    assert main(["train", "--out", str(tmp_path), "--resume", "--n-layer", "3"]) == 2
    assert "--n-layer 3 differs from the run being resumed (1)" in capsys.readouterr().err


def test_masked_lm_trains_and_fills_in_mask(text_file, tmp_path, capsys):
    assert main(["train", "--data", str(text_file), "--out", str(tmp_path), "--objective", "mlm", "--steps", "10",
                 "--sample-tokens", "16", "--eval-interval", "10", *TINY]) == 0
    ckpt = checkpoints.load_checkpoint(tmp_path)
    assert ckpt.kind == "masked_lm" and ckpt.tokenizer.special_ids == {"[PAD]": 0, "[MASK]": 1}
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path), "--prompt", "the k[MASK]ng is d[MASK]ad", "--seed", "0"]) == 0
    filled = capsys.readouterr().out.strip()
    assert len(filled) == len("the king is dead") and "[MASK]" not in filled and filled.startswith("the k")
    assert main(["sample", "--checkpoint", str(tmp_path), "--prompt", "no mask here"]) == 2
    assert "--prompt must contain [MASK]" in capsys.readouterr().err


def test_export_writes_a_small_checkpoint_with_its_measured_loss_and_a_readme(text_file, tmp_path, capsys):
    run, shipped = tmp_path / "run", tmp_path / "shipped"
    assert main(["train", "--data", str(text_file), "--out", str(run), "--steps", "5", "--sample-tokens", "0", *TINY]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(shipped), "--slice-batches", "2", "--note", "a test"]) == 0
    ckpt = checkpoints.load_checkpoint(shipped)
    assert ckpt.files["state"] is None and ckpt.optimizer_meta is None  # weights only
    m = ckpt.metadata
    assert m["val_loss"] > 0 and m["val_loss_slice"] > 0 and m["steps"] == 5 and m["notes"] == ["a test"]
    assert m["commands"][0].startswith("python -m lmlab train") and m["commands"][1].startswith("python -m lmlab export")
    readme = (shipped / "README.md").read_text()
    assert f"{m['val_loss']:.4f}" in readme and m["commands"][0] in readme


@pytest.mark.parametrize("flags, message", [
    (["--block-size", "0"], "--block-size must be a positive integer, got 0"),
    (["--block-size", "-4"], "--block-size must be a positive integer, got -4"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "-0.001"], "--lr must be a finite number > 0, got -0.001"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
    (["--steps", "0"], r"--steps must be an integer in \[1, 1,000,000,000\], got 0"),
    (["--steps", str(10**15)], r"--steps must be an integer in \[1, 1,000,000,000\], got 1000000000000000"),
    (["--seed", str(2**64)], r"--seed must be an integer in \[0, 2\*\*64\), got 18446744073709551616"),
    (["--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*64\), got -1"),
    (["--sample-tokens", str(10**15)], r"--sample-tokens must be an integer in \[0, 1,000,000\]"),
    (["--tokenizer", "bpe", "--vocab-size", "100"], r"--vocab-size must be between 256 \(the 256 bytes\) and 1,000,000, got 100"),
    (["--tokenizer", "bpe", "--vocab-size", str(10**12)], r"--vocab-size must be between 256 .* got 1000000000000"),
    (["--tokenizer", "bpe", "--vocab-size", "257", "--objective", "mlm"],
     r"--vocab-size must be between 258 \(256 bytes \+ \[PAD\] and \[MASK\], which --objective mlm needs\)"),
    (["--n-embd", "1000000", "--n-head", "4"],
     r"--n-embd 1000000 with --n-layer 4 makes a model of about 48,000,128,000,000 parameters, which needs at least .* TB "
     r"to train, more than the .* of memory on cpu; choose a smaller --n-embd or --n-layer"),
    (["--batch-size", str(10**9)],
     r"--batch-size 1000000000 with --block-size 128 needs at least .* for one training step, more than the .* of memory "
     r"left on cpu; use a smaller --batch-size"),
    (["--n-embd", "30", "--n-head", "4"], r"--n-embd \(30\) must be divisible by --n-head \(4\)"),
    (["--dropout", "1.5"], r"--dropout must be in \[0.0, 1.0\), got 1.5"),
    (["--block-size", "5000"], "--block-size 5000 is too long for the training text, which has only"),
    (["--device", "tpu"], "--device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
])
def test_bad_settings_are_one_sentence_naming_the_flag_with_exit_status_2(text_file, tmp_path, capsys, flags, message):
    code = main(["train", "--data", str(text_file), "--out", str(tmp_path / "x"), "--steps", "3", "--no-progress",
                 "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "x" / "checkpoint.json").exists()


def test_bad_data_and_checkpoints_are_one_sentence_without_a_traceback(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be\n")
    cases = [
        (["train", "--data", str(short), "--out", str(tmp_path / "o")], "--block-size 128 is too long for the training text"),
        (["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")], "does not exist"),
        (["train", "--out", str(tmp_path / "o")], "--data is required"),
        (["train", "--out", str(tmp_path / "o"), "--resume"], "no checkpoint at"),
        (["sample", "--checkpoint", str(tmp_path / "nothing")], "no checkpoint at"),
        (["sample", "--checkpoint", str(tmp_path / "nothing"), "--temperature", "-1"], r"--temperature must be a finite number >= 0 \(0 is greedy\), got -1.0"),
        (["sample", "--checkpoint", str(tmp_path / "nothing"), "--top-p", "1.5"], r"--top-p must be in \(0, 1\], got 1.5"),
        (["sample", "--checkpoint", str(tmp_path / "nothing"), "--min-p", "1.5"], r"--min-p must be in \[0, 1\], got 1.5"),
        (["sample", "--checkpoint", str(tmp_path / "nothing"), "--seed", str(2**64)], r"--seed must be an integer in \[0, 2\*\*64\)"),
        (["sample", "--checkpoint", str(tmp_path / "nothing"), "--max-new-tokens", str(10**15)],
         r"--max-new-tokens must be an integer in \[0, 1,000,000\], got 1000000000000000"),
        (["sample", "--checkpoint", "shakespeare-char", "--device", "tpu"], r"--device must be 'auto', 'cpu'"),
    ]
    for args, message in cases[:1]:  # one through a real process: exit status and stderr as a user sees them
        done = run_cli(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1
    import re

    for args, message in cases[1:]:
        code, err = _main_capturing(args)
        assert code == 2 and re.search(message, err) and err.count("\n") == 1, (args, err)


def _main_capturing(args):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


@pytest.mark.slow
def test_ctrl_c_stops_training_cleanly_after_saving_the_last_checkpoint(text_file, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmlab", "train", "--data", str(text_file), "--out", str(out), "--steps", "1000000",
         "--eval-interval", "1000000", "--checkpoint-interval", "1000000", "--sample-tokens", "3", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    assert proc.stdout.readline().startswith("--- step 0")  # printed once training has started
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped at step" in stdout + stderr and "--resume" in stderr
    ckpt = checkpoints.load_checkpoint(out)  # saved on the way out, although no checkpoint step was reached
    assert 0 < ckpt.step < 1000000
    record = json.loads((out / "checkpoint.json").read_text())
    assert record["history"]["interrupted"] is True
    # and the run continues from there
    done = run_cli("train", "--out", str(out), "--resume", "--steps", str(ckpt.step + 3), "--no-progress", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert checkpoints.load_checkpoint(out).step == ckpt.step + 3


# ------------------------------------------------------------------------------- hardening (issue 12)


def _imports_torch(*args):
    """(exit status, whether torch was imported) of `python -X importtime -m lmlab ARGS`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lmlab", *args], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=120)
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done.returncode, "torch" in imported, done.stderr


def test_help_and_bad_flags_answer_without_importing_torch(tmp_path):
    for args, status in [(["--help"], 0), (["train", "--help"], 0), (["sample", "--help"], 0),
                         (["train", "--out", str(tmp_path), "--data", "x.txt", "--steps", "0"], 2),
                         (["train", "--out", str(tmp_path), "--data", "x.txt", "--seed", str(2**64)], 2),
                         (["train", "--out", str(tmp_path), "--step", "5"], 2),
                         (["sample", "--checkpoint", str(tmp_path), "--top-p", "2"], 2)]:
        code, torch_imported, err = _imports_torch(*args)
        assert code == status and not torch_imported, (args, err[-500:])
        assert "Traceback" not in err


def test_ctrl_c_while_torch_is_being_imported_exits_130_without_a_traceback(text_file, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "train", "--data", str(text_file), "--out", str(tmp_path),
                             *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    time.sleep(0.5)  # torch takes seconds to import; wherever the signal lands, the answer is the same
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr


def test_flags_are_never_abbreviated(text_file, tmp_path, capsys):
    for args in (["train", "--data", str(text_file), "--out", str(tmp_path), "--step", "5"],
                 ["sample", "--checkpoint", "shakespeare-char", "--temp", "0"],
                 ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "e"), "--slice", "2"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
        assert "unrecognized arguments: " + args[-2] in capsys.readouterr().err


def test_a_bpe_vocab_size_too_small_is_refused_with_the_bound_the_help_states(text_file, tmp_path, capsys):
    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "from 256" in " ".join(train_help.split()) and "258 with --objective mlm" in " ".join(train_help.split())
    base = ["train", "--data", str(text_file), "--out", str(tmp_path), "--tokenizer", "bpe", "--sample-tokens", "0", *TINY]
    assert main([*base, "--vocab-size", "255", "--steps", "1"]) == 2
    assert "--vocab-size must be between 256" in capsys.readouterr().err
    assert main([*base, "--vocab-size", "256", "--steps", "1"]) == 0  # the bound is the truth: 256 trains


def test_a_prompt_with_unseen_characters_is_one_clean_sentence_before_anything_is_printed(text_file, tmp_path):
    assert main(["train", "--data", str(text_file), "--out", str(tmp_path), "--steps", "2", "--sample-tokens", "0", *TINY]) == 0
    done = run_cli("sample", "--checkpoint", str(tmp_path), "--prompt", "Café ☕ time")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("error: --prompt contains 3 character(s) that the model never saw in training ('C', 'é', '☕'); "
                           "leave them out, or train a model on a text that has them (python -m lmlab train --data ...)\n")


def test_sample_takes_min_p(text_file, tmp_path, capsys):
    assert main(["train", "--data", str(text_file), "--out", str(tmp_path), "--steps", "2", "--sample-tokens", "0", *TINY]) == 0
    capsys.readouterr()
    outs = []
    for min_p in ("1.0", "1.0", "0.0"):
        assert main(["sample", "--checkpoint", str(tmp_path), "--prompt", "the", "--max-new-tokens", "20", "--seed", "1",
                     "--min-p", min_p, "--temperature", "1.5"]) == 0
        outs.append(capsys.readouterr().out)
    greedy = main(["sample", "--checkpoint", str(tmp_path), "--prompt", "the", "--max-new-tokens", "20", "--temperature", "0"])
    assert greedy == 0 and outs[0] == outs[1] == capsys.readouterr().out  # min-p 1 keeps only the most likely token
    assert outs[2] != outs[0]


# This command prints whatever lmlab.decoding.stream yields, which holds back an incomplete UTF-8 character
# and drops one still unfinished when generation ends.
def test_a_sample_cut_in_the_middle_of_a_character_never_prints_a_replacement_character(text_file, tmp_path, capsys):
    import torch

    assert main(["train", "--data", str(text_file), "--out", str(tmp_path), "--tokenizer", "bpe", "--vocab-size", "260",
                 "--steps", "1", "--sample-tokens", "0", *TINY]) == 0
    model, tok = checkpoints.load_model(tmp_path)
    first_byte = tok.encode("☕")[0]  # the first of its three bytes: alone it is no character yet
    assert tok.decode([first_byte]) == "\ufffd"
    with torch.no_grad():  # make the model predict that byte with certainty
        direction = torch.nn.functional.one_hot(torch.tensor(0), model.config.n_embd).float() * 10
        model.tok_emb.weight[first_byte] = direction
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(direction)
    checkpoints.save_checkpoint(tmp_path / "forced", model, tokenizer=tok)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "forced"), "--prompt", "the", "--max-new-tokens", "1",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out == "the\n"


def test_a_one_character_data_file_is_one_sentence(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a")
    code, err = _main_capturing(["train", "--data", str(one), "--out", str(tmp_path / "o")])
    assert code == 2 and err.count("\n") == 1
    assert f"--data '{one}' holds only 1 character; a text to train on needs one window" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, err = _main_capturing(["train", "--data", str(empty), "--out", str(tmp_path / "o")])
    assert code == 2 and err == f"error: --data '{empty}' is empty (or only whitespace); a corpus needs some text\n"


def test_export_refuses_to_overwrite_a_run_and_its_resume_state(text_file, tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        assert main(["train", "--data", str(text_file), "--out", str(folder), "--steps", "2", "--sample-tokens", "0", *TINY]) == 0
    before = sorted(p.name for p in run.iterdir())
    assert any(name.startswith("state-") for name in before)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run), "--out", str(run)]) == 2
    assert "--out must be another folder than --checkpoint" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(run / "checkpoint.json"), "--out", str(run) + "/"]) == 2
    assert main(["export", "--checkpoint", str(run), "--out", str(other)]) == 2
    assert "holds a training run with its optimizer and generator state" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--no-progress", "--device", "cpu"]) == 0


def test_a_diverging_run_exits_1_and_keeps_the_last_finite_checkpoint(text_file, tmp_path, capsys):
    import torch

    code = main(["train", "--data", str(text_file), "--out", str(tmp_path), "--steps", "30", "--lr", "1e6",
                 "--warmup-steps", "0", "--checkpoint-interval", "1", "--sample-tokens", "0", *TINY])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "error: training diverged at step " in err and "the training loss is nan" in err and "is kept" in err
    model, _ = checkpoints.load_model(tmp_path)
    assert all(p.isfinite().all() for p in model.parameters())
