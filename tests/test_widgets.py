"""The playground's logic without a browser: what a control change does to the state, the plot and the model calls."""

import re

import pytest
import torch
from torch import nn

from lmlab import decoding, pretrained, viz
from lmlab.models import GPT, GPTConfig
from lmlab.tokenizers import BPETokenizer, CharTokenizer
from lmlab import widgets
from lmlab.widgets import Playground, next_token_view, token_labels

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nO Romeo, Romeo, wherefore art thou?\n"


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.train(TEXT)


@pytest.fixture()
def model(tokenizer):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, tie_weights=False))
    with torch.no_grad():  # sharper than a fresh model's near-uniform guesses, so the filters remove something
        m.head.weight.mul_(50)
    m.calls = 0
    m.register_forward_pre_hook(lambda module, args, kwargs: setattr(module, "calls", module.calls + 1), with_kwargs=True)
    return m.eval()


def make(model, tokenizer, **kw):
    kw.setdefault("max_new_tokens", 20)
    return Playground(model, tokenizer, **kw)


def readout_numbers(pg):
    text = re.sub("<[^>]+>", "", pg.readout.value)
    before, after, kept, vocab = re.findall(r"[\d.]+", text)
    return float(before), float(after), int(kept), int(vocab)


# ---- next_token_view: the computation behind the plot ---------------------------------------------------


def test_view_of_a_hand_computed_batch_row_by_row():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    v = next_token_view(logits, top_k=2)
    assert v.num_kept.tolist() == [2, 4]  # row 2: every logit ties with the 2nd largest, so all stay
    assert v.kept[0].tolist() == [True, True, False, False]
    p = torch.tensor([2.0, 1.0]).softmax(-1)
    assert torch.allclose(v.filtered_probs[0], torch.tensor([p[0], p[1], 0, 0]))
    assert torch.allclose(v.filtered_probs[1], torch.full((4,), 0.25))
    assert v.filtered_entropy.tolist() == pytest.approx([viz.entropy(p), torch.log(torch.tensor(4.0)).item()], abs=1e-6)
    assert v.entropy.tolist() == pytest.approx([viz.entropy(logits[0].softmax(-1)), viz.entropy(logits[1].softmax(-1))], abs=1e-6)


def test_view_of_a_batch_equals_each_row_alone():
    torch.manual_seed(1)
    logits = torch.randn(3, 50) * 3
    for opts in ({"temperature": 0.7, "top_p": 0.8}, {"top_k": 5, "min_p": 0.1}, {"strategy": "beam", "num_beams": 3},
                 {"strategy": "greedy"}, {"temperature": 0.0}):
        batch = next_token_view(logits, **opts)
        for i in range(3):
            row = next_token_view(logits[i : i + 1], **opts)
            for a, b in zip(batch, row):
                assert torch.allclose(a[i : i + 1].float(), b.float()), opts


def test_view_of_greedy_and_beam():
    logits = torch.tensor([[0.5, 3.0, 1.0, 2.0, -1.0]])
    g = next_token_view(logits, "greedy")
    assert g.filtered_probs.tolist() == [[0, 1, 0, 0, 0]] and g.num_kept.item() == 1 and g.filtered_entropy.item() == 0
    assert torch.equal(next_token_view(logits, temperature=0.0).filtered_probs, g.filtered_probs)  # T = 0 is greedy
    b = next_token_view(logits, "beam", num_beams=2)
    assert b.kept.tolist() == [[False, True, False, True, False]]
    # the filters are off when not asked for: everything kept, nothing changed
    s = next_token_view(logits)
    assert s.num_kept.item() == 5 and torch.allclose(s.filtered_probs, s.probs)


@pytest.mark.parametrize("kwargs, name", [({"strategy": "top"}, "strategy"), ({"temperature": -1.0}, "temperature"),
                                          ({"top_p": 0.0}, "top_p"), ({"top_k": 0}, "top_k"), ({"min_p": 1.5}, "min_p"),
                                          ({"strategy": "beam", "num_beams": 0}, "num_beams")])
