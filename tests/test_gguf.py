"""lmlab.gguf: the reader, the dequantization formulas, agreement with the gguf package, damaged files."""

import os
import struct

import numpy as np
import pytest
import torch

from gguf_writer import ARR, BOOL, F32, F64, I8, I16, I32, I64, STR, U8, U16, U32, U64, gguf_bytes, quantize
from lmlab.gguf import DEQUANTIZE, GGUFFile, dequantize


def require(module):
    """Import a test dependency (requirements-dev.txt): skip without it, but fail under CI."""
    try:
        return __import__(module)
    except ImportError:
        message = f"needs the {module} package (pip install -r requirements-dev.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true installs it")
        pytest.skip(message)


def write(tmp_path, data: bytes, name="f.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ dequantization
def _random_blocks(rng, type_size, n_blocks):
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # scales (and Q4_1's minimum) as finite float16 values of ordinary size
    for start in (0, 2) if type_size == 20 else (0,):
        raw[:, start : start + 2] = rng.uniform(-2, 2, n_blocks).astype("<f2").view(np.uint8).reshape(-1, 2)
    return raw


def _by_the_book(raw, type_name):
    """Each value from the format's description, one at a time: the reference for the vectorised code."""
    out = []
    for block in raw:
        d = float(np.frombuffer(block[:2].tobytes(), "<f2")[0])
        if type_name == "Q8_0":
            out += [d * q for q in np.frombuffer(block[2:].tobytes(), np.int8)]
            continue
        m = float(np.frombuffer(block[2:4].tobytes(), "<f2")[0]) if type_name == "Q4_1" else 0.0
        qs = block[4:] if type_name == "Q4_1" else block[2:]
        nibbles = [int(b) & 15 for b in qs] + [int(b) >> 4 for b in qs]  # element j < 16: low nibble of byte j
        out += [d * q + m if type_name == "Q4_1" else d * (q - 8) for q in nibbles]
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("type_name, type_size", [("Q8_0", 34), ("Q4_0", 18), ("Q4_1", 20)])
def test_block_types_dequantize_by_their_formula(type_name, type_size):
    raw = _random_blocks(np.random.default_rng(0), type_size, 6)
    got = dequantize(raw.reshape(-1), type_name, (3, 64))
    assert got.shape == (3, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got.reshape(-1), _by_the_book(raw, type_name), rtol=1e-6, atol=1e-6)


def test_float_types_dequantize_exactly():
    x = torch.randn(4, 8)
    assert np.array_equal(dequantize(np.frombuffer(quantize(x, "F32"), np.uint8), "F32", (4, 8)), x.numpy())
    assert np.array_equal(dequantize(np.frombuffer(quantize(x, "F16"), np.uint8), "F16", (4, 8)), x.half().float().numpy())
    bf16 = dequantize(np.frombuffer(quantize(x, "BF16"), np.uint8), "BF16", (4, 8))
    # bfloat16 keeps float32's top 16 bits: truncating the rest changes a value by less than 2**-7 of it
    assert np.all(np.abs(bf16 - x.numpy()) <= np.abs(x.numpy()) * 2**-7)


@pytest.mark.parametrize("type_name, steps", [("Q8_0", 127), ("Q4_0", 7), ("Q4_1", 15)])
def test_quantize_then_dequantize_is_within_half_a_step(type_name, steps):
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    got = torch.from_numpy(dequantize(np.frombuffer(quantize(x, type_name), np.uint8), type_name, (2, 64)))
    spread = x.view(-1, 32).abs().amax(1, keepdim=True) * (2 if type_name == "Q4_1" else 1)
    assert ((got.view(-1, 32) - x.view(-1, 32)).abs() <= spread / steps * 0.51 + 1e-3).all()


def test_an_unsupported_type_is_refused_with_the_supported_ones_listed():
    with pytest.raises(ValueError, match=r"type must be one of F32, F16, BF16, Q8_0, Q4_0, Q4_1 .* got 'Q5_K'"):
        dequantize(np.zeros(176, np.uint8), "Q5_K", (256,))


# ------------------------------------------------------------------------------------- reading
METADATA = [
    ("general.architecture", STR, "llama"), ("general.name", STR, "tiny ✓ café"), ("u8", U8, 200), ("i8", I8, -3),
    ("u16", U16, 60000), ("i16", I16, -300), ("u32", U32, 4_000_000_000), ("i32", I32, -5), ("f32", F32, 0.5),
    ("bool", BOOL, True), ("u64", U64, 2**40), ("i64", I64, -(2**40)), ("f64", F64, 0.25),
    ("ints", ARR, (I32, [1, -2, 3])), ("words", ARR, (STR, ["a b", "Ġthe", ""])),
    ("nested", ARR, (ARR, [(U8, [1, 2]), (U8, [])])),
]


def test_the_reader_returns_metadata_and_tensors_in_torch_order(tmp_path):
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    tensors = [("a", (3, 64), "F32", quantize(x, "F32")), ("b", (3, 64), "Q8_0", quantize(x, "Q8_0")),
               ("c", (64,), "F16", quantize(x[0], "F16"))]
    with GGUFFile(write(tmp_path, gguf_bytes(METADATA, tensors))) as f:
        assert f.version == 3
        assert f.metadata == {k: ([list(i[1]) for i in v[1]] if t == ARR and v[0] == ARR else list(v[1]) if t == ARR else v)
                              for k, t, v in METADATA}
        assert [(i.name, i.shape, i.type) for i in f.tensors.values()] == [("a", (3, 64), "F32"), ("b", (3, 64), "Q8_0"),
                                                                         ("c", (64,), "F16")]
        assert torch.equal(f.tensor("a"), x)
        assert torch.allclose(f.tensor("b"), x, atol=x.abs().max().item() / 127)
        assert f.tensor("a", torch.bfloat16).dtype == torch.bfloat16
        with pytest.raises(ValueError, match=r"name must be a tensor of f.gguf, got 'nope'"):
            f.tensor("nope")


def test_the_reader_agrees_with_the_gguf_package(tmp_path):
    gguf = require("gguf")
    rng = np.random.default_rng(0)
    path = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 100000.0)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["<|endoftext|>", "a", "Ġb", "日本"])
    w.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1])
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    arrays = {}
    for type_name in DEQUANTIZE:
        qtype = gguf.GGMLQuantizationType[type_name]
        data = rng.standard_normal((4, 96)).astype(np.float32)
        if type_name == "F32":
            w.add_tensor(type_name, data)
        elif type_name == "F16":
            w.add_tensor(type_name, data.astype(np.float16))
        else:
            w.add_tensor(type_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        arrays[type_name] = data
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    theirs = gguf.GGUFReader(str(path))
    with GGUFFile(path) as ours:
        for key, field in theirs.fields.items():
            if not key.startswith("GGUF."):
                assert ours.metadata[key] == pytest.approx(field.contents()), key
        assert len(ours.tensors) == len(theirs.tensors) == len(DEQUANTIZE)
        for t in theirs.tensors:
            expected = gguf.quants.dequantize(t.data, t.tensor_type)
            got = ours.tensor(t.name).numpy()
            assert got.shape == expected.shape == (4, 96)  # both in torch's order
            assert np.array_equal(got, expected), t.name  # bit for bit


# ------------------------------------------------------------------------------ damaged files
X = torch.zeros(2, 32)
GOOD_TENSOR = ("w", (2, 32), "F32", quantize(X, "F32"))


def _patch(data: bytes, at: int, fmt: str, value) -> bytes:
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt):]


