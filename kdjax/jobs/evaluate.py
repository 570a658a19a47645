"""The one batched classification-accuracy helper of kdjax jobs."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def accuracy(
  logits_fn: Callable[[jax.Array], jax.Array],
  x: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  batch_size: int = 1000,
) -> float:
  """The fraction of ``x`` whose ``argmax(logits_fn(batch), -1)`` equals ``labels``.

  Args:
    logits_fn: maps ``[b, ...]`` inputs to ``[b, num_classes]`` scores.
    x: ``[n, ...]`` inputs, fed in batches of at most ``batch_size``.
    labels: ``[n]`` integer class ids.
    batch_size: the largest batch given to ``logits_fn``.

  Returns:
    The accuracy in [0, 1] (NaN for ``n == 0``, never a made-up number).
  """
  labels = np.asarray(labels)
  if len(labels) != len(x):
    raise ValueError(f"x has {len(x)} examples but labels has {len(labels)}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  correct = 0
  for start in range(0, len(labels), batch_size):
    logits = logits_fn(jnp.asarray(x[start : start + batch_size]))
    correct += int(jnp.sum(jnp.argmax(logits, -1) == labels[start : start + batch_size]))
  return correct / len(labels) if len(labels) else float("nan")