def test_view_rejects_bad_settings_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        next_token_view(torch.zeros(2, 5), **kwargs)


def test_view_rejects_logits_of_the_wrong_shape():
    with pytest.raises(ValueError, match="logits"):
        next_token_view(torch.zeros(5))


# ---- the playground -------------------------------------------------------------------------------------


def test_a_filter_change_redraws_from_the_cached_logits_without_running_the_model(model, tokenizer):
    pg = make(model, tokenizer, max_new_tokens=0)
    assert model.calls == 1
    for name, value in [("temperature", 0.5), ("top_k", 5), ("top_p", 0.6), ("min_p", 0.9), ("strategy", "greedy"),
                        ("strategy", "beam"), ("strategy", "sample")]:
        png = pg.png
        getattr(pg, name).value = value
        assert pg.png != png, f"{name} did not redraw"
    assert model.calls == 1
    pg.prompt.value = "JULIET:\n"
    assert model.calls == 2
    pg.prompt.value = "ROMEO:\n"  # seen before: its logits are cached
    assert model.calls == 2


def test_slider_changes_update_the_view_readout_and_plot_data(model, tokenizer):
    pg = make(model, tokenizer)
    v0 = pg.view
    pg.temperature.value = 0.5
    assert torch.allclose(pg.view.probs, v0.probs)
    assert torch.allclose(pg.view.filtered_probs, (torch.log(v0.probs) / 0.5).softmax(-1), atol=1e-6)
    assert pg.view.filtered_entropy.item() < v0.filtered_entropy.item()
    pg.top_k.value = 4
    before, after, kept, vocab = readout_numbers(pg)
    assert before == pytest.approx(viz.entropy(pg.view.probs[0]), abs=1e-3)
    assert after == pytest.approx(viz.entropy(pg.view.filtered_probs[0]), abs=1e-3)
    assert kept == 4 == int((pg.view.filtered_probs > 0).sum()) and vocab == tokenizer.vocab_size
    # the bars: the 20 most probable tokens; before = grey where removed, after = the filtered probabilities
    assert pg.top_ids == pg.view.probs[0].topk(20).indices.tolist()
    chart = pg._chart
    heights = [bar.get_height() for bar in chart.ax_after.patches]
    assert heights == pytest.approx(pg.view.filtered_probs[0, pg.top_ids].tolist())
    grey = [bar.get_facecolor() == chart.ax_before.patches[-1].get_facecolor() for bar in chart.ax_before.patches]
    assert grey == [i >= 4 for i in range(20)]
    labels = [t.get_text() for t in chart.ax_before.get_xticklabels()]
    assert labels == [viz.token_label(tokenizer.decode([i])) for i in pg.top_ids]


def test_sliders_are_off_for_greedy_and_beam(model, tokenizer):
    pg = make(model, tokenizer)
    pg.strategy.value = "greedy"
    assert pg.temperature.disabled and pg.top_k.disabled
    assert readout_numbers(pg)[1:3] == (0.0, 1)
    pg.strategy.value = "beam"
    assert readout_numbers(pg)[2] == pg.num_beams
    pg.strategy.value = "sample"
    assert not pg.temperature.disabled


def test_regenerate_with_a_seed_is_reproducible_and_is_decodings_sample(model, tokenizer):
    pg = make(model, tokenizer, temperature=1.5, top_p=0.9)
    a = pg.regenerate(seed=3)
    b = pg.regenerate(seed=4)
    assert a != b and len(a) == 20
    assert pg.regenerate(seed=3) == a
    assert a == decoding.generate(model, tokenizer, "ROMEO:\n", "sample", 20, temperature=1.5, top_p=0.9, seed=3)
    assert "ROMEO:" in pg.continuation.value and a.replace("&", "&amp;").replace("<", "&lt;")[:5] in pg.continuation.value
    pg.new_seed_button.click()
    assert pg.seed.value == 4 and pg.text == b


