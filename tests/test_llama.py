"""lmlab.llama on small random models: each piece against its formula, the cache, batches, decoding,
and loading from GGUF files and Hugging Face folders written here (the real model: test_smollm2.py)."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from gguf_writer import STR, U32, llama_gguf, permute_for_llama_cpp
from lmlab import decoding, llama
from lmlab.gguf import GGUFFile
from lmlab.llama import (GroupedQueryAttention, Llama, LlamaConfig, LlamaKVCache, RMSNorm, RotaryEmbedding, SwiGLU,
                         apply_rotary, apply_rotary_interleaved, unpermute_rope)
from lmlab.probability import token_logprobs
from lmlab.tokenizers import CharTokenizer

TINY = dict(vocab_size=96, block_size=160, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, intermediate_size=64,
            rope_theta=1000.0)


def tiny(seed=0, **changes) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(**{**TINY, **changes})).eval()


def ids(batch, seq, seed=0, vocab=96):
    return torch.randint(vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- the pieces
def test_rmsnorm_divides_by_the_root_mean_square_and_is_layernorm_on_centred_input():
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(0))
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-6)
    centred = x - x.mean(-1, keepdim=True)  # with the mean already 0, LayerNorm's subtraction does nothing
    layer_norm = F.layer_norm(centred, (16,), weight=norm.weight, eps=1e-6)
    assert torch.allclose(norm(centred), layer_norm, atol=1e-5)
    low = norm.to(torch.bfloat16)(x.bfloat16())  # the mean square is taken in float32 all the same
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), expected, atol=0.05)


def test_rotary_turns_pairs_keeps_lengths_and_sees_only_relative_positions():
    rope = RotaryEmbedding(head_dim=8, block_size=64, theta=100.0)
    cos, sin = rope(0, 64)
    assert cos.shape == sin.shape == (64, 8)
    # pair 0 turns by 1 radian per position, pair 3 by 100 ** (-6 / 8) radians
    assert torch.allclose(torch.atan2(sin[5, 0], cos[5, 0]), torch.tensor(5.0 - 2 * math.pi), atol=1e-5)
    assert torch.allclose(torch.atan2(sin[5, 3], cos[5, 3]), torch.tensor(5 * 100 ** (-6 / 8)), atol=1e-6)
    q, k = torch.randn(2, 1, 1, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    def score(m, n):  # q at position m, k at position n
        return (apply_rotary(q, *rope(m, 1)) * apply_rotary(k, *rope(n, 1))).sum()
    assert torch.allclose(apply_rotary(q, *rope(7, 1)).norm(), q.norm(), atol=1e-6)  # a rotation
    assert torch.allclose(score(10, 3), score(40, 33), atol=1e-5)  # only m - n matters
    assert not torch.allclose(score(10, 3), score(10, 4), atol=1e-3)


def test_interleaved_rope_on_llama_cpp_rows_equals_half_split_rope_on_trained_rows():
    """The two layouts are the same rotation once q's and k's rows are reordered as llama.cpp does."""
    g = torch.Generator().manual_seed(0)
    n_heads, head_dim, n_embd = 3, 8, 12
    w = torch.randn(n_heads * head_dim, n_embd, generator=g)
    x = torch.randn(2, 5, n_embd, generator=g)
    cos, sin = RotaryEmbedding(head_dim, 16, theta=100.0)(0, 5)
    heads = lambda y: y.view(2, 5, n_heads, head_dim).transpose(1, 2)  # noqa: E731
    half = apply_rotary(heads(x @ w.T), cos, sin)
    stored = permute_for_llama_cpp(w, n_heads)
    inter = apply_rotary_interleaved(heads(x @ stored.T), cos, sin)
    # within a head, llama.cpp's number 2i + s is the trained number s * head_dim / 2 + i
    order = torch.arange(head_dim).view(2, head_dim // 2).T.reshape(-1)
    assert torch.allclose(inter, half[..., order], atol=1e-5)
    assert torch.allclose(half @ half.transpose(-1, -2), inter @ inter.transpose(-1, -2), atol=1e-4)
    # and the pitfall: the half-split rotation on llama.cpp's rows is a different function
    wrong = apply_rotary(heads(x @ stored.T), cos, sin)
    assert not torch.allclose(half @ half.transpose(-1, -2), wrong @ wrong.transpose(-1, -2), atol=1e-2)


def test_unpermute_rope_undoes_the_converters_reordering():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rope(permute_for_llama_cpp(w, 3), 3), w)
    assert not torch.equal(permute_for_llama_cpp(w, 3), w)


def test_swiglu_is_down_of_silu_gate_times_up():
    mlp = SwiGLU(8, 12)
    x = torch.randn(2, 3, 8)
    w_gate, w_up = mlp.gate_up.weight.split(12)  # the gate's rows first
    g, u = x @ w_gate.T, x @ w_up.T
    assert torch.allclose(mlp(x), (g * torch.sigmoid(g) * u) @ mlp.down.weight.T, atol=1e-6)


def test_grouped_query_attention_equals_each_query_head_reading_its_groups_key_value_head():
    torch.manual_seed(0)
    config = LlamaConfig(**TINY)
    attn = GroupedQueryAttention(config).eval()
    B, T, H, G, D = 2, 7, config.n_head, config.n_kv_head, config.head_dim
    x = torch.randn(B, T, config.n_embd)
    cos, sin = RotaryEmbedding(D, 16, config.rope_theta)(0, T)
    w_q, w_k, w_v = attn.qkv.weight.split([H * D, G * D, G * D])  # query heads, then key heads, then value heads
    q = apply_rotary((x @ w_q.T).view(B, T, H, D).transpose(1, 2), cos, sin)
    k = apply_rotary((x @ w_k.T).view(B, T, G, D).transpose(1, 2), cos, sin)
    v = (x @ w_v.T).view(B, T, G, D).transpose(1, 2)
    k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)  # head h reads kv head h // (H/G)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D) @ attn.proj.weight.T
    assert torch.allclose(attn(x, cos, sin), y, atol=1e-5)


def test_a_bad_config_is_one_sentence():
    for changes, message in [({"n_kv_head": 3}, r"config.n_head \(4\) must be a multiple of config.n_kv_head \(3\)"),
                             ({"n_embd": 60, "n_head": 4}, r"must split into config.n_head \(4\) heads of an even width"),
                             ({"rope_theta": -1.0}, r"config.rope_theta must be a finite number > 0, got -1.0"),
                             ({"n_layer": 0}, r"config.n_layer must be a positive integer, got 0")]:
        with pytest.raises(ValueError, match=message):
            Llama(LlamaConfig(**{**TINY, **changes}))


# --------------------------------------------------------------------------------- the model
def test_logits_have_the_vocabulary_and_the_head_is_the_embedding():
    model = tiny()
    assert model(ids(2, 9)).shape == (2, 9, 96)
    assert model.head.weight is model.tok_emb.weight
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


@torch.no_grad()
def test_a_batch_equals_each_row_alone():
    model, x = tiny(), ids(4, 12, seed=1)
    batched = model(x)
    for i in range(4):
        assert torch.allclose(batched[i], model(x[i : i + 1])[0], atol=1e-4)


@torch.no_grad()
def test_the_cache_equals_a_full_recompute_over_100_steps_while_it_grows():
    model = tiny()
    x = ids(2, 105, seed=2)
    full = model(x)
    c = model.config
    cache = LlamaKVCache(c.n_layer, 2, c.n_kv_head, c.block_size, c.head_dim, torch.float32, "cpu", reserve=8)
    steps = [model(x[:, :5], cache)]  # a prompt of 5, then 100 tokens one at a time: the cache grows 8 -> 128
    for t in range(5, 105):
        steps.append(model(x[:, t : t + 1], cache))
    assert cache.length == 105 and cache.keys[0].shape == (2, c.n_kv_head, 128, c.head_dim)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4)


@torch.no_grad()
def test_the_cache_keeps_only_the_key_value_heads():
    cache = tiny().new_cache(3)
    assert cache.keys[0].shape == (3, 2, 160, 16)  # n_kv_head (2) heads, not n_head (4)
    assert cache.capacity == 160


@torch.no_grad()
def test_decoding_works_unchanged_with_and_without_the_cache():
    model, prompt = tiny(), ids(2, 6, seed=3)
    assert torch.equal(decoding.greedy(model, prompt, 30), decoding.greedy(model, prompt, 30, use_cache=False))
    a = decoding.sample(model, prompt, 30, temperature=1.0, top_k=20, seed=0)
    assert torch.equal(a, decoding.sample(model, prompt, 30, temperature=1.0, top_k=20, seed=0, use_cache=False))
    # beam search moves cache rows between beams with reorder
    beams = decoding.beam_search(model, prompt, num_beams=4, max_new_tokens=20)
    assert torch.equal(beams.sequences, decoding.beam_search(model, prompt, num_beams=4, max_new_tokens=20,
                                                             use_cache=False).sequences)
    # the sliding window of lmlab.decoding: 190 tokens in a 160-token context, the cache cropped and refilled
    long = decoding.greedy(model, prompt[:1], 190)
    assert long.shape == (1, 196)


def test_text_in_text_out_and_log_probabilities():
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,")
    model = tiny(vocab_size=tok.vocab_size)
    text = decoding.generate(model, tok, "the cat", "greedy", max_new_tokens=10)
    assert isinstance(text, str) and len(text) == 10
    assert "".join(decoding.stream(model, tok, "the cat", "greedy", max_new_tokens=10)) == text
    lp = token_logprobs(model, torch.tensor([tok.encode("the cat sat")]))
    assert lp.shape == (1, 10) and (lp <= 0).all()


def test_a_prompt_longer_than_the_context_is_one_sentence():
    model = tiny()
    with pytest.raises(ValueError, match=r"input_ids has 161 positions but at most 160 fit in the model's context"):
        model(ids(1, 161))
    cache = model.new_cache(1)
    model(ids(1, 150), cache)
    with pytest.raises(ValueError, match=r"input_ids has 11 positions but at most 10 fit"):
        model(ids(1, 11), cache)


# ------------------------------------------------------------------------------- GGUF files
def _gguf(tmp_path, model, **options):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(llama_gguf(model, **options))
    return path


@torch.no_grad()
def test_a_gguf_file_of_the_model_loads_back_to_the_same_model(tmp_path):
    model = tiny()
    loaded = llama.from_gguf(_gguf(tmp_path, model))
    # GGUF stores the epsilon as a float32: 1e-5 comes back as 9.99999975e-06
    assert loaded.config == dataclasses.replace(model.config, norm_eps=loaded.config.norm_eps) and not loaded.training
    assert loaded.config.norm_eps == pytest.approx(1e-5, rel=1e-7)
    assert loaded.head.weight is loaded.tok_emb.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name  # q and k rows back in the trained order
    x = ids(2, 20)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)


@torch.no_grad()
def test_quantized_weights_are_dequantized_and_an_untied_head_is_read(tmp_path):
    model = tiny(tie_weights=False)
    path = _gguf(tmp_path, model, type_name="Q8_0", types={"blk.1.ffn_up.weight": "Q4_1", "blk.0.ffn_up.weight": "Q4_0",
                                                           "blk.1.ffn_down.weight": "F16", "output.weight": "BF16"})
    loaded = llama.from_gguf(path, block_size=50, dtype=torch.bfloat16)
    assert loaded.config.block_size == 50 and loaded.tok_emb.weight.dtype == torch.bfloat16
    assert loaded.head.weight is not loaded.tok_emb.weight
    with GGUFFile(path) as f:
        assert torch.equal(loaded.blocks[1].mlp.gate_up.weight[64:], f.tensor("blk.1.ffn_up.weight", torch.bfloat16))
    assert torch.allclose(loaded.head.weight.float(), model.head.weight, atol=0.01)
    assert loaded(ids(1, 50)).dtype == torch.bfloat16


@pytest.mark.parametrize("make, message", [
    (lambda m: llama_gguf(m, arch="gpt2"), r"holds a 'gpt2' model; lmlab reads only 'llama' GGUF files"),
    (lambda m: llama_gguf(m, types={"blk.0.ffn_up.weight": "Q5_0"}),
     r"stores 'blk.0.ffn_up.weight' as Q5_0, which lmlab cannot dequantize \(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1\)"),
    (lambda m: llama_gguf(m, drop=("blk.1.attn_v.weight",)), r"lacks the tensor 'blk.1.attn_v.weight'"),
    (lambda m: llama_gguf(m, metadata={"llama.block_count": (U32, 1)}),
     r"has a tensor 'blk.1.attn_k.weight' that a 1-layer Llama does not use"),
    (lambda m: llama_gguf(m, metadata={"llama.feed_forward_length": None}),
     r"lacks a valid llama.feed_forward_length \(got None\)"),
    (lambda m: llama_gguf(m, metadata={"llama.feed_forward_length": (STR, "64")}),
     r"lacks a valid llama.feed_forward_length \(got '64'\)"),
    (lambda m: llama_gguf(m, metadata={"llama.attention.head_count_kv": None}),
     r"has 'blk.0.attn_k.weight' of shape \(32, 64\), expected \(64, 64\)"),  # then every head has its own keys
    (lambda m: llama_gguf(m, metadata={"llama.block_count": (U32, 2**31)}), r"claims 2,147,483,648 blocks but holds only 20 tensors"),
    (lambda m: llama_gguf(m, metadata={"llama.context_length": (U32, 2**31)}),
     r"asks for a context of 2,147,483,648 tokens, more than lmlab builds by default \(131,072\); pass block_size="),
    (lambda m: llama_gguf(m, metadata={"llama.rope.dimension_count": (U32, 8)}),
     r"rotates 8 of each head's 16 numbers; lmlab supports only rotary embeddings over the whole head"),
])
def test_an_unsupported_gguf_is_one_sentence_before_any_tensor_is_read(tmp_path, monkeypatch, make, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(make(tiny()))
    monkeypatch.setattr(GGUFFile, "tensor", lambda *a: pytest.fail("a tensor was read before the checks"))
    with pytest.raises(ValueError, match=message):
        llama.from_gguf(path)


def test_a_context_beyond_the_files_or_a_bad_dtype_is_one_sentence(tmp_path):
    path = _gguf(tmp_path, tiny())
    with pytest.raises(ValueError, match=r"block_size must be in \[1, 160\] \(the model's context\), got 161"):
        llama.from_gguf(path, block_size=161)
    with pytest.raises(ValueError, match=r"dtype must be torch.float32, torch.bfloat16 or torch.float16, got torch.int8"):
        llama.from_gguf(path, dtype=torch.int8)


@torch.no_grad()
def test_the_first_blocks_of_a_file_load_alone_and_compute_what_the_full_models_first_blocks_do(tmp_path):
    model = tiny(n_layer=3)
    path = _gguf(tmp_path, model)
    full, part = llama.from_gguf(path), llama.from_gguf(path, n_layer=2)
    assert part.config == dataclasses.replace(full.config, n_layer=2) and len(part.blocks) == 2
    full_state = full.state_dict()
    assert all(torch.equal(t, full_state[name]) for name, t in part.state_dict().items())
    assert part.head.weight is part.tok_emb.weight
    x = ids(2, 12)
    cos, sin = full.rotary(0, 12)
    h = full.tok_emb(x)
    for block in full.blocks[:2]:
        h = block(h, cos, sin)
    assert torch.allclose(part(x), full.head(full.norm_f(h)), atol=1e-5)
    for bad in (0, 4, 2.0):
        with pytest.raises(ValueError, match=r"n_layer must be"):
            llama.from_gguf(path, n_layer=bad)
    llama.save_hf_dir(model, tmp_path / "hf")
    from_folder = llama.from_hf_dir(tmp_path / "hf", n_layer=2)
    assert from_folder.config == dataclasses.replace(model.config, n_layer=2)
    assert all(torch.equal(t, full_state[name]) for name, t in from_folder.state_dict().items())
    with pytest.raises(ValueError, match=r"n_layer must be in \[1, 3\] \(the blocks in config.json\), got 4"):
        llama.from_hf_dir(tmp_path / "hf", n_layer=4)


def test_a_loaded_model_is_for_inference_and_can_be_made_trainable(tmp_path):
    model = tiny()
    loaded = llama.from_gguf(_gguf(tmp_path, model))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert not loaded(ids(1, 5)).requires_grad  # no graph kept, even outside torch.no_grad()
    loaded.requires_grad_()
    loaded(ids(2, 5)).sum().backward()
    assert loaded.blocks[0].attn.qkv.weight.grad is not None
    llama.save_hf_dir(model, tmp_path / "hf")
    assert not any(p.requires_grad for p in llama.from_hf_dir(tmp_path / "hf").parameters())


def test_rmsnorm_prints_its_width_and_eps():
    assert repr(RMSNorm(576, 1e-5)) == "RMSNorm(576, eps=1e-05)"
    assert "(norm_1): RMSNorm(64, eps=1e-05)" in repr(tiny())


def test_the_loaded_weights_are_stored_for_fast_matrix_vector_products(tmp_path):
    loaded = llama.from_gguf(_gguf(tmp_path, tiny(intermediate_size=128)))
    w = loaded.blocks[0].mlp.gate_up.weight
    assert w.shape == (256, 64) and w.stride() == (1, 256)  # a wide matrix, stored column by column
    assert loaded.blocks[0].mlp.down.weight.stride() == (128, 1)  # a tall one, row by row as usual
    assert loaded.tok_emb.weight.stride() == (1, 96)


# ------------------------------------------------------------------------- Hugging Face layout
@torch.no_grad()
@pytest.mark.parametrize("tie", [True, False])
def test_a_hugging_face_folder_round_trips(tmp_path, tie):
    model = tiny(tie_weights=tie)
    llama.save_hf_dir(model, tmp_path, eos_token_id=2)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2 and config["eos_token_id"] == 2
    loaded = llama.from_hf_dir(tmp_path)
    assert loaded.config == model.config and (loaded.head.weight is loaded.tok_emb.weight) == tie
    x = ids(2, 10)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert llama.from_hf_dir(tmp_path, block_size=20).config.block_size == 20


def test_a_bad_hugging_face_folder_is_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no config.json; a Hugging Face model folder holds"):
        llama.from_hf_dir(tmp_path)
    llama.save_hf_dir(tiny(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"holds a 'gpt2' model; lmlab reads only model_type 'llama'"):
        llama.from_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 32}))
    with pytest.raises(ValueError, match=r"has 'model.layers.0.mlp.gate_proj.weight' of shape \(64, 64\), expected \(32, 64\)"):
        llama.from_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"model.safetensors whose tensors do not fit its config.json"):
        llama.from_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**9}))
    with pytest.raises(ValueError, match=r"has a config.json of 1,000,000,000 layers but only 20 tensors"):
        llama.from_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "hidden_size"}))
    with pytest.raises(ValueError, match=r"has a config.json without a valid 'hidden_size' for a Llama model"):
        llama.from_hf_dir(tmp_path)
    with pytest.raises(ValueError, match=r"model must be an lmlab Llama, got Linear"):
        llama.save_hf_dir(torch.nn.Linear(2, 2), tmp_path)
