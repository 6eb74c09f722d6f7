"""A minimal GGUF writer for the tests: small well-formed files, and damaged ones on purpose.

Written from the format's description (not with lmlab.gguf, which it tests): a header, typed
key/value pairs, tensor descriptions with dimensions in ggml's order (reversed), aligned data.
"""

import struct

import numpy as np
import torch

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
            U64: "<Q", I64: "<q", F64: "<d"}
TYPE_IDS = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q8_0": 8, "BF16": 30}


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def value(vtype: int, v) -> bytes:
    if vtype == STR:
        return string(v)
    if vtype == ARR:
        item_type, items = v
        return struct.pack("<IQ", item_type, len(items)) + b"".join(value(item_type, x) for x in items)
    return struct.pack(_FORMATS[vtype], v)


def gguf_bytes(metadata=(), tensors=(), version=3, alignment=32, n_kv=None, n_tensors=None) -> bytes:
    """metadata: (key, value type, value) triples; tensors: (name, torch-order shape, type name or id,
    raw bytes) or with a fifth item, an offset to write instead of the true one. n_kv / n_tensors
    override the counts in the header."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                len(metadata) if n_kv is None else n_kv)
    out += b"".join(string(k) + struct.pack("<I", t) + value(t, v) for k, t, v in metadata)
    data = b""
    for name, shape, type_name, raw, *offset in tensors:
        out += string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *reversed(shape))
        out += struct.pack("<IQ", TYPE_IDS.get(type_name, type_name), offset[0] if offset else len(data))
        data += raw + bytes(-len(raw) % alignment)
    return out + bytes(-len(out) % alignment) + data


# ------------------------------------------------------------------ quantizers (test data only)
def _f16(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype("<f2")


def _pack_nibbles(q) -> bytes:
    """32 values 0..15 -> 16 bytes: values 0-15 in the low nibbles, 16-31 in the high ones."""
    return (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()


def quantize(x: torch.Tensor, type_name: str) -> bytes:
    """Bytes of float tensor x stored as `type_name` (rows a multiple of 32 for block types)."""
    a = x.detach().float().numpy().reshape(-1)
    if type_name == "F32":
        return a.astype("<f4").tobytes()
    if type_name == "F16":
        return a.astype("<f2").tobytes()
    if type_name == "BF16":
        return (a.view(np.uint32) >> 16).astype("<u2").tobytes()  # truncation: fine for test data
    blocks = a.reshape(-1, 32)
    out = bytearray()
    for b in blocks:
        if type_name == "Q8_0":
            d = _f16(np.abs(b).max() / 127 or 1.0)
            q = np.clip(np.round(b / np.float32(d)), -127, 127).astype(np.int8)
            out += d.tobytes() + q.tobytes()
        elif type_name == "Q4_0":  # value = d * (q - 8)
            d = _f16(np.abs(b).max() / 7 or 1.0)
            q = np.clip(np.round(b / np.float32(d)) + 8, 0, 15).astype(np.uint8)
            out += d.tobytes() + _pack_nibbles(q)
        elif type_name == "Q4_1":  # value = d * q + m
            m = _f16(b.min())
            d = _f16((b.max() - np.float32(m)) / 15 or 1.0)
            q = np.clip(np.round((b - np.float32(m)) / np.float32(d)), 0, 15).astype(np.uint8)
            out += d.tobytes() + m.tobytes() + _pack_nibbles(q)
        else:
            raise ValueError(type_name)
    return bytes(out)


def permute_for_llama_cpp(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's converter: q/k rows reordered per head so that adjacent pairs rotate together."""
    out_features, in_features = w.shape
    return w.reshape(n_heads, 2, out_features // n_heads // 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def llama_gguf(model, type_name="F32", arch="llama", metadata=None, drop=(), types=None) -> bytes:
    """A GGUF file of an lmlab Llama, laid out as llama.cpp's converter writes one.

    metadata: {key: (value type, value)} to add or replace, or {key: None} to leave out; drop: tensor
    names to leave out; types: {tensor name: storage type} where not `type_name` (norms are F32).
    """
    c = model.config
    meta = {"general.architecture": (STR, arch), f"{arch}.block_count": (U32, c.n_layer),
            f"{arch}.context_length": (U32, c.block_size), f"{arch}.embedding_length": (U32, c.n_embd),
            f"{arch}.feed_forward_length": (U32, c.intermediate_size), f"{arch}.attention.head_count": (U32, c.n_head),
            f"{arch}.attention.head_count_kv": (U32, c.n_kv_head), f"{arch}.rope.freq_base": (F32, c.rope_theta),
            f"{arch}.attention.layer_norm_rms_epsilon": (F32, c.norm_eps)}
    meta.update(metadata or {})
    metadata = [(key, *tv) for key, tv in meta.items() if tv is not None]
    sd = model.state_dict()
    H, G, D = c.n_head, c.n_kv_head, c.head_dim
    weights = {"token_embd.weight": sd["tok_emb.weight"], "output_norm.weight": sd["norm_f.weight"]}
    if not c.tie_weights:
        weights["output.weight"] = sd["head.weight"]
    for i in range(c.n_layer):
        b, ours = f"blk.{i}.", f"blocks.{i}."
        q, k, v = sd[ours + "attn.qkv.weight"].split([H * D, G * D, G * D])  # lmlab stacks what GGUF keeps apart
        gate, up = sd[ours + "mlp.gate_up.weight"].chunk(2)
        weights.update({b + "attn_norm.weight": sd[ours + "norm_1.weight"], b + "attn_q.weight": permute_for_llama_cpp(q, H),
                        b + "attn_k.weight": permute_for_llama_cpp(k, G), b + "attn_v.weight": v,
                        b + "attn_output.weight": sd[ours + "attn.proj.weight"], b + "ffn_norm.weight": sd[ours + "norm_2.weight"],
                        b + "ffn_gate.weight": gate, b + "ffn_up.weight": up, b + "ffn_down.weight": sd[ours + "mlp.down.weight"]})
    tensors = []
    for name, w in weights.items():
        if name in drop:
            continue
        t = (types or {}).get(name, type_name if w.dim() == 2 else "F32")  # norms stay F32, as in real files
        tensors.append((name, tuple(w.shape), t, quantize(w, t) if t != "Q5_0" else bytes(w.numel() // 32 * 22)))
    return gguf_bytes(metadata, tensors)


def tokenizer_metadata(pre="smollm") -> dict:
    """A byte-level BPE vocabulary shaped like SmolLM2's, small: 3 control tokens, the 256 byte
    symbols, 3 merges; with its chat template. For llama_gguf(..., metadata=...) of a 262-token model."""
    from tokenizers.pre_tokenizers import ByteLevel

    control = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he"]
    tokens = control + sorted(ByteLevel.alphabet()) + ["Ġt", "he", "Ġthe"]
    template = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}")
    return {"tokenizer.ggml.model": (STR, "gpt2"), "tokenizer.ggml.pre": (STR, pre),
            "tokenizer.ggml.tokens": (ARR, (STR, tokens)), "tokenizer.ggml.merges": (ARR, (STR, merges)),
            "tokenizer.ggml.token_type": (ARR, (I32, [3] * 3 + [1] * (len(tokens) - 3))),
            "tokenizer.ggml.eos_token_id": (U32, 2), "tokenizer.ggml.add_bos_token": (BOOL, False),
            "tokenizer.chat_template": (STR, template)}
