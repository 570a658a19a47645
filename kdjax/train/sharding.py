r"""Parameter shardings: replicated or FSDP-sharded by rules over the ``'data'`` mesh axis.

The mesh (one axis, ``'data'``, over every device of every process) and the placement of
batches come from :mod:`kdjax.mesh`. Each parameter (and each optimizer-state leaf, whose
path contains the parameter's path) gets a sharding from the first rule whose regex
matches its path (``re.search`` on a ``'/'``-joined path such as
``'params/Dense_0/kernel'`` or ``'opt_state/0/mu/Dense_0/kernel'``):

* ``'replicate'``: a full copy on every device (the default when no rule matches);
* ``'fsdp'``: split the largest axis that the number of devices divides over ``'data'``
  (replicated when no axis is divisible), as in fully sharded data parallelism
  (Rajbhandari et al. (2020), "ZeRO: memory optimizations toward training trillion
  parameter models"; big_vision's ``fsdp`` sharding rules).

Example: ``(('.*kernel', 'fsdp'), ('.*', 'replicate'))`` shards every weight matrix and
conv kernel, and replicates biases, norms and counters. Under ``jax.jit`` the compiler
inserts the all-gathers and reduce-scatters, so the step function does not change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax.mesh import DATA_AXIS, path_string

KINDS = ("replicate", "fsdp")

Rules = Sequence[tuple[str, str]]


def validate_rules(rules: Rules) -> list[tuple[str, str]]:
  """Checks that ``rules`` is a sequence of ``(regex, kind)`` pairs; returns them as a list."""
  checked = []
  for rule in rules:
    if len(rule) != 2 or rule[1] not in KINDS:
      raise ValueError(
        f"sharding rules must be (regex, kind) pairs with kind in {KINDS}, got {tuple(rule)!r}"
      )
    try:
      re.compile(rule[0])
    except re.error as e:
      raise ValueError(f"sharding rule regex {rule[0]!r} does not compile: {e}") from None
    checked.append((str(rule[0]), str(rule[1])))
  return checked


def partition_spec(path: str, shape: Sequence[int], rules: Rules, num_devices: int) -> P:
  """The PartitionSpec of one array from the first rule matching ``path``."""
  kind = next((kind for regex, kind in rules if re.search(regex, path)), "replicate")
  if kind == "fsdp" and num_devices > 1:
    divisible = [(size, axis) for axis, size in enumerate(shape) if size % num_devices == 0]
    if divisible:
      _, axis = max(divisible)
      return P(*([None] * axis + [DATA_AXIS]))
  return P()


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules = ()) -> Any:
  """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs) by ``rules``."""
  rules = validate_rules(rules)
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: NamedSharding(
      mesh, partition_spec(path_string(path), np.shape(leaf), rules, mesh.size)
    ),
    tree,
  )
