"""Reading GGUF, the one-file model format of llama.cpp: metadata, tensors, and their dequantization.

    f = lmlab.gguf.GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")
    f.metadata["llama.block_count"]          # 30
    f.tensors["blk.0.attn_q.weight"]         # TensorInfo(shape=(576, 576), type='Q4_1', ...)
    f.tensor("blk.0.attn_q.weight")          # torch.float32 (576, 576), dequantized

A GGUF file is a header (magic b"GGUF", version, tensor count, metadata count), a list of typed
key/value pairs (numbers, strings, arrays: the hyperparameters and the whole vocabulary), a list of
tensor descriptions (name, dimensions, storage type, offset) and then the tensor data, aligned.
Two facts trip up every first reader:

- Dimensions are stored fastest-varying first (ggml's `ne[0]` is the length of a row), the reverse of
  torch's order: a (out_features, in_features) weight is stored as [in_features, out_features].
  `TensorInfo.shape` is already in torch's order.
- Quantized types store blocks of 32 values: Q8_0 is one float16 scale `d` and 32 int8 `q`
  (value = d * q); Q4_0 is `d` and 32 4-bit `q` (value = d * (q - 8)); Q4_1 is `d`, a float16 minimum
  `m` and 32 4-bit `q` (value = d * q + m). A byte holds two 4-bit values: its low nibbles are the
  block's first 16 values, its high nibbles the last 16.

The file is memory-mapped and each tensor is dequantized on its own, so reading a model needs the
memory of the model plus one tensor, not two copies of it. Every count, length and offset is checked
against the file's size before anything is allocated: a damaged or crafted file gets a one-sentence
`ValueError`, never a huge allocation or a read past its end.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # ggml tensors have at most 4 dimensions
MAX_NESTING = 4  # arrays of arrays of ... in metadata; real files use 1

# ggml storage types: id -> (name, values per block, bytes per block). All of them are listed so
# that any file's layout can be checked; `DEQUANTIZE` says which ones lmlab can turn into floats.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
}

# metadata value types: id -> (struct format, size) for scalars; 8 is a string, 9 an array
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
            7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_STRING, _ARRAY = 8, 9
_SCALAR_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 10: "<u8", 11: "<i8", 12: "<f8"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (the file stores it reversed)
    type: str  # ggml storage type, e.g. "Q4_1"
    offset: int  # absolute position of the first byte in the file
    nbytes: int


class GGUFFile:
    """A GGUF file opened for reading: `metadata` (dict), `tensors` (dict of TensorInfo), `tensor(name)`."""

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        if not self.path.is_file():
            raise FileNotFoundError(f"path {str(self.path)!r} does not exist; give the path of a .gguf file")
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise ValueError(f"path {str(self.path)!r} is not a GGUF file: it has only {size} bytes")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------------- header
    def _parse(self):
        self._pos = 0
        magic = bytes(self._map[:4])
        if magic != MAGIC:
            raise ValueError(f"path {str(self.path)!r} is not a GGUF file: it starts with {magic!r}, not {MAGIC!r}")
        self._pos = 4
        self.version = self._scalar(4)
        if self.version not in (2, 3):
            raise ValueError(f"path {str(self.path)!r} is GGUF version {self.version}; lmlab reads versions 2 and 3")
        n_tensors, n_kv = self._scalar(10), self._scalar(10)
        # the smallest metadata entry takes 13 bytes, the smallest tensor description 32: a count that
        # cannot fit in the file is refused before it sizes any list
        self._check_count(n_kv, 13, "metadata entries (kv_count)")
        self._check_count(n_tensors, 32, "tensors (tensor_count)")
        self.metadata = {}
        for _ in range(n_kv):
            key = self._string("a metadata key")
            if key in self.metadata:
                raise ValueError(f"path {str(self.path)!r} is damaged: metadata key {key!r} appears twice")
            self.metadata[key] = self._value(self._scalar(4), key, 0)
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1) or alignment > 1 << 16:
            raise ValueError(f"path {str(self.path)!r} is damaged: general.alignment is {alignment!r}, not a power of two")
        raw = []
        for _ in range(n_tensors):
            name = self._string("a tensor name")
            n_dims = self._scalar(4)
            if not 1 <= n_dims <= MAX_DIMS:
                raise ValueError(f"path {str(self.path)!r} is damaged: tensor {name!r} has {n_dims} dimensions "
                                 f"(allowed: 1 to {MAX_DIMS})")
            dims = [self._scalar(10) for _ in range(n_dims)]
            raw.append((name, dims, self._scalar(4), self._scalar(10)))
        data_start = -(-self._pos // alignment) * alignment
        self.tensors = {}
        for name, dims, type_id, offset in raw:
            self.tensors[name] = self._tensor_info(name, dims, type_id, offset, data_start, alignment)
        del self._pos

    def _tensor_info(self, name, dims, type_id, offset, data_start, alignment) -> TensorInfo:
        where = f"path {str(self.path)!r} is damaged: tensor {name!r}"
        if name in self.tensors:
            raise ValueError(f"{where} appears twice")
        if type_id not in GGML_TYPES:
            raise ValueError(f"{where} has storage type id {type_id}, which is not a ggml type")
        type_name, block, type_size = GGML_TYPES[type_id]
        count = 1
        for d in dims:
            if d < 1:
                raise ValueError(f"{where} has a dimension of {d}; every dimension must be >= 1")
            count *= d  # Python ints: no overflow, the size check below catches absurd products
        if dims[0] % block:
            raise ValueError(f"{where} has rows of {dims[0]} values, not a multiple of {type_name}'s block of {block}")
        nbytes = count // block * type_size
        start = data_start + offset
        if offset % alignment:
            raise ValueError(f"{where} starts at offset {offset}, not a multiple of the alignment {alignment}")
        if start + nbytes > len(self._map):
            raise ValueError(f"{where} needs bytes {start:,} to {start + nbytes:,} but the file has only "
                             f"{len(self._map):,}: it is truncated or damaged")
        return TensorInfo(name, tuple(reversed(dims)), type_name, start, nbytes)

    def _check_count(self, count, min_size, what):
        room = (len(self._map) - self._pos) // min_size
        if count > room:
            raise ValueError(f"path {str(self.path)!r} is damaged: it claims {count:,} {what} but has room for "
                             f"at most {room:,}")

    def _take(self, n, what):
        if n > len(self._map) - self._pos:
            raise ValueError(f"path {str(self.path)!r} is damaged or truncated: {what} needs {n:,} bytes at "
                             f"position {self._pos:,} but the file ends at {len(self._map):,}")
        start = self._pos
        self._pos += n
        return start

    def _scalar(self, type_id):
        fmt, size = _SCALARS[type_id]
        return struct.unpack_from(fmt, self._map, self._take(size, "a number"))[0]

    def _string(self, what):
        n = self._scalar(10)
        start = self._take(n, what)
        try:
            return self._map[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"path {str(self.path)!r} is damaged: {what} at position {start:,} is not UTF-8") from None

    def _value(self, type_id, key, depth):
        if type_id in _SCALARS:
            return self._scalar(type_id)
        if type_id == _STRING:
            return self._string(f"the value of {key!r}")
        if type_id != _ARRAY or depth >= MAX_NESTING:
            raise ValueError(f"path {str(self.path)!r} is damaged: metadata {key!r} has value type {type_id}, "
                             f"which is not a GGUF type (or arrays nest deeper than {MAX_NESTING})")
        item_type, n = self._scalar(4), self._scalar(10)
        item_size = _SCALARS[item_type][1] if item_type in _SCALARS else 8 if item_type == _STRING else 12
        self._check_count(n, item_size, f"items in the array {key!r}")
        if item_type in _SCALAR_NUMPY:  # numbers in one go (token scores, types): a list of Python numbers
            start = self._take(n * item_size, f"the array {key!r}")
            return np.frombuffer(self._map, dtype=_SCALAR_NUMPY[item_type], count=n, offset=start).tolist()
        return [self._value(item_type, key, depth + 1) for _ in range(n)]

    # ----------------------------------------------------------------------------------- tensors
    def tensor(self, name: str, dtype=torch.float32) -> torch.Tensor:
        """The tensor `name`, dequantized to `dtype`, in torch's dimension order; a fresh copy."""
        if name not in self.tensors:
            raise ValueError(f"name must be a tensor of {self.path.name}, got {name!r}")
        info = self.tensors[name]
        raw = np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return torch.from_numpy(dequantize(raw, info.type, info.shape)).to(dtype)

    def close(self):
        if getattr(self, "_map", None) is not None:
            self._map.close()
            self._map = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"GGUFFile({str(self.path)!r}, {len(self.metadata)} metadata entries, {len(self.tensors)} tensors)"


