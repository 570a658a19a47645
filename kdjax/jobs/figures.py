"""The one figure saver of kdjax jobs: PNG files written atomically, matplotlib's Agg backend.

``save_figure(fig, path)`` writes and closes any matplotlib figure; ``plot_curves`` draws
metrics records against their step; ``image_grid`` draws images (e.g. a distilled support
set) in a grid.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from kdjax.jobs import workdir as workdir_lib


def pyplot():
  """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
  import matplotlib  # pylint: disable=g-import-not-at-top  # optional, heavy

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def save_figure(fig: Any, path: str, *, dpi: int = 100) -> None:
  """Saves ``fig`` as a PNG at ``path`` atomically and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  pyplot().close(fig)
  workdir_lib.atomic_write(path, buffer.getvalue())


def plot_curves(
  records: Sequence[Mapping[str, Any]],
  keys: Iterable[str],
  path: str,
  *,
  title: str = "",
  xlabel: str = "step",
  logy: bool = False,
) -> None:
  """Plots ``record[key]`` against ``record['step']`` for each key into a PNG."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for key in keys:
    points = [(r["step"], r[key]) for r in records if key in r]
    if points:
      xs, ys = zip(*points)
      ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=key)
  ax.set_xlabel(xlabel)
  if logy:
    ax.set_yscale("log")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  save_figure(fig, path)


def image_grid(x: np.ndarray, per_row: int, path: str) -> None:
  """Draws NHWC images ``x`` in rows of ``per_row``, each scaled to its own [min, max]."""
  x = np.asarray(x)
  rows = -(-len(x) // per_row)
  plt = pyplot()
  fig, axes = plt.subplots(
    rows, per_row, figsize=(per_row * 0.8 + 0.2, rows * 0.8 + 0.2), squeeze=False
  )
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i < len(x):
      image = x[i]
      image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
  fig.tight_layout(pad=0.1)
  save_figure(fig, path, dpi=80)
