r"""Hugging Face checkpoints in and out: ``config.json`` + safetensors + ``tokenizer.json``.

* :func:`from_pretrained` builds a :class:`~kdjax.models.llama.LlamaLM` (``model_type``
  ``llama``, ``mistral`` without sliding window, ``qwen2``) or a
  :class:`~kdjax.models.gpt2.GPT2LM` (``gpt2``) from a checkpoint directory and loads its
  weights, one tensor at a time, straight into their sharding on a mesh
  (:mod:`kdjax.models.partitioning`): each device reads only its own slice of each tensor
  from the file, a chunk of rows at a time, so the checkpoint is never held twice in host
  memory. Both the Hub's legacy ``rope_theta`` / ``rope_scaling`` keys and
  transformers 5's ``rope_parameters`` are read.
* :func:`save_pretrained` writes ``config.json`` (legacy rope keys, which every transformers
  version reads) and safetensors, split into ``model-0000k-of-0000n.safetensors`` with a
  ``model.safetensors.index.json`` above ``max_shard_size``; ``transformers``'
  ``AutoModelForCausalLM.from_pretrained`` loads it to the same logits.
* :func:`load_tokenizer` reads ``tokenizer.json`` with the ``tokenizers`` library and
  implements :class:`kdjax.data.text.Tokenizer`, including ``token_bytes`` (so bits per byte
  compare with the byte-level models).

The safetensors format (read and written here without the ``safetensors`` package, so a
corrupt file is a clear ValueError, not a crash inside a C extension): an unsigned 64-bit
little-endian header length ``n``, ``n`` bytes of JSON ``{name: {"dtype": "F32" | "BF16" |
..., "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw
little-endian row-major bytes, offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from kdjax.models import partitioning
from kdjax.models.gpt2 import ACTIVATIONS, GPT2LM
from kdjax.models.llama import ROPE_TYPES, LlamaLM

__all__ = [
  "SUPPORTED_MODEL_TYPES",
  "SafetensorsFile",
  "config_to_model",
  "model_to_config",
  "from_pretrained",
  "save_pretrained",
  "load_tokenizer",
  "HFTokenizer",
]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "gpt2")
CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

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

# ----------------------------------------------------------------------------- safetensors


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


# ---------------------------------------------------------------------------------- config


def _rope(config: dict, where: str) -> tuple[float, tuple]:
  """``(rope_theta, sorted rope_scaling pairs)`` from legacy keys or ``rope_parameters``."""
  if config.get("rope_parameters") is not None:
    params = dict(config["rope_parameters"])
    if "rope_theta" not in params and "rope_theta" not in config:
      raise ValueError(f"{where}: rope_parameters has no 'rope_theta'")
    theta = float(params.pop("rope_theta", config.get("rope_theta")))
    scaling = params
  else:
    theta = float(config.get("rope_theta", 10000.0))
    scaling = dict(config.get("rope_scaling") or {})
  if "type" in scaling and "rope_type" not in scaling:
    scaling["rope_type"] = scaling.pop("type")
  scaling.pop("type", None)
  kind = scaling.get("rope_type", "default")
  if kind not in ROPE_TYPES:
    raise ValueError(
      f"{where}: rope scaling type {kind!r} (rope_scaling / rope_parameters.rope_type) is not "
      f"supported; supported: {list(ROPE_TYPES)}"
    )
  if float(scaling.pop("partial_rotary_factor", 1.0)) != 1.0:
    raise ValueError(f"{where}: partial_rotary_factor != 1 is not supported")
  needed = {
    "linear": ("factor",),
    "llama3": (
      "factor",
      "low_freq_factor",
      "high_freq_factor",
      "original_max_position_embeddings",
    ),
  }.get(kind, ())
  missing = [k for k in needed if k not in scaling]
  if missing:
    raise ValueError(f"{where}: rope scaling {kind!r} needs keys {missing}")
  keep = {"rope_type": kind}
  for k in needed:
    keep[k] = int(scaling[k]) if k.endswith("_embeddings") else float(scaling[k])
  return theta, () if kind == "default" else tuple(sorted(keep.items()))


def config_to_model(config: dict, *, dtype: Any = jnp.float32, where: str = CONFIG_NAME):
  """The flax model of a Hugging Face ``config.json`` dict.

  Raises:
    ValueError: naming ``where`` and the key: unsupported ``model_type`` (the supported ones
      are listed), activation, sliding window or rope scaling; inconsistent head counts.
  """
  kind = config.get("model_type")
  if kind not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
      f"{where}: model_type {kind!r} is not supported; supported: {list(SUPPORTED_MODEL_TYPES)}"
    )

  def need(key):
    if key not in config:
      raise ValueError(f"{where}: missing key {key!r} (model_type {kind!r})")
    return config[key]

  if kind == "gpt2":
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
      raise ValueError(
        f"{where}: activation_function {activation!r} is not supported; supported: "
        f"{sorted(ACTIVATIONS)}"
      )
    for key, ok in (
      ("scale_attn_weights", True),
      ("scale_attn_by_inverse_layer_idx", False),
      ("reorder_and_upcast_attn", False),
      ("add_cross_attention", False),
    ):
      if bool(config.get(key, ok)) != ok:
        raise ValueError(f"{where}: {key}={config[key]!r} is not supported (only {ok})")
    if not config.get("tie_word_embeddings", True):
      raise ValueError(f"{where}: gpt2 with tie_word_embeddings=false is not supported")
    width = int(need("n_embd"))
    return GPT2LM(
      vocab_size=int(need("vocab_size")),
      max_len=int(need("n_positions")),
      embed_dim=width,
      num_layers=int(need("n_layer")),
      num_heads=int(need("n_head")),
      mlp_dim=int(config.get("n_inner") or 4 * width),
      layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
      activation=activation,
      dtype=dtype,
      param_dtype=dtype,
    )
  if config.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (only 'silu')")
  if config.get("mlp_bias", False):
    raise ValueError(f"{where}: mlp_bias=true is not supported")
  max_len = int(need("max_position_embeddings"))
  if kind == "mistral" and config.get("sliding_window") not in (None, 0):
    if int(config["sliding_window"]) < max_len:
      raise ValueError(
        f"{where}: sliding_window={config['sliding_window']} < max_position_embeddings "
        f"is not supported (mistral without sliding window only)"
      )
  if kind == "qwen2" and (
    config.get("use_sliding_window", False)
    or "sliding_attention" in (config.get("layer_types") or ())
  ):
    raise ValueError(f"{where}: use_sliding_window / sliding_attention is not supported")
  heads = int(need("num_attention_heads"))
  kv_heads = int(config.get("num_key_value_heads") or heads)
  width = int(need("hidden_size"))
  if heads % kv_heads:
    raise ValueError(
      f"{where}: num_key_value_heads={kv_heads} must divide num_attention_heads={heads}"
    )
  theta, scaling = _rope(config, where)
  return LlamaLM(
    vocab_size=int(need("vocab_size")),
    max_len=max_len,
    embed_dim=width,
    num_layers=int(need("num_hidden_layers")),
    num_heads=heads,
    num_kv_heads=kv_heads,
    head_dim=int(config.get("head_dim") or width // heads),
    mlp_dim=int(need("intermediate_size")),
    rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
    rope_theta=theta,
    rope_scaling=scaling,
    attention_bias=kind == "qwen2" or bool(config.get("attention_bias", False)),
    output_bias=kind != "qwen2" and bool(config.get("attention_bias", False)),
    tie_embeddings=bool(config.get("tie_word_embeddings", False)),
    dtype=dtype,
    param_dtype=dtype,
  )


def model_to_config(model, *, model_type: str | None = None, **extra) -> dict:
  """The ``config.json`` dict of a LlamaLM (``model_type`` llama, or qwen2 / mistral) or
  GPT2LM, with the legacy ``rope_theta`` / ``rope_scaling`` keys."""
  dtype = np.dtype(model.param_dtype).name
  if isinstance(model, GPT2LM):
    config = {
      "model_type": "gpt2",
      "architectures": ["GPT2LMHeadModel"],
      "vocab_size": model.vocab_size,
      "n_positions": model.max_len,
      "n_embd": model.embed_dim,
      "n_layer": model.num_layers,
      "n_head": model.num_heads,
      "n_inner": model.mlp_dim,
      "layer_norm_epsilon": model.layer_norm_eps,
      "activation_function": model.activation,
      "tie_word_embeddings": True,
      "resid_pdrop": 0.0,
      "embd_pdrop": 0.0,
      "attn_pdrop": 0.0,
    }
  elif isinstance(model, LlamaLM):
    if model.output_bias and not model.attention_bias:
      raise ValueError("output_bias without attention_bias has no Hugging Face model_type")
    model_type = model_type or (
      "qwen2" if model.attention_bias and not model.output_bias else "llama"
    )
    if model_type == "qwen2" and model.output_bias:
      raise ValueError("qwen2 has no o_proj bias: use model_type='llama'")
    if model_type == "llama" and model.attention_bias != model.output_bias:
      raise ValueError("llama's attention_bias covers q, k, v and o: use model_type='qwen2'")
    if model_type not in ("llama", "qwen2", "mistral"):
      raise ValueError(f"model_type must be llama, qwen2 or mistral, got {model_type!r}")
    if model_type == "mistral" and model.attention_bias:
      raise ValueError("mistral has no attention bias: use model_type='qwen2' or 'llama'")
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
      model_type, "MistralForCausalLM"
    )
    config = {
      "model_type": model_type,
      "architectures": [arch],
      "vocab_size": model.vocab_size,
      "max_position_embeddings": model.max_len,
      "hidden_size": model.embed_dim,
      "num_hidden_layers": model.num_layers,
      "num_attention_heads": model.num_heads,
      "num_key_value_heads": model.num_kv_heads,
      "head_dim": model.head_dim,
      "intermediate_size": model.mlp_dim,
      "rms_norm_eps": model.rms_norm_eps,
      "rope_theta": model.rope_theta,
      "rope_scaling": dict(model.rope_scaling) or None,
      "hidden_act": "silu",
      "tie_word_embeddings": model.tie_embeddings,
      "attention_dropout": 0.0,
    }
    if model_type == "qwen2":
      config["use_sliding_window"] = False
      config["sliding_window"] = None
    else:
      config["attention_bias"] = model.attention_bias
      config["mlp_bias"] = False
      if model_type == "mistral":
        config["sliding_window"] = None
  else:
    raise ValueError(f"save_pretrained needs a LlamaLM or GPT2LM, got {type(model).__name__}")
  return {
    **config,
    "torch_dtype": dtype,
    "dtype": dtype,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    **extra,
  }


# -------------------------------------------------------------------------- name mapping

_LLAMA_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
_LEAF = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def _hf_name(model, path: tuple[str, ...]) -> tuple[str, bool]:
  """``(Hugging Face tensor name, whether the array is transposed)`` of a flax param path."""
  if path == ("wpe",):  # GPT-2's position table is a bare parameter
    return "transformer.wpe.weight", False
  *modules, leaf = path
  hf_leaf = _LEAF[leaf]
  if isinstance(model, GPT2LM):
    top = modules[0]
    if top.startswith("h_"):
      part = modules[1].replace("attn_", "attn.").replace("mlp_", "mlp.")
      return f"transformer.h.{top[2:]}.{part}.{hf_leaf}", False  # Conv1D: [in, out]
    return f"transformer.{top}.{hf_leaf}", False
  top = modules[0]
  transposed = leaf == "kernel"
  if top.startswith("layers_"):
    part = modules[1]
    group = "self_attn." if part in _LLAMA_ATTN else "mlp." if part in _LLAMA_MLP else ""
    return f"model.layers.{top[7:]}.{group}{part}.{hf_leaf}", transposed
  if top == "lm_head":
    return "lm_head.weight", True
  return f"model.{top}.{hf_leaf}", transposed


def _ignored(model, name: str) -> bool:
  """Buffers and tied copies that old or tied checkpoints store and the model recomputes."""
  if name.endswith(("rotary_emb.inv_freq", ".attn.masked_bias")):
    return True
  if isinstance(model, GPT2LM):
    return name == "lm_head.weight" or bool(
      re.fullmatch(r"(transformer\.)?h\.\d+\.attn\.bias", name)
    )
  return name == "lm_head.weight" and model.tie_embeddings


def _canonical(model, name: str) -> str:
  if isinstance(model, GPT2LM) and not name.startswith(("transformer.", "lm_head.")):
    return "transformer." + name  # the original openai-community/gpt2 files have no prefix
  return name


def _abstract_params(model) -> Any:
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  return jax.eval_shape(lambda t: model.init(jax.random.PRNGKey(0), t), tokens)["params"]


def _paths(tree) -> list[tuple[tuple[str, ...], Any]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(tuple(str(k.key) for k in path), leaf) for path, leaf in flat]


# --------------------------------------------------------------------------------- loading


def _weight_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
  """{tensor name: file} from model.safetensors or model.safetensors.index.json."""
  index = directory / INDEX_FILE
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from None
    return {name: directory / file for name, file in weight_map.items()}
  single = directory / SINGLE_FILE
  if single.is_file():
    return {name: single for name in SafetensorsFile(single).keys()}
  others = sorted(p.name for p in directory.glob("*.bin")) + sorted(
    p.name for p in directory.glob("*.safetensors")
  )
  raise ValueError(
    f"no weights in {directory}: expected {SINGLE_FILE} or {INDEX_FILE}"
    + (f" (found {others}; only safetensors are read)" if others else "")
  )


def read_config(path: str | os.PathLike) -> dict:
  """The ``config.json`` of a checkpoint directory (ValueError naming the file if missing)."""
  file = pathlib.Path(path) / CONFIG_NAME
  if not file.is_file():
    raise ValueError(f"{file} does not exist: not a Hugging Face checkpoint directory")
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON: {e}") from None


def from_pretrained(
  path: str | os.PathLike,
  *,
  dtype: Any = None,
  mesh: Mesh | None = None,
  config: dict | None = None,
):
  """Loads a Hugging Face checkpoint directory as ``(model, params)``.

  ``model.apply({'params': params}, tokens)`` returns float32 logits ``[batch, time, vocab]``.

  Args:
    path: a directory with ``config.json`` and ``model.safetensors`` or a sharded
      ``model.safetensors.index.json``.
    dtype: parameter and compute dtype (e.g. ``jnp.bfloat16``); None keeps the stored dtype
      of the embedding tensor.
    mesh: place every tensor straight into its sharding on this mesh (axes ``'data'``
      and/or ``'model'``, see :mod:`kdjax.models.partitioning`); None: the first device.
    config: use this dict instead of ``path/config.json``.

  Raises:
    ValueError: naming the file, tensor or key: no config.json or weights, an unsupported
      model_type, a tensor whose shape disagrees with the config, a missing or unexpected
      tensor, a corrupt safetensors file.
  """
  directory = pathlib.Path(path)
  if not directory.is_dir():
    raise ValueError(f"checkpoint directory {directory} does not exist")
  where = str(directory / CONFIG_NAME)
  config = read_config(directory) if config is None else config
  probe = config_to_model(config, where=where)  # validates before the weights are opened
  files = _weight_files(directory)
  readers: dict[pathlib.Path, SafetensorsFile] = {}

  def reader(name: str) -> SafetensorsFile:
    file = files[name]
    if file not in readers:
      readers[file] = SafetensorsFile(file)
    if name not in readers[file].entries:
      raise ValueError(f"tensor {name!r} is listed in {INDEX_FILE} but absent from {file}")
    return readers[file]

  embed = "transformer.wte.weight" if isinstance(probe, GPT2LM) else "model.embed_tokens.weight"
  available = {_canonical(probe, n): n for n in files}
  if dtype is None:
    stored = available.get(embed)
    dtype = reader(stored).dtype(stored) if stored else np.dtype(np.float32)
  dtype = jnp.dtype(dtype)
  model = config_to_model(config, dtype=dtype, where=where)
  abstract = _abstract_params(model)
  wanted = {}
  for path_, leaf in _paths(abstract):
    name, transposed = _hf_name(model, path_)
    wanted[name] = (path_, leaf.shape, transposed)
  unexpected = sorted(n for c, n in available.items() if c not in wanted and not _ignored(model, c))
  missing = sorted(n for n in wanted if n not in available)
  if missing or unexpected:
    raise ValueError(
      f"checkpoint {directory} does not match its {CONFIG_NAME} (model_type "
      f"{config.get('model_type')!r}): missing tensors {missing}, unexpected tensors {unexpected}"
    )
  if mesh is not None:
    shardings = partitioning.tree_shardings(abstract, mesh, partitioning.rules_for(model))
    sharding_of = dict(_paths(shardings))
  device = SingleDeviceSharding(jax.devices()[0])
  loaded = {}
  for name, (path_, shape, transposed) in wanted.items():
    file_name = available[name]
    source = reader(file_name)
    stored_shape = source.shape(file_name)
    expected = tuple(reversed(shape)) if transposed else tuple(shape)
    if stored_shape != expected:
      raise ValueError(
        f"tensor {file_name!r} in {files[file_name]} has shape {list(stored_shape)}, but "
        f"{where} implies {list(expected)}"
      )
    sharding = sharding_of[path_] if mesh is not None else device

    def block(index, source=source, name=file_name, transposed=transposed):
      # reads only this device's slice, a chunk of rows at a time
      return source.read(name, index, transposed=transposed, dtype=dtype)

    loaded[path_] = jax.make_array_from_callback(tuple(shape), sharding, block)
  readers.clear()
  params: dict = {}
  for path_, value in loaded.items():
    node = params
    for key in path_[:-1]:
      node = node.setdefault(key, {})
    node[path_[-1]] = value
  return model, params


# --------------------------------------------------------------------------------- saving


def _parse_size(size: int | str) -> int:
  if isinstance(size, int):
    return size
  match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", str(size).upper())
  if not match:
    raise ValueError(f"max_shard_size must be an int or like '5GB' / '200MB', got {size!r}")
  return int(float(match[1]) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[match[2]])


def save_pretrained(
  model,
  params,
  path: str | os.PathLike,
  *,
  max_shard_size: int | str = "5GB",
  dtype: Any = None,
  model_type: str | None = None,
  config_extra: dict | None = None,
) -> list[str]:
  """Writes ``config.json`` and safetensors that ``transformers`` loads to the same logits.

  Args:
    model: a LlamaLM or GPT2LM.
    params: its parameters (``variables['params']``; sharded arrays are gathered one by one).
    path: the output directory (created).
    max_shard_size: bytes (or ``'200MB'``) per file; a larger checkpoint is split into
      ``model-0000k-of-0000n.safetensors`` with ``model.safetensors.index.json``.
    dtype: the stored dtype (default: each parameter's own).
    model_type: for a LlamaLM, ``llama`` (default), ``qwen2`` (default with attention bias)
      or ``mistral``.
    config_extra: more config.json keys (e.g. ``bos_token_id``, ``eos_token_id``).

  Returns:
    The files written (names relative to ``path``).
  """
  directory = pathlib.Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  limit = _parse_size(max_shard_size)
  config = model_to_config(model, model_type=model_type, **(config_extra or {}))
  abstract = _abstract_params(model)
  leaves = dict(_paths(params))
  expected = dict(_paths(abstract))
  if set(leaves) != set(expected):
    raise ValueError(
      f"params do not match the model: missing {sorted(set(expected) - set(leaves))}, "
      f"unexpected {sorted(set(leaves) - set(expected))}"
    )
  tensors = []
  for path_, leaf in leaves.items():
    if tuple(np.shape(leaf)) != tuple(expected[path_].shape):
      raise ValueError(
        f"param {'/'.join(path_)} has shape {np.shape(leaf)}, the model expects "
        f"{expected[path_].shape}"
      )
    name, transposed = _hf_name(model, path_)
    out_dtype = np.dtype(dtype or leaf.dtype)
    shape = tuple(reversed(np.shape(leaf))) if transposed else tuple(np.shape(leaf))

    def get(leaf=leaf, transposed=transposed, out_dtype=out_dtype):
      array = np.asarray(jax.device_get(leaf)).astype(out_dtype)
      return array.T if transposed else array

    tensors.append((name, shape, out_dtype, get))
  tensors.sort(key=lambda t: t[0])
  groups, size = [[]], 0
  for tensor in tensors:
    nbytes = math.prod(tensor[1]) * tensor[2].itemsize
    if groups[-1] and size + nbytes > limit:
      groups.append([])
      size = 0
    groups[-1].append(tensor)
    size += nbytes
  for stale in list(directory.glob("model*.safetensors")) + [directory / INDEX_FILE]:
    stale.unlink(missing_ok=True)
  written = [CONFIG_NAME]
  (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  if len(groups) == 1:
    write_safetensors(directory / SINGLE_FILE, groups[0])
    return written + [SINGLE_FILE]
  weight_map, total = {}, 0
  for k, group in enumerate(groups, 1):
    file = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
    write_safetensors(directory / file, group)
    written.append(file)
    for name, shape, dtype_, _ in group:
      weight_map[name] = file
      total += math.prod(shape) * dtype_.itemsize
  index = {"metadata": {"total_size": total}, "weight_map": weight_map}
  (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
  return written + [INDEX_FILE]


# ------------------------------------------------------------------------------- tokenizer


def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's byte <-> printable character map: {character: byte}."""
  printable = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
  )
  chars = dict((b, b) for b in printable)
  extra = 0
  for b in range(256):
    if b not in chars:
      chars[b] = 256 + extra
      extra += 1
  return {chr(c): b for b, c in chars.items()}