# ------------------------------------------------------------------------------- dequantization
def _blocks(raw, type_size):
    return raw.reshape(-1, type_size)


def _f16(columns):
    """(n_blocks, 2) bytes -> (n_blocks, 1) float32: a block's float16 scale."""
    return np.ascontiguousarray(columns).view("<f2").astype(np.float32)


def _nibbles(qs):
    """(n_blocks, 16) bytes -> (n_blocks, 32) values 0..15: low nibbles first, then high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _dequantize_q8_0(raw):
    b = _blocks(raw, 34)
    return b[:, 2:].view(np.int8).astype(np.float32) * _f16(b[:, :2])


def _dequantize_q4_0(raw):
    b = _blocks(raw, 18)
    return _f16(b[:, :2]) * (_nibbles(b[:, 2:]).astype(np.int8) - np.int8(8)).astype(np.float32)


def _dequantize_q4_1(raw):
    b = _blocks(raw, 20)
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).astype(np.float32) + _f16(b[:, 2:4])


DEQUANTIZE = {
    "F32": lambda raw: raw.view("<f4").copy(),  # a copy: the bytes belong to the memory-mapped file
    "F16": lambda raw: raw.view("<f2").astype(np.float32),
    # bfloat16 is the top half of a float32: shift its 16 bits up
    "BF16": lambda raw: (raw.view("<u2").astype(np.uint32) << 16).view(np.float32),
    "Q8_0": _dequantize_q8_0,
    "Q4_0": _dequantize_q4_0,
    "Q4_1": _dequantize_q4_1,
}


def dequantize(raw: np.ndarray, type: str, shape) -> np.ndarray:
    """Bytes `raw` (1-D uint8) of a tensor stored as `type` -> float32 array of `shape` (torch order)."""
    if type not in DEQUANTIZE:
        raise ValueError(f"type must be one of {', '.join(DEQUANTIZE)} (the storage types lmlab can dequantize), "
                         f"got {type!r}")
    return DEQUANTIZE[type](raw).reshape(shape)