def _string_length_at_first_key(n):
    return _patch(gguf_bytes([("k", STR, "v")], [GOOD_TENSOR]), 24, "<Q", n)


DAMAGED = {
    "empty": (b"", r"is not a GGUF file: it has only 0 bytes"),
    "not gguf": (b"PK\x03\x04" + bytes(60), r"is not a GGUF file: it starts with b'PK\\x03\\x04', not b'GGUF'"),
    "version 1": (gguf_bytes(version=1), r"is GGUF version 1; lmlab reads versions 2 and 3"),
    "absurd kv count": (gguf_bytes([("k", U8, 1)], n_kv=2**62),
                        r"claims 4,611,686,018,427,387,904 metadata entries \(kv_count\) but has room for at most \d+"),
    "absurd tensor count": (gguf_bytes([], [GOOD_TENSOR], n_tensors=10**12), r"claims 1,000,000,000,000 tensors"),
    "absurd string length": (_string_length_at_first_key(2**63), r"a metadata key needs 9,223,372,036,854,775,808 bytes "
                                                                  r"at position 32 but the file ends at"),
    "absurd array length": (gguf_bytes([("a", ARR, (U32, [1, 2]))]).replace(struct.pack("<IQ", U32, 2), struct.pack("<IQ", U32, 2**61)),
                            r"claims 2,305,843,009,213,693,952 items in the array 'a' but has room for at most"),
    # header (24 bytes), key length (8) and "k" (1), then the value type
    "unknown value type": (_patch(gguf_bytes([("k", U8, 1)]), 33, "<I", 77),
                           r"metadata 'k' has value type 77, which is not a GGUF type"),
    "repeated key": (gguf_bytes([("k", U8, 1), ("k", U8, 2)]), r"metadata key 'k' appears twice"),
    "bad utf-8": (gguf_bytes([("k", STR, "ab")]).replace(b"ab", b"\xff\xfe"), r"the value of 'k' at position \d+ is not UTF-8"),
    "five dimensions": (gguf_bytes([], [("w", (1, 1, 1, 2, 32), "F32", quantize(torch.zeros(64), "F32"))]),
                        r"tensor 'w' has 5 dimensions \(allowed: 1 to 4\)"),
    "zero dimension": (gguf_bytes([], [("w", (0, 32), "F32", b"")]), r"tensor 'w' has a dimension of 0"),
    "unknown storage type": (gguf_bytes([], [("w", (2, 32), 99, quantize(X, "F32"))]),
                             r"tensor 'w' has storage type id 99, which is not a ggml type"),
    "absurd size": (gguf_bytes([], [("w", (2**40, 2**20), "F32", b"")]),
                    r"tensor 'w' needs bytes \d[\d,]* to 4,\d[\d,]* but the file has only \d+: it is truncated or damaged"),
    "offset past the end": (gguf_bytes([], [(*GOOD_TENSOR, 2**50)]), r"tensor 'w' needs bytes .* but the file has only"),
    "misaligned offset": (gguf_bytes([], [(*GOOD_TENSOR, 3)]), r"tensor 'w' starts at offset 3, not a multiple of the alignment 32"),
    "truncated data": (gguf_bytes([], [GOOD_TENSOR])[:-100], r"tensor 'w' needs bytes .* it is truncated or damaged"),
    "truncated header": (gguf_bytes([("a", U8, 1), ("key", STR, "a value of some length")])[:70],
                         r"is damaged or truncated: the value of 'key' needs 22 bytes at position 61 but the file ends at 70"),
    "partial block": (gguf_bytes([], [("w", (2, 33), "Q8_0", bytes(68))]), r"rows of 33 values, not a multiple of Q8_0's block of 32"),
    "bad alignment": (gguf_bytes([("general.alignment", U32, 48)]), r"general.alignment is 48, not a power of two"),
    "repeated tensor": (gguf_bytes([], [GOOD_TENSOR, GOOD_TENSOR]), r"tensor 'w' appears twice"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_file_is_one_sentence_before_anything_is_allocated(tmp_path, case):
    data, message = DAMAGED[case]
    path = write(tmp_path, data)
    # counts and sizes of 2**40 and more: had any of them been allocated, this would be a MemoryError
    with pytest.raises(ValueError, match=message) as err:
        GGUFFile(path)
    text = str(err.value)
    assert text.startswith(f"path {str(path)!r}") and "\n" not in text and text.count(". ") == 0


def test_a_missing_file_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; give the path of a .gguf file"):
        GGUFFile(tmp_path / "missing.gguf")


def test_a_well_formed_file_reads_after_those_checks(tmp_path):
    """The damaged cases above differ from this file in one field each: the checks are not too strict."""
    with GGUFFile(write(tmp_path, gguf_bytes([("k", STR, "ab"), ("general.alignment", U32, 64)], [GOOD_TENSOR],
                                             alignment=64))) as f:
        assert torch.equal(f.tensor("w"), X)
