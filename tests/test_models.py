import dataclasses

import pytest
import torch

from lmlab.models import GPT, GPTConfig, MaskedLM, MaskedLMConfig, build, parameter_count

V = 13


def gpt(block_size=16, **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**cfg, **kw})).eval()


def masked_lm(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, pad_token_id=0)
    return MaskedLM(MaskedLMConfig(**{**cfg, **kw})).eval()


def ids(batch, seq, seed=1, low=0):
    return torch.randint(low, V, (batch, seq), generator=torch.Generator().manual_seed(seed))


# --- GPT ---------------------------------------------------------------------------------------


def test_gpt_output_shape_and_batch_of_int32():
    model, x = gpt(), ids(3, 10)
    assert model(x).shape == (3, 10, V)
    torch.testing.assert_close(model(x.int()), model(x))
    torch.testing.assert_close(model(x.to(torch.uint8)), model(x))


def test_gpt_is_causal():
    model, x = gpt(), ids(3, 12)
    base = model(x)
    for t in range(x.shape[1] - 1):
        changed = x.clone()
        changed[:, t + 1 :] = (x[:, t + 1 :] + 1 + torch.arange(x.shape[1] - t - 1)) % V  # every later token differs
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-4)  # the change itself is visible


def test_gpt_cache_equals_full_recompute_over_120_positions():
    model, x = gpt(block_size=128), ids(3, 125)
    full = model(x)
    # prompt of 5, then one token at a time: 120 cached steps
    cache = model.new_cache(3)
    outs = [model(x[:, :5], cache=cache)]
    for t in range(5, x.shape[1]):
        outs.append(model(x[:, t : t + 1], cache=cache))
    assert cache.length == 125
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=0, atol=1e-5)


def test_gpt_cache_with_chunks_longer_than_one():
    # chunks after a filled cache use the explicit (T, start + T) causal mask
    model, x = gpt(block_size=32), ids(2, 30)
    cache = model.new_cache(2)
    outs = [model(x[:, a:b], cache=cache) for a, b in [(0, 4), (4, 5), (5, 12), (12, 13), (13, 30)]]
    torch.testing.assert_close(torch.cat(outs, dim=1), model(x), rtol=0, atol=1e-5)


def test_gpt_cache_crop_rewinds():
    model, x = gpt(), ids(2, 10)
    cache = model.new_cache(2)
    model(x[:, :8], cache=cache)
    cache.crop(6)
    torch.testing.assert_close(model(x[:, 6:10], cache=cache), model(x)[:, 6:10], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="^n must"):
        cache.crop(11)


def test_gpt_batch_equals_each_row_alone():
    model, x = gpt(), ids(4, 11)
    batched = model(x)
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], model(x[i : i + 1]), rtol=0, atol=1e-5)


def test_cache_reorder_selects_and_duplicates_rows():
    model, x = gpt(), ids(3, 8)
    cache = model.new_cache(3)
    model(x[:, :7], cache=cache)
    index = torch.tensor([2, 0, 2, 1])
    cache.reorder(index)
    assert cache.batch_size == 4 and cache.length == 7
    nxt = torch.tensor([[1], [2], [3], [4]])
    out = model(nxt, cache=cache)[:, 0]
    expected = model(torch.cat([x[index, :7], nxt], dim=1))[:, -1]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out[0], out[2], atol=1e-4)  # same row, different next token


# --- MaskedLM ----------------------------------------------------------------------------------


def test_masked_lm_is_bidirectional():
    model, x = masked_lm(), ids(2, 10, low=1)
    changed = x.clone()
    changed[:, -1] = (x[:, -1] % (V - 1)) + 1
    assert not torch.allclose(model(changed)[:, 0], model(x)[:, 0], atol=1e-4)


def test_masked_lm_padding_does_not_reach_real_tokens():
    model, x = masked_lm(), ids(3, 12, low=1)
    lengths = [12, 7, 4]
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    padded = x.masked_fill(mask == 0, 0)
    other_pad = x.masked_fill(mask == 0, 5)  # anything in the padding: must not matter
    out, out_other = model(padded, attention_mask=mask), model(other_pad, attention_mask=mask)
    for i, n in enumerate(lengths):
        alone = model(x[i : i + 1, :n])[0]
        torch.testing.assert_close(out[i, :n], alone, rtol=0, atol=1e-5)
        torch.testing.assert_close(out_other[i, :n], alone, rtol=0, atol=1e-5)
    assert not out.isnan().any()


def test_masked_lm_batch_equals_each_row_alone():
    model, x = masked_lm(), ids(3, 9)
    batched = model(x)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], model(x[i : i + 1]), rtol=0, atol=1e-5)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 17, dtype=torch.long),  # longer than block_size 16
        torch.full((2, 3), V),  # id past the vocabulary
        torch.full((2, 3), -1),  # negative id
        torch.zeros(2, 3),  # float dtype
        torch.zeros(3, dtype=torch.long),  # rank 1
        torch.zeros(1, 2, 3, dtype=torch.long),  # rank 3
        [[1, 2, 3]],  # not a tensor
    ],
)
@pytest.mark.parametrize("make", [gpt, masked_lm])
def test_bad_input_ids_raise_value_error_naming_them(make, bad):
    with pytest.raises(ValueError, match="^input_ids"):
        make()(bad)


