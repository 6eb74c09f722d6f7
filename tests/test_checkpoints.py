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


# ------------------------------------------------------------------------------------ crafted files


def training_run(folder):
    """A checkpoint as `training.train` writes it: weights, AdamW moments, generator state."""
    from lmlab import training

    tok = CharTokenizer.train(TEXT)
    ids = torch.tensor(tok.encode(TEXT * 20))
    training.train(tiny_gpt(tok.vocab_size), ids, tokenizer=tok, out_dir=folder, steps=3, batch_size=2, block_size=8,
                   log_interval=1, progress=False, device="cpu")
    return tok, ids


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def craft_state(folder, change):
    """Rewrite the run's state file in place with `change(tensors)` applied."""
    import safetensors.torch as st

    file = folder / json.loads((folder / "checkpoint.json").read_text())["files"]["state"]
    tensors = st.load_file(str(file))
    change(tensors)
    st.save_file(tensors, str(file))


def _drop(key):
    return lambda t: t.pop(key)


CRAFTED_STATES = [
    ("exp_avg of the wrong shape", lambda t: t.update({"optimizer.0.exp_avg": torch.zeros(5)}),
     r"optimizer\.0\.exp_avg has shape \(5,\), but its parameter has shape \(\d+, 16\)"),
    ("exp_avg of the wrong dtype", lambda t: t.update({"optimizer.0.exp_avg": t["optimizer.0.exp_avg"].double()}),
     r"optimizer\.0\.exp_avg has dtype torch\.float64, but its parameter has dtype torch\.float32"),
    ("a missing moment", _drop("optimizer.1.exp_avg_sq"),
     r"optimizer state of parameter 1 lacks 'exp_avg_sq'"),
    ("an extra moment", lambda t: t.update({"optimizer.1.momentum": torch.zeros(1)}),
     r"optimizer state of parameter 1 has 'momentum', which AdamW does not keep"),
    ("an extra tensor", lambda t: t.update({"weights.evil": torch.zeros(1)}),
     r"holds an unexpected tensor 'weights\.evil'"),
    ("state for a parameter the model lacks", lambda t: t.update({"optimizer.99.exp_avg": torch.zeros(1)}),
     r"holds optimizer state for parameter 99, but the optimizer has parameters 0 to \d+"),
    ("a step of the wrong shape", lambda t: t.update({"optimizer.0.step": torch.zeros(1000)}),
     r"optimizer\.0\.step must be a scalar float tensor \(shape \(\)\), got shape \(1000,\)"),
    ("a negative second moment", lambda t: t["optimizer.2.exp_avg_sq"].fill_(-1.0),
     r"optimizer\.2\.exp_avg_sq holds negative values, but a second moment is a mean of squares"),
    ("a NaN moment", lambda t: t["optimizer.2.exp_avg"].fill_(float("nan")),
     r"optimizer\.2\.exp_avg holds non-finite values"),
    ("a generator state of the wrong size", lambda t: t.update({"rng.torch": t["rng.torch"][:100].clone()}),
     r"rng\.torch must be a uint8 tensor of shape \(5056,\), got uint8 of shape \(100,\)"),
    ("a generator state of the wrong dtype", lambda t: t.update({"rng.torch": t["rng.torch"].float()}),
     r"rng\.torch must be a uint8 tensor of shape \(5056,\), got float32 of shape \(5056,\)"),
    ("a garbage generator state", lambda t: t.update({"rng.torch": torch.full((5056,), 255, dtype=torch.uint8)}),
     r"rng\.torch is not a valid state of torch's generator"),
    ("a missing generator state", _drop("rng.torch"), r"holds no generator state rng\.torch"),
]


