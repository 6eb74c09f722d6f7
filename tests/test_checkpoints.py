"""Checkpoints: round trip, no pickle, atomic saves (a real process killed mid-save), one-sentence errors."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lmlab import checkpoints
from lmlab.models import GPT, GPTConfig, MaskedLM, MaskedLMConfig
from lmlab.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXT = "to be, or not to be: that is the question\n"


def tiny_gpt(vocab=20, n_embd=16, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=8, n_layer=1, n_head=2, n_embd=n_embd))


def trained_state():
    """A model, tokenizer and optimizer that have taken two steps, so the optimizer has moments."""
    tok = CharTokenizer.train(TEXT)
    model = tiny_gpt(tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.tensor([tok.encode(TEXT[:9]), tok.encode(TEXT[9:18])])
    for _ in range(2):
        logits = model(x[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()
    return model, tok, opt


def test_round_trip_restores_weights_tokenizer_optimizer_and_generator_state(tmp_path):
    model, tok, opt = trained_state()
    torch.manual_seed(5)
    rng = checkpoints.get_rng_state()
    expected_draw = torch.rand(3)
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, optimizer=opt, step=2, train_config={"lr": 0.01},
                                history={"step": [1, 2]}, rng_state=rng, extra={"partial_loss": [1.5, 1]},
                                metadata={"command": "test"})
    ckpt = checkpoints.load_checkpoint(tmp_path)
    assert (ckpt.kind, ckpt.step, ckpt.train_config, ckpt.history) == ("gpt", 2, {"lr": 0.01}, {"step": [1, 2]})
    assert ckpt.metadata == {"command": "test"} and ckpt.extra == {"partial_loss": [1.5, 1]}

    loaded = ckpt.build_model()
    for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    assert loaded.head.weight is loaded.tok_emb.weight  # tied weights stay tied
    assert not loaded.training
    assert ckpt.tokenizer.to_dict() == tok.to_dict()

    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt.optimizer_state)
    before, after = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert list(before) == list(after)
    for i in before:
        assert before[i].keys() == after[i].keys() and all(torch.equal(before[i][k], after[i][k]) for k in before[i])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]

    checkpoints.set_rng_state(ckpt.rng_state)
    assert torch.equal(torch.rand(3), expected_draw)


def test_a_checkpoint_is_json_and_safetensors_only_and_loading_never_unpickles(tmp_path, monkeypatch):
    model, tok, opt = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, optimizer=opt, step=2, rng_state=checkpoints.get_rng_state())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.json", "model-00000002.safetensors", "state-00000002.safetensors"]
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    assert record["format"] == "lmlab-checkpoint" and record["model_config"]["n_embd"] == 16

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must load without pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    ckpt = checkpoints.load_checkpoint(tmp_path)
    ckpt.build_model(), ckpt.optimizer_state, ckpt.rng_state, ckpt.tokenizer


def test_load_model_gives_model_and_tokenizer_and_works_for_a_masked_lm(tmp_path):
    tok = CharTokenizer.train(TEXT, special_tokens=("[PAD]", "[MASK]"))
    torch.manual_seed(0)
    mlm = MaskedLM(MaskedLMConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    checkpoints.save_checkpoint(tmp_path, mlm, tokenizer=tok)
    model, tokenizer = checkpoints.load_model(tmp_path)
    assert isinstance(model, MaskedLM) and tokenizer.special_ids == {"[PAD]": 0, "[MASK]": 1}
    x = torch.tensor([tok.encode("to [MASK]e")])
    assert torch.equal(model(x), mlm.eval()(x))


def test_saving_again_replaces_the_old_files_and_keeps_one_consistent_set(tmp_path):
    model, tok, opt = trained_state()
    for step in (1, 2, 2):  # the same step twice: must not overwrite the files the live JSON names
        with torch.no_grad():
            model.tok_emb.weight.fill_(step)
        checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, optimizer=opt, step=step)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.json", "model-00000002-1.safetensors", "state-00000002-1.safetensors"]
    assert checkpoints.load_checkpoint(tmp_path).build_model().tok_emb.weight.eq(2).all()


def test_leftovers_of_a_killed_save_do_not_matter_and_are_cleaned_up(tmp_path):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, step=1)
    (tmp_path / ".model-00000002.safetensors.tmp-99999").write_bytes(b"half a file")  # killed while writing
    (tmp_path / "model-00000002.safetensors").write_bytes(b"renamed but never committed")  # killed before the JSON
    assert checkpoints.load_checkpoint(tmp_path).step == 1
    checkpoints.load_checkpoint(tmp_path).build_model()
    checkpoints.save_checkpoint(tmp_path, model, step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "model-00000003.safetensors"]


KILLED_SAVER = textwrap.dedent("""
    import sys, torch
    from lmlab import checkpoints
    from lmlab.models import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=512, block_size=64, n_layer=4, n_head=4, n_embd=256))  # ~3.3M weights, 13 MB
    opt = torch.optim.AdamW(model.parameters())
    first = int(sys.argv[2])
    for step in range(first, first + 1000):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)  # every weight tells which save it belongs to
        print("begin", step, flush=True)
        checkpoints.save_checkpoint(sys.argv[1], model, step=step)
        print("end", step, flush=True)