def test_input_past_the_space_left_in_the_cache_raises():
    model = gpt()
    cache = model.new_cache(2)
    model(torch.zeros(2, 10, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="^input_ids.*at most 6"):
        model(torch.zeros(2, 7, dtype=torch.long), cache=cache)
    assert cache.length == 10  # the failed call left the cache as it was


def test_cache_batch_mismatch_raises():
    model = gpt()
    with pytest.raises(ValueError, match="^input_ids has batch size 3"):
        model(torch.zeros(3, 2, dtype=torch.long), cache=model.new_cache(2))


def test_bad_attention_mask_raises():
    with pytest.raises(ValueError, match="^attention_mask"):
        masked_lm()(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 5))


@pytest.mark.parametrize(
    "field, value",
    [("vocab_size", 0), ("block_size", -1), ("n_layer", 1.5), ("n_head", 3), ("n_embd", True), ("dropout", 1.0)],
)
@pytest.mark.parametrize("make", [gpt, masked_lm])
def test_bad_config_raises_value_error_naming_the_field(make, field, value):
    with pytest.raises(ValueError, match=rf"^config\.(.*config\.)?{field}\b"):
        make(**{field: value})


def test_build_rejects_unknown_kind_and_fields():
    with pytest.raises(ValueError, match="^kind"):
        build("rnn", {})
    with pytest.raises(ValueError, match="^config"):
        build("gpt", {"vocab_size": 5, "n_layers": 2})


# --- parameters and config ---------------------------------------------------------------------


def hand_count(V, block, L, C, bias, tie):
    b = 1 if bias else 0
    ln = C + b * C
    attn = (C * 3 * C + b * 3 * C) + (C * C + b * C)
    mlp = (C * 4 * C + b * 4 * C) + (4 * C * C + b * C)
    return V * C + block * C + L * (2 * ln + attn + mlp) + ln + (0 if tie else V * C)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_num_parameters_matches_a_hand_count(bias, tie):
    model = gpt(n_layer=3, bias=bias, tie_weights=tie)
    assert model.num_parameters() == hand_count(V, 16, 3, 16, bias, tie) == parameter_count(model.config)
    mlm = masked_lm(n_layer=1, n_embd=24, n_head=3, bias=bias, tie_weights=tie)
    assert mlm.num_parameters() == parameter_count(mlm.config)


@pytest.mark.parametrize("config", [
    dict(vocab_size=10**12),  # 1.3e14 parameters
    dict(n_embd=1_000_000, n_head=1, n_layer=1),  # 1.2e13: the attention alone
    dict(block_size=10**10),
    dict(n_embd=16_384, n_head=16, n_layer=1),  # 3.2e9: just over 2**31
    dict(n_layer=10**6, n_embd=2, n_head=1),  # few parameters, but a million Python modules
])
@pytest.mark.parametrize("make", [GPTConfig, MaskedLMConfig])
def test_absurd_sizes_are_refused_before_anything_is_allocated(make, config):
    with pytest.raises(ValueError, match=r"^config") as err:
        GPT(make(**config)) if make is GPTConfig else MaskedLM(make(**config))
    assert "\n" not in str(err.value) and ". " not in str(err.value)
    with pytest.raises(ValueError, match=r"^config"):
        build("gpt" if make is GPTConfig else "masked_lm", dict(config))


def test_parameter_count_of_gpt2_small_is_the_published_one_and_within_the_bound():
    gpt2 = GPTConfig(vocab_size=50_257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert parameter_count(gpt2) == 124_439_808 < 2**31


@pytest.mark.parametrize("field, value", [("bias", 1), ("tie_weights", "yes"), ("dropout", "0.1"),
                                          ("dropout", float("nan")), ("pad_token_id", V), ("pad_token_id", True)])
def test_config_fields_of_the_wrong_type_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"^config\.{field}"):
        masked_lm(**{field: value})


def test_a_cache_too_large_for_memory_is_refused():
    model = gpt()
    with pytest.raises(ValueError, match="^batch_size=10,000,000,000 needs a cache"):
        model.new_cache(10**10)
    with pytest.raises(ValueError, match="^batch_size"):
        model.new_cache(True)


def test_tie_weights():
    tied, untied = gpt(tie_weights=True), gpt(tie_weights=False)
    assert tied.head.weight is tied.tok_emb.weight
    assert untied.head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() - tied.num_parameters() == V * 16
    with torch.no_grad():  # tied: one matrix, so writing the embedding changes the output layer
        tied.tok_emb.weight[3] += 1.0
    assert torch.equal(tied.head.weight[3], tied.tok_emb.weight[3])


@pytest.mark.parametrize("kind, make", [("gpt", gpt), ("masked_lm", masked_lm)])
def test_build_round_trip_from_asdict(kind, make):
    model, x = make(tie_weights=False), ids(2, 6)
    rebuilt = build(kind, dataclasses.asdict(model.config)).eval()
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
