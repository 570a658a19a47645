r"""kdjax's own safetensors reader and writer (no ``safetensors`` package, so a corrupt file is a
clear ValueError naming the file, not a crash inside a C extension).

* :class:`SafetensorsFile` validates a file's header and reads tensors lazily: whole as a
  read-only memory map (:meth:`~SafetensorsFile.get`) or one block of a tensor (or of its
  transpose) at a time, a chunk of rows at a time (:meth:`~SafetensorsFile.read`), into a
  64-byte aligned buffer that XLA's CPU client adopts without a copy.
* :func:`write_safetensors` writes ``(name, shape, dtype, get)`` tensors, one array in memory
  at a time.

The format: an unsigned 64-bit little-endian header length ``n``, ``n`` bytes of JSON
``{name: {"dtype": "F32" | "BF16" | ..., "shape": [...], "data_offsets": [begin, end]},
"__metadata__": {...}}``, then the raw little-endian row-major bytes, offsets relative to the
end of the header. :mod:`kdjax.models.hf` reads and writes Hugging Face checkpoints with it.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterable
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["SafetensorsFile", "write_safetensors"]

_DTYPES = {
  "F64": np.dtype(np.float64),
  "F32": np.dtype(np.float32),
  "F16": np.dtype(np.float16),
  "BF16": np.dtype(ml_dtypes.bfloat16),
  "I64": np.dtype(np.int64),
  "I32": np.dtype(np.int32),
  "I16": np.dtype(np.int16),
  "I8": np.dtype(np.int8),
  "U8": np.dtype(np.uint8),
  "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20


def _aligned_empty(shape, dtype, alignment: int = 64) -> np.ndarray:
  """``np.empty`` aligned to ``alignment`` bytes: XLA's CPU client then adopts the buffer
  (``device_put`` without a copy) instead of copying it."""
  dtype = np.dtype(dtype)
  nbytes = math.prod(shape) * dtype.itemsize
  raw = np.empty(nbytes + alignment, np.uint8)
  start = -raw.ctypes.data % alignment
  return raw[start : start + nbytes].view(dtype).reshape(shape)


class SafetensorsFile:
  """A validated safetensors file whose tensors are read lazily as read-only memory maps.

  Raises:
    ValueError: (naming the file) a missing file, a header that does not fit the file, bad
      JSON, an unknown dtype, a shape that disagrees with the byte range, overlapping or
      out-of-file byte ranges.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise ValueError(f"safetensors file {self.path} does not exist")
    size = self.path.stat().st_size
    with open(self.path, "rb") as f:
      raw = f.read(8)
      if len(raw) < 8:
        raise ValueError(f"corrupt safetensors file {self.path}: shorter than its 8-byte header")
      n = int.from_bytes(raw, "little")
      if n > min(size - 8, _MAX_HEADER):
        raise ValueError(
          f"corrupt safetensors file {self.path}: header length {n} does not fit the "
          f"file's {size} bytes"
        )
      text = f.read(n)
    try:
      header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"corrupt safetensors file {self.path}: header is not JSON ({e})") from None
    if not isinstance(header, dict):
      raise ValueError(f"corrupt safetensors file {self.path}: header is not a JSON object")
    self.metadata = header.pop("__metadata__", None) or {}
    self.data_start = 8 + n
    data_size = size - self.data_start
    self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
      try:
        dtype = _DTYPES[entry["dtype"]]
        shape = tuple(int(s) for s in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
      except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
          f"corrupt safetensors file {self.path}: bad entry for tensor {name!r}: {entry!r} ({e})"
        ) from None
      nbytes = math.prod(shape) * dtype.itemsize
      if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_size or end - begin != nbytes:
        raise ValueError(
          f"corrupt safetensors file {self.path}: tensor {name!r} of dtype {entry['dtype']} and "
          f"shape {list(shape)} needs {nbytes} bytes, its data_offsets are [{begin}, {end}] in "
          f"{data_size} data bytes"
        )
      self.entries[name] = (dtype, shape, begin, end)
    spans = sorted((b, e) for _, _, b, e in self.entries.values() if e > b)
    for (_, e0), (b1, _) in zip(spans, spans[1:]):
      if b1 < e0:
        raise ValueError(f"corrupt safetensors file {self.path}: tensors' byte ranges overlap")

  def keys(self) -> list[str]:
    return list(self.entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return self.entries[name][1]

  def dtype(self, name: str) -> np.dtype:
    return self.entries[name][0]

  def get(self, name: str) -> np.ndarray:
    """A read-only memory map of tensor ``name`` (no bytes are read until used)."""
    dtype, shape, begin, end = self.entries[name]
    if end == begin:
      return np.zeros(shape, dtype)
    return np.memmap(self.path, dtype.newbyteorder("<"), "r", self.data_start + begin, shape)

  def read(
    self,
    name: str,
    index: tuple = (),
    *,
    transposed: bool = False,
    dtype: Any = None,
    chunk_bytes: int = 16 * 2**20,
  ) -> np.ndarray:
    """The block ``index`` (slices) of tensor ``name`` (of its transpose, if ``transposed``),
    read from the file in chunks of rows of at most ``chunk_bytes``: host memory holds the
    block and one chunk, never the whole tensor twice."""
    stored_dtype, shape, begin, end = self.entries[name]
    dtype = np.dtype(dtype or stored_dtype)
    view_shape = shape[::-1] if transposed else shape
    index = tuple(index) + (slice(None),) * (len(shape) - len(tuple(index)))
    ranges = [range(*i.indices(n)) for i, n in zip(index, view_shape)]
    out = _aligned_empty([len(r) for r in ranges], dtype)
    if not shape or out.size == 0:
      if not shape:
        out[...] = self.get(name)
      return out
    stored_ranges = ranges[::-1] if transposed else ranges
    rows = stored_ranges[0]
    if rows.step != 1:
      raise ValueError(f"{self.path}: tensor {name!r}: strided row blocks are not supported")
    row_bytes = math.prod(shape[1:]) * stored_dtype.itemsize
    per_chunk = max(1, chunk_bytes // max(row_bytes, 1))
    rest = tuple(slice(r.start, r.stop, r.step) for r in stored_ranges[1:])
    with open(self.path, "rb") as f:
      for r0 in range(rows.start, rows.stop, per_chunk):
        r1 = min(rows.stop, r0 + per_chunk)
        buffer = np.empty((r1 - r0, *shape[1:]), stored_dtype.newbyteorder("<"))
        f.seek(self.data_start + begin + r0 * row_bytes)
        if f.readinto(buffer.reshape(-1).view(np.uint8)) != buffer.nbytes:
          raise ValueError(f"corrupt safetensors file {self.path}: tensor {name!r} is truncated")
        part = buffer[(slice(None), *rest)]
        target = slice(r0 - rows.start, r1 - rows.start)
        if transposed:
          out[..., target] = part.T
        else:
          out[target] = part
    return out


def write_safetensors(
  path: str | os.PathLike,
  tensors: Iterable[tuple[str, tuple[int, ...], np.dtype, Any]],
  metadata: dict | None = None,
) -> None:
  """Writes ``(name, shape, dtype, get)`` tensors, calling ``get()`` for one array at a time."""
  tensors = list(tensors)
  header, offset = {}, 0
  for name, shape, dtype, _ in tensors:
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    header[name] = {
      "dtype": _NAMES[np.dtype(dtype)],
      "shape": list(shape),
      "data_offsets": [offset, offset + nbytes],
    }
    offset += nbytes
  header["__metadata__"] = {"format": "pt", **(metadata or {})}
  text = json.dumps(header, separators=(",", ":")).encode("utf-8")
  text += b" " * (-len(text) % 8)
  with open(path, "wb") as f:
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for name, shape, dtype, get in tensors:
      array = np.ascontiguousarray(get(), dtype=np.dtype(dtype).newbyteorder("<"))
      if array.shape != tuple(shape):
        raise ValueError(f"tensor {name!r}: shape {array.shape}, expected {tuple(shape)}")
      f.write(array.tobytes())