@pytest.mark.parametrize("what, change, message", CRAFTED_STATES, ids=[c[0] for c in CRAFTED_STATES])
def test_a_crafted_state_file_stops_resuming_with_one_sentence_and_leaves_the_checkpoint_alone(tmp_path, what, change, message):
    from lmlab import training

    tok, ids = training_run(tmp_path)
    craft_state(tmp_path, change)
    before = files_of(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        training.train(tiny_gpt(tok.vocab_size), ids, tokenizer=tok, out_dir=tmp_path, resume=True, steps=6,
                       progress=False, device="cpu")
    assert "\n" not in str(err.value)
    assert files_of(tmp_path) == before  # nothing saved over the last checkpoint


def test_crafted_optimizer_settings_in_the_json_are_refused(tmp_path):
    from lmlab import training

    tok, ids = training_run(tmp_path)
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    cases = [
        (lambda r: r["optimizer"]["param_groups"].pop(), r"holds 1 optimizer parameter groups, but the optimizer has 2"),
        (lambda r: r["optimizer"]["param_groups"][0]["params"].append(0),
         r"optimizer parameter group 0 holds \d+ parameters, but the optimizer's holds \d+"),
        (lambda r: r["optimizer"]["param_groups"][0].update(eps=-1.0), r"optimizer setting 'eps' of group 0 must be"),
        (lambda r: r["optimizer"]["param_groups"][1].update(amsgrad=True),
         r"optimizer setting 'amsgrad' of group 1 is True, but the optimizer has False"),
        (lambda r: r["optimizer"]["param_groups"][1].pop("betas"),
         r"optimizer parameter group 1 lacks the setting 'betas'"),
    ]
    for change, message in cases:
        crafted = json.loads(json.dumps(record))
        change(crafted)
        (tmp_path / "checkpoint.json").write_text(json.dumps(crafted))
        with pytest.raises(ValueError, match=message):
            training.train(tiny_gpt(tok.vocab_size), ids, tokenizer=tok, out_dir=tmp_path, resume=True, steps=6,
                           progress=False, device="cpu")


def test_crafted_weights_are_refused_before_anything_is_loaded(tmp_path):
    import safetensors.torch as st

    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok)
    file = next(tmp_path.glob("model-*.safetensors"))
    good = st.load_file(str(file))
    cases = [
        ({**good, "pos_emb.weight": good["pos_emb.weight"].double()},
         r"pos_emb\.weight has dtype torch\.float64, but the model's has dtype torch\.float32"),
        ({**good, "pos_emb.weight": torch.full_like(good["pos_emb.weight"], float("nan"))},
         r"holds non-finite values \(nan or inf\) in 'pos_emb\.weight'"),
        ({**good, "extra.weight": torch.zeros(2)}, r"holds 'extra\.weight', which the model has no tensor for"),
        ({k: v for k, v in good.items() if not k.startswith("pos_emb")}, r"lacks the tensor 'pos_emb\.weight'"),
        ({**good, "pos_emb.weight": torch.zeros(3, 16)}, r"pos_emb\.weight has shape \(3, 16\), but the model's has shape \(8, 16\)"),
    ]
    for tensors, message in cases:
        st.save_file(tensors, str(file))
        for load in (lambda: checkpoints.load_model(tmp_path), lambda: checkpoints.load_weights(tiny_gpt(tok.vocab_size), tmp_path)):
            with pytest.raises(ValueError, match=message) as err:
                load()
            assert "\n" not in str(err.value)


def test_a_config_that_does_not_match_the_weights_is_refused_before_the_model_is_allocated(tmp_path):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok)
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    record["model_config"].update(n_embd=2048, n_head=1)  # 50 M weights (200 MB) if it were built
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"has shape \(\d+, 16\), but the model's has shape \(\d+, 2048\)"):
        checkpoints.load_model(tmp_path)
    record["model_config"].update(n_embd=1_000_000)  # 4 * 10^12 weights: refused by the size bound first
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"more than the 2,147,483,648 \(8 GiB\) lmlab builds"):
        checkpoints.load_model(tmp_path)
    record["model_config"].update(n_embd="wide")
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"model_config does not describe a gpt model"):
        checkpoints.load_model(tmp_path)


def _bad_records():
    def files(v):
        return lambda r: r.update(files=v)

    return [
        ("files as a list", files(["model-00000001.safetensors"]), r"files must be an object"),
        ("a model entry that is an int", files({"model": 3, "state": None}),
         r"files\.model must be the name of a \.safetensors file in the checkpoint folder, got 3"),
        ("no model entry", files({"state": None}), r"files must name 'model' and 'state', got \['state'\]"),
        ("a path outside the folder", files({"model": "../model-00000001.safetensors", "state": None}),
         r"files\.model must be the name of a \.safetensors file in the checkpoint folder, got '\.\./model"),
        ("an absolute path", files({"model": "/etc/passwd.safetensors", "state": None}), r"files\.model must be the name"),
        ("kind as a list", lambda r: r.update(kind=["gpt"]), r"kind must be one of \['gpt', 'masked_lm'\], got \['gpt'\]"),
        ("an unknown kind", lambda r: r.update(kind="llama7"), r"kind must be one of"),
        ("step as a string", lambda r: r.update(step="3"), r"step must be an integer >= 0, got '3'"),
        ("a negative step", lambda r: r.update(step=-1), r"step must be an integer >= 0, got -1"),
        ("step as a bool", lambda r: r.update(step=True), r"step must be an integer >= 0, got True"),
        ("history as a list", lambda r: r.update(history=[1, 2]), r"history must be an object or null, got a list"),
        ("extra as a string", lambda r: r.update(extra="x"), r"extra must be an object, got a str"),
        ("train_config as a list", lambda r: r.update(train_config=[1]), r"train_config must be an object or null"),
        ("a nested train_config value", lambda r: r.update(train_config={"lr": {"a": 1}}),
         r"train_config\.lr must be a number, string, bool or null, got a dict"),
        ("model_config as a string", lambda r: r.update(model_config="big"), r"model_config must be an object"),
        ("a version from the future", lambda r: r.update(version=99), r"it has format version 99 and this lmlab reads up to 1"),
        ("version as a string", lambda r: r.update(version="1"), r"version must be an integer"),
        ("optimizer without groups", lambda r: r.update(optimizer={"state": {}}),
         r"optimizer must be null or an object with a param_groups list .* and a state object"),
        ("NaN in a field", lambda r: r.update(metadata={"loss": float("nan")}), r"it holds NaN; no field may hold NaN"),
        ("deeply nested JSON", lambda r: r.update(metadata="DEEP"), r"it is nested too deeply"),
        ("a list instead of an object", lambda r: r.clear(), None),
    ]


