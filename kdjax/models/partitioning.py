r"""Sharding rules (FSDP and tensor parallel) for the Llama-style and GPT-2 decoders.

In the style of :mod:`kdjax.train.sharding`: the first rule whose regex matches (``re.search``)
the ``'/'``-joined path of a parameter (or of an optimizer-state leaf, whose path contains the
parameter's) gives one *logical* axis name per array axis:

* ``'fsdp'``: split over the mesh axis ``'data'`` (fully sharded data parallelism,
  Rajbhandari et al. (2020), "ZeRO");
* ``'tp'``: split over the mesh axis ``'model'`` (Megatron-style tensor parallelism,
  Shoeybi et al. (2019): q/k/v, gate/up and the vocabulary split on their output features,
  o/down on their input features, so each attention head group and MLP slice is local);
* ``None``: whole.

A logical axis whose mesh axis is absent, or whose size the mesh axis does not divide, stays
whole, so one rule set serves a ``('data',)`` mesh (FSDP only), a ``('data', 'model')`` mesh
and a single device. Under ``jax.jit`` the compiler inserts the collectives, so the model code
does not change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax.mesh import path_string

DATA_AXIS, MODEL_AXIS = "data", "model"
_MESH_AXES = {"fsdp": DATA_AXIS, "tp": MODEL_AXIS}

Rules = Sequence[tuple[str, tuple]]

LLAMA_RULES: Rules = (
  (r"embed_tokens/embedding", ("tp", "fsdp")),
  (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel", ("fsdp", "tp")),
  (r"(q_proj|k_proj|v_proj)/bias", ("tp",)),
  (r"(o_proj|down_proj)/kernel", ("tp", "fsdp")),
  (r"lm_head/kernel", ("fsdp", "tp")),
  (r".*", ()),
)

GPT2_RULES: Rules = (
  (r"wte/embedding", ("tp", "fsdp")),
  (r"wpe", (None, "fsdp")),
  (r"(attn_c_attn|mlp_c_fc)/kernel", ("fsdp", "tp")),
  (r"(attn_c_attn|mlp_c_fc)/bias", ("tp",)),
  (r"(attn_c_proj|mlp_c_proj)/kernel", ("tp", "fsdp")),
  (r".*", ()),
)


def rules_for(model: Any) -> Rules:
  """The rules of ``model``'s family (LlamaLM or GPT2LM)."""
  from kdjax.models.gpt2 import GPT2LM
  from kdjax.models.llama import LlamaLM

  if isinstance(model, LlamaLM):
    return LLAMA_RULES
  if isinstance(model, GPT2LM):
    return GPT2_RULES
  raise ValueError(f"no partitioning rules for {type(model).__name__} (LlamaLM or GPT2LM)")


def partition_spec(path: str, shape: Sequence[int], rules: Rules, mesh: Mesh) -> P:
  """The PartitionSpec of one array of ``shape`` at ``path`` on ``mesh``."""
  logical = next((axes for regex, axes in rules if re.search(regex, path)), ())
  if len(logical) != len(shape):  # scalars, counters, or a rule for another rank
    logical = ()
  spec = []
  for name, size in zip(logical, shape):
    axis = _MESH_AXES.get(name) if name is not None else None
    if axis in mesh.axis_names and mesh.shape[axis] > 1 and size % mesh.shape[axis] == 0:
      spec.append(axis)
    else:
      spec.append(None)
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: NamedSharding(
      mesh, partition_spec(path_string(path), np.shape(leaf), rules, mesh)
    ),
    tree,
  )


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A ``('data', 'model')`` mesh of ``data x model`` devices (``data=-1``: the rest)."""
  devices = np.asarray(jax.devices() if devices is None else devices).reshape(-1)
  if model < 1 or devices.size % model:
    raise ValueError(f"model={model} must divide the number of devices ({devices.size})")
  data = devices.size // model if data == -1 else data
  if data * model != devices.size:
    raise ValueError(f"data x model = {data} x {model} != {devices.size} devices")
  return Mesh(devices.reshape(data, model), (DATA_AXIS, MODEL_AXIS))
