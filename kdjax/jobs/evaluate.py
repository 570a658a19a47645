r"""The one evaluation helper of kdjax jobs: a jitted, sharded eval step over a dataset.

:func:`evaluate` feeds fixed-size batches (the last one padded, its padding masked out,
so the step compiles once) split over the mesh's ``'data'`` axis to
``eval_step(variables, batch) -> {'loss_sum', 'correct', 'count'}`` (e.g.
``kdjax.train.steps.make_eval_step``) and combines the sums exactly:

.. math:: \text{loss} = \frac{\sum_b \text{loss\_sum}_b}{\sum_b \text{count}_b},\qquad
   \text{accuracy} = \frac{\sum_b \text{correct}_b}{\sum_b \text{count}_b}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from jax.sharding import Mesh

from kdjax import mesh as mesh_lib

__all__ = ["evaluate", "pad_batch"]


def pad_batch(batch: Mapping[str, np.ndarray], size: int) -> dict:
  """Pads a final, smaller eval batch to ``size`` rows; padded rows get ``mask=False``."""
  n = len(batch["labels"])
  if n > size:
    raise ValueError(f"eval batch has {n} examples, more than the eval batch size {size}")
  padded = {
    k: np.concatenate([np.asarray(v), np.zeros((size - n,) + np.shape(v)[1:], np.asarray(v).dtype)])
    for k, v in batch.items()
    if k != "mask"
  }
  mask = np.asarray(batch.get("mask", np.ones(np.shape(batch["labels"]), bool)), bool)
  padded["mask"] = np.concatenate([mask, np.zeros((size - n,) + mask.shape[1:], bool)])
  return padded


def evaluate(
  eval_step: Callable,
  variables: Any,
  batches: Iterable[Mapping[str, np.ndarray]],
  mesh: Mesh,
  batch_size: int,
  prefix: str = "eval",
) -> dict:
  """Mean loss and accuracy of ``variables`` over ``batches`` (each padded to ``batch_size``).

  Args:
    eval_step: jitted ``eval_step(variables, batch) -> sums`` (``loss_sum``, ``correct``,
      ``count``), the batch sharded over ``mesh``.
    variables: the model's variables, in the layout ``eval_step`` expects.
    batches: NumPy batches with ``inputs``, ``labels`` (and optionally ``mask``) of at
      most ``batch_size`` rows; every process passes the same global batches.
    mesh: the device mesh.
    batch_size: the padded batch size (a multiple of the device count).
    prefix: the metrics' prefix, e.g. ``'test'``.

  Returns:
    ``{prefix_loss, prefix_accuracy}`` (0 for no examples).
  """
  totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
  for batch in batches:
    sums = eval_step(variables, mesh_lib.global_batch(pad_batch(batch, batch_size), mesh))
    for key in totals:
      totals[key] += float(sums[key])
  count = max(totals["count"], 1.0)
  return {
    f"{prefix}_loss": totals["loss_sum"] / count,
    f"{prefix}_accuracy": totals["correct"] / count,
  }