def _uses(component: Any, kind: str) -> bool:
  if not isinstance(component, dict):
    return False
  if component.get("type") == kind:
    return True
  return any(
    _uses(c, kind) for key in ("decoders", "pretokenizers") for c in component.get(key) or ()
  )


class HFTokenizer:
  """A ``tokenizer.json`` (``tokenizers`` library) as a :class:`kdjax.data.text.Tokenizer`.

  Special ids come from ``tokenizer_config.json`` (``bos_token``, ``eos_token``,
  ``pad_token``) or ``config.json`` (``*_token_id``). A tokenizer without BOS uses EOS as the
  document separator (GPT-2's ``<|endoftext|>``); without PAD, PAD is EOS (padding targets
  are masked, so are the EOS targets then).

  Attributes:
    vocab_size: ids ``0 .. vocab_size - 1`` (added tokens included).
    pad_id, bos_id, eos_id: special ids.
    directory: where tokenizer.json was read.
  """

  def __init__(self, path: str | os.PathLike):
    import tokenizers

    self.directory = pathlib.Path(path)
    file = self.directory / "tokenizer.json"
    if not file.is_file():
      raise ValueError(f"{file} does not exist (only the fast tokenizer.json format is read)")
    try:
      self._tok = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001 - the Rust error, reported as a ValueError
      raise ValueError(f"{file} is not a valid tokenizer.json: {e}") from None
    self._spec = json.loads(file.read_text())
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    ids = {}
    config_file = self.directory / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    model_config = (
      json.loads((self.directory / CONFIG_NAME).read_text())
      if (self.directory / CONFIG_NAME).is_file()
      else {}
    )
    for role in ("bos", "eos", "pad"):
      token = tok_config.get(f"{role}_token")
      if isinstance(token, dict):
        token = token.get("content")
      token_id = self._tok.token_to_id(token) if isinstance(token, str) else None
      if token_id is None:
        value = model_config.get(f"{role}_token_id")
        token_id = value[0] if isinstance(value, list) else value
      ids[role] = token_id
    if ids["eos"] is None:
      raise ValueError(
        f"{self.directory}: no eos token (tokenizer_config.json eos_token or config.json "
        "eos_token_id)"
      )
    self.eos_id = int(ids["eos"])
    self.bos_id = int(ids["bos"] if ids["bos"] is not None else self.eos_id)
    self.pad_id = int(ids["pad"] if ids["pad"] is not None else self.eos_id)
    self._special = {
      int(t["id"]) for t in self._spec.get("added_tokens", ()) if t.get("special", False)
    } | {self.bos_id, self.eos_id, self.pad_id}

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of ``text`` without special tokens."""
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of ``ids`` (special tokens dropped)."""
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def token_bytes(self) -> np.ndarray:
    """int32 [vocab]: UTF-8 bytes each token stands for (special tokens 0; byte-level BPE
    characters 1 byte each; SentencePiece's ``▁`` a space; ``<0xNN>`` byte pieces 1)."""
    byte_level = _uses(self._spec.get("decoder"), "ByteLevel") or _uses(
      self._spec.get("pre_tokenizer"), "ByteLevel"
    )
    alphabet = _byte_level_alphabet()
    sizes = np.zeros(self.vocab_size, np.int32)
    for i in range(self.vocab_size):
      if i in self._special:
        continue
      piece = self._tok.id_to_token(i)
      if piece is None:
        continue
      if byte_level and all(c in alphabet for c in piece):
        sizes[i] = len(piece)
      elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
        sizes[i] = 1
      else:
        sizes[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return sizes

  def save(self, path: str | os.PathLike) -> list[str]:
    """Copies tokenizer.json (and tokenizer_config.json, if any) into ``path``."""
    directory = pathlib.Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
      source = self.directory / name
      if source.is_file():
        (directory / name).write_bytes(source.read_bytes())
        written.append(name)
    return written


def load_tokenizer(path: str | os.PathLike, *, vocab_size: int | None = None) -> HFTokenizer:
  """Reads ``path/tokenizer.json`` as an :class:`HFTokenizer`.

  Args:
    path: a checkpoint or tokenizer directory.
    vocab_size: the model's embedding rows, if known: a larger tokenizer is an error.

  Raises:
    ValueError: no or an invalid tokenizer.json, no EOS token, or more tokens than
      ``vocab_size`` (naming both).
  """
  tokenizer = HFTokenizer(path)
  if vocab_size is not None and tokenizer.vocab_size > vocab_size:
    raise ValueError(
      f"{pathlib.Path(path) / 'tokenizer.json'} has {tokenizer.vocab_size} tokens, more than "
      f"the model's embedding (vocab_size={vocab_size})"
    )
  return tokenizer


def byte_tokenizer_files(path: str | os.PathLike) -> list[str]:
  """Writes ``tokenizer.json`` + ``tokenizer_config.json`` equivalent to
  :class:`kdjax.data.text.ByteTokenizer` (bytes 0..255, ``<pad>``=256, ``<bos>``=257,
  ``<eos>``=258) so that byte-level kdjax models export with a tokenizer transformers reads.
  """
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers

  directory = pathlib.Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  vocab = dict(_byte_level_alphabet())
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
  tok.save(str(directory / "tokenizer.json"))
  config = {
    "pad_token": "<pad>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "tokenizer_class": "PreTrainedTokenizerFast",
    "kdjax_byte_tokenizer": True,
  }
  (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
  return ["tokenizer.json", "tokenizer_config.json"]


def layer_prefix(model) -> str:
  """``'layers_'`` (LlamaLM) or ``'h_'`` (GPT2LM): the name of decoder layer ``i`` is prefix + i."""
  if isinstance(model, LlamaLM):
    return "layers_"
  if isinstance(model, GPT2LM):
    return "h_"
  raise ValueError(f"a LlamaLM or GPT2LM is needed, got {type(model).__name__}")


def parse_layers(spec: str, num_layers: int, *, key: str = "layers") -> list[int]:
  """Layer indices from ``'every_other'`` (0, 2, 4, ...) or ``'0,2,5'`` (strictly increasing).

  Raises:
    ValueError: naming ``key``: an unparsable spec, an index outside ``[0, num_layers)``, an
      empty, repeated or unordered list.
  """
  spec = str(spec).strip()
  if spec == "every_other":
    return list(range(0, num_layers, 2))
  try:
    layers = [int(part) for part in spec.split(",") if part.strip()]
  except ValueError:
    raise ValueError(
      f"{key} must be 'every_other' or comma-separated layer indices, got {spec!r}"
    ) from None
  bad = [i for i in layers if not 0 <= i < num_layers]
  if not layers or bad or any(a >= b for a, b in zip(layers, layers[1:])):
    raise ValueError(
      f"{key}={spec!r}: layer indices must be strictly increasing in [0, {num_layers}) "
      f"(the teacher has {num_layers} layers)" + (f"; out of range: {bad}" if bad else "")
    )
  return layers


def subset_layers(model, params, layers: list[int]):
  """``(model with len(layers) layers, params)``: the embeddings, final norm and head of
  ``params`` with its decoder layers ``layers`` (in order), as DistilBERT initialised its
  student from every other layer of BERT (Sanh et al. (2019))."""
  prefix = layer_prefix(model)
  parse_layers(",".join(map(str, layers)), model.num_layers)
  student = model.clone(num_layers=len(layers))
  new = {k: v for k, v in params.items() if not k.startswith(prefix)}
  for j, i in enumerate(layers):
    new[f"{prefix}{j}"] = params[f"{prefix}{i}"]
  return student, new