""")


@pytest.mark.slow
def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(KILLED_SAVER)
    out = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    interrupted = 0
    first = 1
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(out), str(first)], stdout=subprocess.PIPE, text=True, env=env)
        ended = None
        for line in proc.stdout:  # let it finish two saves, then kill it as soon as the third begins
            word, step = line.split()
            if word == "end":
                ended = int(step)
            elif int(step) == first + 2:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        ckpt = checkpoints.load_checkpoint(out)
        assert ckpt.step in (ended, ended + 1)  # the last finished save (or the one killed just after its commit)
        interrupted += ckpt.step == ended
        model = ckpt.build_model()
        assert all(p.eq(ckpt.step).all() for p in model.parameters())  # weights and JSON from the same save
        first = ckpt.step + 1
    assert interrupted >= 1  # at least one kill really landed inside a save


def test_missing_or_broken_checkpoints_are_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*expected a folder holding checkpoint.json"):
        checkpoints.load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="path must be a str or a path"):
        checkpoints.load_checkpoint(3)
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, step=1)
    weights = next(tmp_path.glob("model-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="does not hold weights for this model|not a readable safetensors"):
        checkpoints.load_checkpoint(tmp_path).build_model()
    weights.unlink()
    with pytest.raises(ValueError, match="is incomplete: model-00000001.safetensors, named in checkpoint.json, is missing"):
        checkpoints.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a valid lmlab checkpoint"):
        checkpoints.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="is not a valid lmlab checkpoint: its format field is 'something else'"):
        checkpoints.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="is a file; a checkpoint is a folder"):
        checkpoints.save_checkpoint(tmp_path / "checkpoint.json", model)


def test_a_checkpoint_for_another_architecture_vocabulary_or_tokenizer_is_one_sentence(tmp_path):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok)
    ckpt = checkpoints.load_checkpoint(tmp_path)
    cases = [
        (tiny_gpt(tok.vocab_size, n_embd=32), r"was made for another architecture \(n_embd=16\), but the model has n_embd=32"),
        (tiny_gpt(tok.vocab_size + 5), f"was made for a vocabulary of {tok.vocab_size} tokens, but the model has {tok.vocab_size + 5}"),
        (MaskedLM(MaskedLMConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)),
         "holds a gpt model, not a masked_lm"),
    ]
    for other, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            checkpoints.load_weights(other, tmp_path)
        assert "\n" not in str(err.value)
    other_tok = CharTokenizer(list(reversed(tok.vocab)))
    with pytest.raises(ValueError, match="was made with another tokenizer"):
        checkpoints.check_compatible(ckpt, tiny_gpt(tok.vocab_size), other_tok)
    checkpoints.check_compatible(ckpt, tiny_gpt(tok.vocab_size), tok)  # the right one passes
