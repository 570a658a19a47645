"""Deterministic, data-parallel mini-batches of in-memory arrays.

The batch at step ``s`` depends only on ``(seed, s)``: step ``s`` lies in epoch
``e = s // steps_per_epoch`` and takes the ``s % steps_per_epoch``-th slice of that
epoch's permutation ``np.random.default_rng([seed, e]).permutation(n)`` (the last
``n % batch_size`` examples of each permutation are dropped). A run resumed at step
``s`` therefore sees exactly the batches an uninterrupted run would have seen, with no
iterator state to checkpoint.

On several processes (multi-host), each process materialises only its contiguous
``1/process_count`` share of the global batch, and the global ``jax.Array`` is assembled
with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import jax
import numpy as np

__all__ = ["batch_indices", "Batches"]


def batch_indices(num_examples: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
  """Indices of the examples in the global batch of ``step``.

  Args:
    num_examples: size n of the dataset.
    batch_size: global batch size B, 1 <= B <= n.
    seed: data-order seed.
    step: training step >= 0.

  Returns:
    int64 [B] distinct indices into the dataset.
  """
  if not 1 <= batch_size <= num_examples:
    raise ValueError(
      f"batch_size must be in [1, {num_examples}] (the dataset size), got {batch_size}"
    )
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}")
  epoch, position = divmod(int(step), num_examples // batch_size)
  order = np.random.default_rng([int(seed), epoch]).permutation(num_examples)
  return order[position * batch_size : (position + 1) * batch_size]


def check_batch_size(num_examples: int, batch_size: int, seed: int) -> None:
  """Raises unless ``batch_size`` is in [1, n] and divisible by the number of processes."""
  if batch_size % jax.process_count():
    raise ValueError(
      f"batch_size ({batch_size}) must be divisible by the number of "
      f"processes ({jax.process_count()})"
    )
  batch_indices(num_examples, batch_size, seed=seed, step=0)  # validates batch_size and seed


def process_batch(
  arrays: dict[str, np.ndarray],
  batch_size: int,
  *,
  seed: int,
  step: int,
  sharding: jax.sharding.Sharding | None,
) -> dict:
  """The global batch of ``step`` of the equal-length ``arrays`` (this process's share,
  as global ``jax.Array`` when ``sharding`` is given)."""
  index = batch_indices(len(next(iter(arrays.values()))), batch_size, seed=seed, step=step)
  share = batch_size // jax.process_count()
  index = index[jax.process_index() * share : (jax.process_index() + 1) * share]
  local = {key: value[index] for key, value in arrays.items()}
  if sharding is None:
    return local
  return {
    key: jax.make_array_from_process_local_data(sharding, value, (batch_size,) + value.shape[1:])
    for key, value in local.items()
  }


class StepBatches(abc.ABC):
  """Base of the step-indexed batch sources: ``iterate`` over ``self.batch(step)``."""

  @abc.abstractmethod
  def batch(self, step: int) -> dict:
    """The batch of ``step`` (a function of the seed and ``step`` only)."""

  def iterate(
    self, start_step: int = 0, num_steps: int | None = None
  ) -> Iterator[tuple[int, dict]]:
    """Yields ``(step, batch)`` from ``start_step`` (forever if ``num_steps`` is None)."""
    step = start_step
    while num_steps is None or step < start_step + num_steps:
      yield step, self.batch(step)
      step += 1


class Batches(StepBatches):
  """Mini-batches ``{'image': [B, H, W, C] float32, 'label': [B] int32}`` by step.

  Example::

    batches = Batches(data.x_train, data.y_train, batch_size=256, seed=config.seed,
                      sharding=NamedSharding(mesh, P('data')))
    for step, batch in batches.iterate(start_step):
      state, metrics = train_step(state, batch)

  Args:
    images: [n, ...] array of inputs.
    labels: [n] int class ids (or [n, ...] targets).
    batch_size: global batch size B (divisible by the number of processes, and by the
      number of devices along the sharded axis when ``sharding`` is given).
    seed: data-order seed.
    sharding: optional ``jax.sharding.Sharding`` of the global batch (e.g.
      ``NamedSharding(mesh, P('data'))``); None returns NumPy arrays.
  """

  def __init__(
    self,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    sharding: jax.sharding.Sharding | None = None,
  ):
    if len(images) != len(labels):
      raise ValueError(
        f"images and labels must have the same length, got {len(images)} and {len(labels)}"
      )
    check_batch_size(len(images), batch_size, seed)
    self.images = np.asarray(images)
    self.labels = np.asarray(labels)
    self.batch_size, self.seed, self.sharding = batch_size, seed, sharding

  @property
  def steps_per_epoch(self) -> int:
    """Number of full batches per pass over the data."""
    return len(self.images) // self.batch_size

  def batch(self, step: int) -> dict:
    """The global batch of ``step`` (this process's share, if multi-host)."""
    arrays = {"image": self.images, "label": self.labels}
    return process_batch(arrays, self.batch_size, seed=self.seed, step=step, sharding=self.sharding)