def test_continuation_is_not_resampled_on_a_filter_change_but_marked_stale(model, tokenizer):
    pg = make(model, tokenizer)
    text = pg.text
    model.calls = 0
    pg.temperature.value = 0.3
    assert pg.text == text and model.calls == 0
    assert "Regenerate" in pg.status.value
    pg.regenerate_button.click()
    assert model.calls > 0 and pg.status.value == ""
    assert pg.text == decoding.generate(model, tokenizer, "ROMEO:\n", "sample", 20, temperature=0.3, seed=0)


def test_greedy_and_beam_continuations(model, tokenizer):
    pg = make(model, tokenizer, strategy="greedy")
    assert pg.text == decoding.generate(model, tokenizer, "ROMEO:\n", "greedy", 20)
    pg.set(strategy="beam")
    assert pg.regenerate() == decoding.generate(model, tokenizer, "ROMEO:\n", "beam", 20, num_beams=4)


def test_set_changes_several_controls_with_one_redraw(model, tokenizer, monkeypatch):
    pg = make(model, tokenizer)
    draws = []
    original = pg._chart.png
    monkeypatch.setattr(pg._chart, "png", lambda *a: draws.append(1) or original(*a))
    pg.set(temperature=0.8, top_k=3, min_p=0.05)
    assert len(draws) == 1 and readout_numbers(pg)[2] <= 3
    with pytest.raises(ValueError, match="temperature"):
        pg.set(temperature=-0.1)
    with pytest.raises(ValueError, match="unknown"):
        pg.set(temp=1.0)
    with pytest.raises(ValueError, match="never saw"):
        pg.set(prompt="ROMEO: \u00e9")


def test_slider_values_snap_to_their_steps_and_sync_as_indexes(model, tokenizer):
    pg = make(model, tokenizer, temperature=0.73, top_p=0.061)
    assert (pg.temperature.value, pg.top_p.value) == (0.75, 0.06)
    pg.set(min_p=0.333)
    assert pg.min_p.value == 0.33 and pg.settings()["min_p"] == 0.33
    # the page sends back an index, never a float that rounding could turn into a stale echo
    state = pg.top_p.get_state()
    assert "index" in state and "value" not in state


def test_a_bad_prompt_typed_in_shows_the_error_and_keeps_the_plot(model, tokenizer):
    pg = make(model, tokenizer)
    png, view = pg.png, pg.view
    pg.prompt.value = "zzz \u00e9"
    assert "never saw" in pg.status.value and pg.png == png and pg.view is view
    pg.prompt.value = "JULIET:"
    assert pg.status.value == "" and pg.png != png


@pytest.mark.parametrize("kwargs, name", [({"temperature": 2.5}, "temperature"), ({"top_k": 10_000}, "top_k"),
                                          ({"top_p": 0.0}, "top_p"), ({"min_p": -0.1}, "min_p"), ({"seed": -1}, "seed"),
                                          ({"strategy": "nucleus"}, "strategy"), ({"prompt": ""}, "prompt"),
                                          ({"max_new_tokens": -1}, "max_new_tokens"), ({"top": 0}, "top")])
