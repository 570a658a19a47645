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
* :func:`parse_layers` / :func:`subset_layers` pick decoder layers of a model and its params.
* :func:`load_tokenizer`, :class:`HFTokenizer` and :func:`byte_tokenizer_files` (``tokenizer.json``
  in and out) live in :mod:`kdjax.models.hf_tokenizer` and are re-exported here.

Safetensors files are read and written by kdjax's own :mod:`kdjax.models.safetensors`
(:class:`SafetensorsFile`, :func:`write_safetensors`, re-exported here), so a corrupt file is
a clear ValueError, not a crash inside a C extension.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from kdjax.models import partitioning
from kdjax.models.gpt2 import ACTIVATIONS, GPT2LM
from kdjax.models.hf_tokenizer import HFTokenizer, byte_tokenizer_files, load_tokenizer
from kdjax.models.llama import ROPE_TYPES, LlamaLM
from kdjax.models.safetensors import SafetensorsFile, write_safetensors

__all__ = [
  "SUPPORTED_MODEL_TYPES",
  "SafetensorsFile",
  "config_to_model",
  "model_to_config",
  "from_pretrained",
  "save_pretrained",
  "load_tokenizer",
  "HFTokenizer",
  "byte_tokenizer_files",
]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "gpt2")
CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

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


# ---------------------------------------------------------------------------------- layers


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
