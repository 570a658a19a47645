"""The files every dataset-distillation job writes about its learned support set."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kdjax.jobs import figures, workdir as workdir_lib


def save_support_set(
  workdir: str,
  x: np.ndarray,
  y: np.ndarray,
  *,
  per_class: int,
  records: Sequence[Mapping[str, Any]],
  title: str,
) -> None:
  """Writes ``support.npz`` (``x``, ``y``), ``support.png`` (one row per class),
  ``learning_curve.png`` (KRR ``test_accuracy``) and ``loss.png`` (``train_loss``).

  Args:
    workdir: the run directory.
    x: the support images ``[classes * per_class, H, W, C]``, class by class.
    y: their labels (one-hot or learned targets).
    per_class: images per class (the grid's row length).
    records: the job's metrics records.
    title: the figures' title prefix, e.g. ``"KIP mnist5k, 10/class"``.
  """
  workdir_lib.save_npz(os.path.join(workdir, "support.npz"), x=x, y=y)
  figures.image_grid(x, per_class, os.path.join(workdir, "support.png"))
  figures.plot_curves(
    records,
    ["test_accuracy"],
    os.path.join(workdir, "learning_curve.png"),
    title=f"{title}: KRR test accuracy",
  )
  figures.plot_curves(
    records,
    ["train_loss"],
    os.path.join(workdir, "loss.png"),
    title=f"{title}: train loss",
    logy=True,
  )
