r"""The parts every dataset-distillation job shares (KIP: ``job='kip'``; RFAD and FRePo:
``job='distill'``): the support problem and the training loop, on :mod:`kdjax.jobs`.

:func:`support_problem` loads ``config.dataset``, draws the class-balanced random real
initial support set of ``config.<section>.per_class`` images (Nguyen, Chen & Lee, 2021,
"Dataset Meta-Learning from Kernel Ridge-Regression": every method starts from real
images with one-hot minus ``label_offset`` labels) and the stream of target batches
sharded over all devices; every check that needs the data runs there, before a workdir
is touched.

:func:`train` runs a method's step ``step_fn(state, x_target, y_target) -> (state,
{'loss': ...})`` from ``num_steps``'s start or the newest intact checkpoint:

* one record every ``log_every`` steps with ``train_loss``, the mean loss since the
  previous record, and ``test_accuracy`` (the method's own model, e.g. KRR on the
  support set) every ``eval_every`` steps; step 0 holds the initial support's accuracy;
* the loss and the support set are checked finite at every record (FloatingPointError
  naming the step), so a diverged state is never logged as a number nor saved;
* orbax checkpoints of ``{state_key: state, 'loss_sum', 'loss_count'}`` every
  ``checkpoint_every`` steps: the running loss sum is part of the state, so a resumed run
  logs exactly the records of an uninterrupted one, and, since every target batch is a
  function of ``(seed, step)``, ends with the same support set.

A method's state is any pytree with attributes ``x`` (support images), ``y`` (support
labels) and ``step``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from kdjax import data, mesh as mesh_lib
from kdjax.distill import kip
from kdjax.jobs import data_loading, loop as jobs_loop
from kdjax.jobs.checkpoint import Checkpointer
from kdjax.jobs.metrics import MetricsWriter, check_finite

__all__ = ["SupportProblem", "Result", "support_problem", "train", "write_summary"]

CHECKPOINT_DIR = "checkpoints"


class SupportProblem(NamedTuple):
  """What a distillation job learns from.

  Attributes:
    ds: the preprocessed dataset.
    x0: float32 [num_classes * per_class, H, W, C] random real initial images, by class.
    y0: float32 [num_classes * per_class, num_classes] their one-hot minus offset labels.
    mesh: the device mesh (axis ``'data'``).
    batches: ``data.Batches`` of training images and regression targets, sharded.
  """

  ds: data.Dataset
  x0: np.ndarray
  y0: np.ndarray
  mesh: Mesh
  batches: data.Batches


class Result(NamedTuple):
  """What :func:`train` returns.

  Attributes:
    state: the method's final state.
    records: every metrics record of the run (from step 0, also across resumes).
    test_accuracy_init: ``accuracy`` of the initial state.
    seconds: wall seconds of this process's steps (not of earlier, resumed-from runs).
  """

  state: Any
  records: list
  test_accuracy_init: float
  seconds: float


def support_problem(config: Any, section: str) -> SupportProblem:
  """The dataset, initial support set and sharded target batches of ``config``.

  Reads ``config.dataset``, ``config.seed`` and ``config.<section>``'s ``per_class``,
  ``label_offset`` and ``target_batch_size``.

  Raises:
    ValueError: naming the key: dataset labels outside ``[0, num_classes)``, ``per_class``
      larger than the smallest class, a target batch larger than the training set or not
      divisible by the number of devices.
  """
  ds, r = data_loading.load_dataset(config.dataset), config[section]
  for split, labels in (("train", ds.y_train), ("test", ds.y_test)):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= ds.num_classes):
      raise ValueError(
        f"config.dataset.name={config.dataset.name!r}: {split} labels must lie in "
        f"[0, {ds.num_classes}), got range [{labels.min()}, {labels.max()}]"
      )
  try:
    x0, y0 = kip.init_support(
      ds.x_train,
      ds.y_train,
      per_class=r.per_class,
      num_classes=ds.num_classes,
      seed=config.seed,
      label_offset=r.label_offset,
    )
  except ValueError as err:
    raise ValueError(f"config.{section}.per_class: {err}") from None
  key = f"config.{section}.target_batch_size"
  if r.target_batch_size > len(ds.x_train):
    raise ValueError(
      f"{key} ({r.target_batch_size}) exceeds the {len(ds.x_train)} training examples"
    )
  mesh = mesh_lib.make_mesh()
  if r.target_batch_size % mesh.size:
    raise ValueError(
      f"{key}={r.target_batch_size} must be a positive multiple of the number of devices: "
      f"divisible by the {mesh.size} devices"
    )
  batches = data.Batches(
    ds.x_train,
    data.regression_targets(ds.y_train, ds.num_classes, offset=r.label_offset),
    batch_size=r.target_batch_size,
    seed=config.seed,
    sharding=mesh_lib.batch_sharding(mesh),
  )
  return SupportProblem(ds, x0, y0, mesh, batches)


def train(
  config: Any,
  workdir: str,
  *,
  name: str,
  state_key: str,
  state: Any,
  step_fn: Callable[[Any, jax.Array, jax.Array], tuple[Any, dict]],
  accuracy: Callable[[Any], jax.Array],
  problem: SupportProblem,
) -> Result:
  """Runs ``step_fn`` from ``state`` (or the newest intact checkpoint) to ``config.num_steps``.

  Args:
    config: reads ``num_steps``, ``log_every``, ``eval_every``, ``checkpoint_every``,
      ``keep_checkpoints``.
    workdir: the open workdir.
    name: the progress-line and error name, e.g. ``'kip'``.
    state_key: the method state's key in the checkpointed dict (fixes the checkpoint layout).
    state: the method's initial state.
    step_fn: one distillation step on a sharded target batch; ``metrics['loss']`` a scalar.
    accuracy: ``accuracy(state)``, the method's own test accuracy (e.g. KRR).
    problem: from :func:`support_problem` (target batches and mesh).

  Returns:
    The final state, the metrics records, the initial accuracy and the seconds.

  Raises:
    FloatingPointError: the loss or the support set became non-finite (names the step).
  """
  replicated = mesh_lib.replicated(problem.mesh)
  acc_init = float(accuracy(state))
  full = {
    state_key: state,
    "loss_sum": jax.device_put(jnp.float32(0), replicated),
    "loss_count": jax.device_put(jnp.int32(0), replicated),
  }

  def train_step(full, step):
    batch = problem.batches.batch(step)
    state, metrics = step_fn(full[state_key], batch["image"], batch["label"])
    full = {
      state_key: state,
      "loss_sum": full["loss_sum"] + metrics["loss"],
      "loss_count": full["loss_count"] + 1,
    }
    return full, metrics

  def on_log(full, step, metrics):  # the mean loss since the previous record, then reset
    train_loss = float(full["loss_sum"]) / int(full["loss_count"])
    reset = {**full, "loss_sum": full["loss_sum"] * 0, "loss_count": full["loss_count"] * 0}
    return reset, {"train_loss": train_loss}

  checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=config.keep_checkpoints)
  try:
    start, full = jobs_loop.resume(checkpointer, full, name)
    log = MetricsWriter(workdir, resume_step=start, total_steps=config.num_steps, name=name)
    if start == 0:
      log.write(0, test_accuracy=acc_init)
    t0 = time.time()
    try:
      full = jobs_loop.run_steps(
        full,
        train_step,
        start=start,
        total=config.num_steps,
        every=jobs_loop.Every.of(config),
        name=name,
        checkpointer=checkpointer,
        metrics=log,
        on_log=on_log,
        on_eval=lambda full, step: {"test_accuracy": float(accuracy(full[state_key]))},
        check=lambda full, metrics: {
          "support_images": full[state_key].x,
          "support_labels": full[state_key].y,
        },
      )
    finally:
      log.close()
    seconds = time.time() - t0
  finally:
    checkpointer.close()
  state = full[state_key]
  check_finite(name, int(state.step), support_images=state.x, support_labels=state.y)
  return Result(state, log.records, acc_init, seconds)


def write_summary(workdir: str, summary: dict) -> None:
  """Writes ``summary.json`` (sorted keys) and prints the summary line."""
  jobs_loop.write_summary(workdir, summary)
