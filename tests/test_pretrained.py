"""The shipped models load, are small, and still have the validation loss recorded next to them."""

import pytest
import torch

from lmlab import pretrained, training
from lmlab.models import GPT, MaskedLM

NAMES = ["shakespeare-char", "shakespeare-char-mlm"]


@pytest.fixture(scope="module")
def val_ids():
    """Held-out ids per model (both use a character vocabulary, but not the same one)."""
    cache = {}

    def get(name, tok):
        if name not in cache:
            cache[name] = pretrained.validation_ids(tok)
        return cache[name]

    return get


def test_both_shipped_models_are_available_with_their_record():
    assert set(NAMES) <= set(pretrained.available())
    for name in NAMES:
        info = pretrained.info(name)
        assert info["commands"][0].startswith("python -m lmlab train --data shakespeare")
        assert info["data"] == "shakespeare" and info["val_loss"] > 0 and info["train_wall_time_s"] > 0
        folder = pretrained.HERE / name
        assert (folder / "README.md").is_file()
        weights = list(folder.glob("*.safetensors"))
        assert len(weights) == 1 and weights[0].stat().st_size < 10 * 2**20  # a few MB: weights only


@pytest.mark.parametrize("name, kind", [("shakespeare-char", GPT), ("shakespeare-char-mlm", MaskedLM)])
def test_validation_loss_on_the_held_out_plays_matches_the_recorded_figure(name, kind, val_ids):
    model, tok = pretrained.load(name)
    assert isinstance(model, kind) and not model.training
    info = pretrained.info(name)
    s = info["slice"]
    loss = training.evaluate(model, val_ids(name, tok), tokenizer=tok, batch_size=s["batch_size"],
                             max_batches=s["max_batches"], seed=s["seed"])
    assert loss == pytest.approx(info["val_loss_slice"], abs=0.01)


def test_the_char_gpt_meets_the_quality_target_and_writes_shakespeare_like_text():
    assert pretrained.info("shakespeare-char")["val_loss"] <= 1.6  # nats per character, whole held-out split
    from lmlab.decoding import generate

    model, tok = pretrained.load("shakespeare-char")
    text = generate(model, tok, "ROMEO:\n", "sample", max_new_tokens=120, temperature=0.8, seed=0)
    words = text.split()
    assert len(words) > 10 and sum(w.strip(".,;:!?'").isalpha() for w in words) > 0.7 * len(words)


def test_the_masked_lm_fills_in_mask_better_than_token_frequencies(val_ids):
    info = pretrained.info("shakespeare-char-mlm")
    assert info["val_loss"] < info["unigram_loss"] and info["mask_accuracy"] > info["unigram_accuracy"]
    model, tok = pretrained.load("shakespeare-char-mlm")
    quick = pretrained.mask_filling(model, tok, val_ids("shakespeare-char-mlm", tok), max_batches=2)
    assert quick["mask_accuracy"] > quick["unigram_accuracy"] + 0.1
    x = torch.tensor([tok.encode("To be, or not to b[MASK], that is the question")])
    guess = model(x)[0, 18].argmax().item()
    assert tok.decode([guess]) == "e"


def test_the_command_line_samples_from_a_shipped_model_by_name(capsys):
    from lmlab.__main__ import main

    assert main(["sample", "--checkpoint", "shakespeare-char", "--prompt", "KING:", "--max-new-tokens", "40", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("KING:") and len(out.rstrip("\n")) == 45


def test_an_unknown_name_is_one_sentence():
    with pytest.raises(ValueError, match=r"name must be one of the shipped models \['shakespeare-char'"):
        pretrained.load("gpt-5")


def test_an_unknown_device_is_one_sentence():
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'") as err:
        pretrained.load("shakespeare-char", device="tpu")
    assert "\n" not in str(err.value)