def test_bad_arguments_raise_one_sentence_naming_them(model, tokenizer, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make(model, tokenizer, **kwargs)


def test_model_and_tokenizer_must_fit_each_other(model, tokenizer):
    with pytest.raises(ValueError, match="tokenizer"):
        Playground(model, None)
    with pytest.raises(ValueError, match="tokenizer must have"):
        Playground(model, "abc")
    other = CharTokenizer.train(TEXT + "xyz")
    with pytest.raises(ValueError, match="tokenizer has"):
        Playground(model, other, prompt="ROMEO:")


class Bigram(nn.Module):
    """A model written in a notebook: no cache, no config, just ids -> logits."""

    def __init__(self, vocab):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return self.table(ids)


def test_any_model_and_tokenizer_work():
    torch.manual_seed(0)
    tok = BPETokenizer.train(TEXT * 20, vocab_size=300)
    labels = token_labels(tok)
    assert len(labels) == tok.vocab_size and all(labels)
    pg = Playground(Bigram(tok.vocab_size), tok, prompt="Romeo", max_new_tokens=5, top_k=3)
    assert readout_numbers(pg)[2] == 3 and pg.text
    assert pg.text == decoding.generate(pg.model, tok, "Romeo", "sample", 5, top_k=3, seed=0)


def test_the_shipped_char_model_is_the_default():
    if "shakespeare-char" in pretrained.available():
        pg = Playground(max_new_tokens=5)
        assert pg.tokenizer.vocab_size == len(pg.labels) and pg.text
    else:
        with pytest.raises(ValueError, match="shakespeare-char"):
            Playground()


def test_it_displays_as_a_widget(model, tokenizer):
    bundle = make(model, tokenizer)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


# ---- the model picker ------------------------------------------------------------------------------------


@pytest.fixture()
def two_models(model, tokenizer):
    """A char GPT and a byte-level BPE bigram (a larger vocabulary), with counts of how often each is loaded."""
    torch.manual_seed(0)
    bpe = BPETokenizer.train(TEXT * 20, vocab_size=300)
    bigram = Bigram(bpe.vocab_size).eval()
    with torch.no_grad():  # peaked, so that every filter removes something
        bigram.table.weight.mul_(4)
    loads = {"char": 0, "bpe": 0}

    def loader(name, pair):
        def load():
            loads[name] += 1
            return pair
        return load

    return {"char": loader("char", (model, tokenizer)), "bpe": loader("bpe", (bigram, bpe))}, loads, bigram, bpe


def test_a_model_is_loaded_on_its_first_pick_and_kept(two_models):
    models, loads, bigram, bpe = two_models
    pg = Playground("char", models=models, max_new_tokens=5)
    assert pg.model_picker.options == ("char", "bpe") and loads == {"char": 1, "bpe": 0}
    pg.model_picker.value = "bpe"  # as a pick in the page does
    assert pg.model is bigram and loads == {"char": 1, "bpe": 1}
    assert pg.logits.shape == (1, bpe.vocab_size) and len(pg.labels) == bpe.vocab_size
    assert torch.allclose(pg.logits, bigram(torch.tensor([bpe.encode("ROMEO:\n")]))[:, -1])
    assert readout_numbers(pg)[3] == bpe.vocab_size and pg.top_k.max == bpe.vocab_size
    assert pg.text == decoding.generate(bigram, bpe, "ROMEO:\n", "sample", 5, seed=0)
    pg.model_picker.value = "char"
    pg.model_picker.value = "bpe"
    assert loads == {"char": 1, "bpe": 1}


def test_a_model_switch_keeps_every_control_working(two_models, model, tokenizer):
    models, loads, bigram, bpe = two_models
    pg = Playground("char", models=models, max_new_tokens=5)
    pg.set(model="bpe", top_k=200)  # more than the char model's vocabulary: allowed once the model is switched
    assert readout_numbers(pg)[2] == 200
    for name, value in [("temperature", 1.5), ("top_k", 50), ("top_p", 0.9), ("min_p", 0.2), ("strategy", "greedy"),
                        ("strategy", "beam"), ("strategy", "sample")]:
        png = pg.png
        getattr(pg, name).value = value
        assert pg.png != png, f"{name} did not redraw after the switch"
    expected = next_token_view(pg.logits, temperature=1.5, top_k=50, top_p=0.9, min_p=0.2)
    assert torch.equal(pg.view.kept, expected.kept) and readout_numbers(pg)[2] == int(expected.num_kept) < 50
    assert pg.regenerate(seed=3) == decoding.generate(bigram, bpe, "ROMEO:\n", "sample", 5, temperature=1.5, top_k=50,
                                                      top_p=0.9, min_p=0.2, seed=3)
    pg.strategy.value = "greedy"
    assert pg.regenerate() == decoding.generate(bigram, bpe, "ROMEO:\n", "greedy", 5)
    pg.set(strategy="sample", top_k=200)
    calls = model.calls
    pg.model_picker.value = "char"  # a smaller vocabulary: top-k is cut to it, the prompt's logits come from the cache
    assert pg.top_k.max == tokenizer.vocab_size and pg.top_k.value == tokenizer.vocab_size
    assert model.calls == calls + 5  # only the 5 tokens of the new continuation
    assert [pg._chart.ax_before.get_xticklabels()[i].get_text() for i in range(3)] == [pg.labels[i] for i in pg.top_ids[:3]]
    pg.new_seed_button.click()
    assert pg.seed.value == 4 and pg.text == decoding.generate(model, tokenizer, "ROMEO:\n", "sample", 5,
                                                               temperature=1.5, top_p=0.9, min_p=0.2, seed=4)


def test_the_given_model_is_custom_next_to_the_named_ones(model, tokenizer, two_models):
    models, loads, bigram, bpe = two_models
    pg = Playground(model, tokenizer, models={"bpe": models["bpe"]}, max_new_tokens=3)
    assert pg.model_picker.options == ("custom", "bpe") and pg.model_name == "custom"
    pg.set(model="bpe")
    pg.set(model="custom")
    assert pg.model is model and loads["bpe"] == 1
    assert Playground(model, tokenizer, max_new_tokens=0).model_picker.options == ("custom", *widgets.MODELS)


def test_a_switch_to_a_model_that_cannot_read_the_prompt_keeps_the_old_one(two_models, tokenizer):
    models, loads, bigram, bpe = two_models
    pg = Playground("bpe", models=models, prompt="zzz", max_new_tokens=3)  # byte-level BPE reads anything
    png = pg.png
    with pytest.raises(ValueError, match="never saw"):
        pg.set(model="char")
    assert pg.model is bigram and pg.model_picker.value == "bpe" and pg.top_k.max == bpe.vocab_size
    pg.model_picker.value = "char"  # in the page: the error shows, the picker goes back
    assert "never saw" in pg.status.value and pg.model_picker.value == "bpe" and pg.model is bigram and pg.png == png
    pg.set(model="char", prompt="ROMEO:")  # with a prompt it can read, it switches
    assert pg.model_name == "char" and pg.text == decoding.generate(pg.model, tokenizer, "ROMEO:", "sample", 3, seed=0)


def test_unknown_model_names_raise_one_sentence(two_models, model, tokenizer):
    models = two_models[0]
    with pytest.raises(ValueError, match=r"model must be one of \['char', 'bpe'\], got 'gpt-9'"):
        Playground("gpt-9", models=models)
    pg = Playground("char", models=models, max_new_tokens=0)
    with pytest.raises(ValueError, match="model must be one of"):
        pg.set(model="gpt-9")
    with pytest.raises(ValueError, match="tokenizer must be left out"):
        Playground("char", tokenizer, models=models)
    with pytest.raises(ValueError, match="models must be a dict"):
        Playground(models={"char": (model, tokenizer)})
    with pytest.raises(ValueError, match=r"models\['bad'\] must return"):
        Playground("bad", models={"bad": lambda: model})


def test_a_model_switch_during_generation_abandons_it_for_the_new_model(two_models, monkeypatch):
    models, loads, bigram, bpe = two_models
    pg = Playground("char", models=models, max_new_tokens=20)
    real_stream, pieces = decoding.stream, []

    def stream_that_switches(*args, **kwargs):  # the user picks another model while the char model streams
        for i, piece in enumerate(real_stream(*args, **kwargs)):
            pieces.append(piece)
            if i == 2 and pg.model_name == "char":
                pg.set(model="bpe")
            yield piece

    monkeypatch.setattr(decoding, "stream", stream_that_switches)
    pg.regenerate(seed=1)
    assert pg.model_name == "bpe" and pg.model is bigram
    assert pg.text == decoding.generate(bigram, bpe, "ROMEO:\n", "sample", 20, seed=1)  # the new model's, whole
    assert "generating" not in pg.status.value and "settings changed" not in pg.status.value


def test_byte_level_tokens_get_readable_labels():
    tok = BPETokenizer.train(TEXT * 20 + "caf\u00e9 \U0001F600\n" * 5, vocab_size=320, special_tokens=["<|endoftext|>"])
    labels = token_labels(tok)
    assert labels[tok.encode(" Romeo")[0]] == "\u2423Romeo"  # leading space as ␣ (byte-level Ġ decoded)
    assert labels[tok.encode("\n")[0]] == "\u21b5"  # newline as ↵
    assert labels[0] == "<|endoftext|>"  # a control token by its name
    # a piece of a multi-byte character: its bytes, since it is no text on its own
    assert labels[tok.hf.token_to_id("\u00c3")] == "\\xc3" and labels[tok.hf.token_to_id("\u00f0")] == "\\xf0"
    assert widgets.readable_label("a" * 40) == "a" * 13 + "\u2026" and widgets.readable_label("\x07") == "\\x07"


@pytest.mark.slow
def test_smollm2_in_the_playground():
    pg = Playground("smollm2-135m", prompt="The cat sat on the", max_new_tokens=8)
    model, tok = pg.model, pg.tokenizer
    assert pg.top_k.max == tok.vocab_size == 49152 and len(pg.labels) == 49152
    assert pg.labels[tok.encode(" the")[0]] == "\u2423the" and pg.labels[tok.eos_token_id] == "<|im_end|>"
    assert pg.labels[pg.top_ids[0]] == "\u2423" + tok.decode([pg.top_ids[0]]).strip()
    assert pg.text == decoding.generate(model, tok, "The cat sat on the", "sample", 8, seed=0)
    entropy = readout_numbers(pg)[1]
    png = pg.png
    pg.set(temperature=0.5, top_k=1000)
    assert pg.png != png and readout_numbers(pg)[1] < entropy and readout_numbers(pg)[2] <= 1000
    pg.set(model="shakespeare-char", prompt="ROMEO:\n")
    assert pg.top_k.value == pg.top_k.max == pg.tokenizer.vocab_size and len(pg.labels) == pg.tokenizer.vocab_size
    pg.set(model="smollm2-135m", prompt="The cat sat on the")
    assert pg.model is model and pg.logits.shape == (1, 49152)  # kept, not loaded again


def test_the_continuation_length_follows_the_model_unless_given(model, tokenizer):
    class Big(nn.Module):  # the char GPT carrying 10 M unused parameters: a "real model" by size alone
        def __init__(self):
            super().__init__()
            self.inner, self.ballast = model, nn.Parameter(torch.zeros(10_000_001), requires_grad=False)
            self.config = model.config  # its context, so that generation slides its window as for the GPT

        def new_cache(self, batch_size):
            return self.inner.new_cache(batch_size)

        def forward(self, ids, **kwargs):
            return self.inner(ids, **kwargs)

    models = {"small": lambda: (model, tokenizer), "big": lambda: (Big().eval(), tokenizer)}
    pg = Playground("small", models=models)
    assert pg.max_new_tokens == 200 and len(pg.text) == 200  # one character per token
    pg.set(model="big")
    assert pg.max_new_tokens == 40 and len(pg.text) == 40
    pg.set(model="small")
    assert pg.max_new_tokens == 200 and len(pg.text) == 200
    fixed = Playground("big", models=models, max_new_tokens=7)
    assert fixed.max_new_tokens == 7 and len(fixed.text) == 7
    fixed.set(model="small")
    assert fixed.max_new_tokens == 7 and len(fixed.text) == 7
