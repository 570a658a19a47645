"""The device mesh of every kdjax job: one axis, ``'data'``, over all devices of all processes.

Batches are split along their leading axis over ``'data'``; parameters are replicated or
FSDP-sharded over the same axis by ``kdjax.train.sharding`` rules; the sharded Gram matrices
of ``kdjax.kernels.gram`` and ``kdjax.krr`` split their rows over it. A leaf module: it
imports only jax and numpy, so the kernels and KRR need nothing of the job framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices`` (default: all devices of all processes)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``'data'``, other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  """Raises ValueError unless ``batch_size`` is a positive multiple of the device count."""
  if batch_size <= 0 or batch_size % mesh.size:
    raise ValueError(
      f"{name}={batch_size} must be a positive multiple of the number of "
      f"devices ({mesh.size}: {jax.process_count()} process(es) x "
      f"{jax.local_device_count()} local device(s))"
    )


def global_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a global batch (the same NumPy arrays on every process) as sharded jax Arrays.

  Each process copies only the rows of its own devices, so this works unchanged with
  several processes.
  """
  sharding = batch_sharding(mesh)

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return {k: place(v) for k, v in batch.items()}


def path_string(path: tuple) -> str:
  """``'params/Dense_0/kernel'`` for a pytree key path (the string sharding rules match)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)