@pytest.mark.parametrize("what, change, message", _bad_records(), ids=[c[0] for c in _bad_records()])
def test_each_malformed_checkpoint_json_field_is_one_sentence(tmp_path, what, change, message):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, step=1)
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    change(record)
    if message is None:  # the whole file is a list
        record, message = [record], r"it must hold a JSON object, got a list"
    text = json.dumps(record).replace('"DEEP"', "[" * 100_000 + "]" * 100_000)
    (tmp_path / "checkpoint.json").write_text(text)
    with pytest.raises(ValueError, match=r"is not a valid lmlab checkpoint: " + message) as err:
        checkpoints.load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)


def test_a_file_entry_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path):
    model, tok, _ = trained_state()
    outside = tmp_path / "outside"
    checkpoints.save_checkpoint(outside, model, step=1)
    ckpt = tmp_path / "ckpt"
    checkpoints.save_checkpoint(ckpt, model, step=1)
    target = next(outside.glob("model-*.safetensors"))
    link = ckpt / "model-00000007.safetensors"
    link.symlink_to(target)
    record = json.loads((ckpt / "checkpoint.json").read_text())
    record["files"]["model"] = link.name
    (ckpt / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"files\.model 'model-00000007\.safetensors' points outside the checkpoint folder"):
        checkpoints.load_checkpoint(ckpt)


def test_load_model_with_an_unknown_device_is_one_sentence(tmp_path):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok)
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"):
        checkpoints.load_model(tmp_path, device="tpu")


# ------------------------------------------------------------------------------ full disk, leftovers


def test_a_full_disk_during_a_save_is_one_clear_error_and_leaves_no_orphan_files(tmp_path, monkeypatch):
    import errno

    import safetensors.torch as st

    model, tok, opt = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, optimizer=opt, step=1)
    before = files_of(tmp_path)
    real_save_file = st.save_file

    def full_disk(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")  # the disk filled up while this was written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", full_disk)  # the optimizer state: the model file was already written
    with pytest.raises(OSError, match=r"could not save the checkpoint in '.*' \(no space left on device\); "
                                      r"the last good checkpoint there \(step 1\) is kept") as err:
        checkpoints.save_checkpoint(tmp_path, model, tokenizer=tok, optimizer=opt, step=2)
    assert "\n" not in str(err.value)
    assert files_of(tmp_path) == before  # no temporary file, no half-saved model file
    monkeypatch.setattr(st, "save_file", real_save_file)
    assert checkpoints.load_checkpoint(tmp_path).step == 1


def test_the_temporary_file_safetensors_leaves_when_killed_is_cleaned_at_the_next_save(tmp_path):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, step=1)
    (tmp_path / ".tmpAb12Cd").write_bytes(b"safetensors' own temporary file, killed mid-write")
    (tmp_path / "notes.txt").write_text("the learner's own file stays")
    checkpoints.save_checkpoint(tmp_path, model, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "model-00000002.safetensors", "notes.txt"]


def test_non_finite_weights_are_never_saved(tmp_path):
    model, tok, _ = trained_state()
    checkpoints.save_checkpoint(tmp_path, model, step=1)
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"model holds non-finite values \(nan or inf\) in 'blocks\.0\.mlp\.fc\.weight'"):
        checkpoints.save_checkpoint(tmp_path, model, step=2)
    assert checkpoints.load_checkpoint(tmp_path).step == 1
