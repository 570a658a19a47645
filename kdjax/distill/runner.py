"""The KIP job: ``python -m launch.main --config=experiments/kip_mnist5k.py:10 --workdir=DIR``.

``run(config, workdir)`` validates the config, loads and preprocesses the dataset, builds
the kernel, learns the support set with :mod:`kdjax.distill.kip` (target batches sharded
over all devices), and writes to ``workdir`` (with the parts of :mod:`kdjax.jobs`):

* ``metrics.jsonl`` and TensorBoard events: one record every ``log_every`` steps with
  ``train_loss`` (mean KIP loss since the previous record), with ``test_accuracy`` (KRR on
  the test set using only the support set) every ``eval_every`` steps; step 0 is the
  random real initial support;
* ``checkpoints/<step>/`` (orbax): the KipState and the running loss sum of the current
  record, so that a resumed run logs exactly the metrics of an uninterrupted one and ends
  with the same support set (every target batch is a function of ``(seed, step)`` only);
* ``support.npz`` (``x``, ``y``: the final support set, after Label Solve when
  ``config.kip.label_solve``), ``support.png`` (image grid), ``learning_curve.png``
  (test accuracy), ``loss.png`` (train loss), ``summary.json``.

Finally it trains a finite-width network with the kernel's architecture (MLP or ConvNet)
on the support set alone, by the protocol every distillation method is judged by
(:func:`kdjax.distill.evaluation.evaluate`, settings in ``config.evaluation``), and
reports its test accuracy beside KRR's (``transfer_test_accuracy`` in the summary).
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import data
from kdjax.distill import evaluation, kip, outputs, support
from kdjax.jobs import config as config_lib, workdir as workdir_lib
from kdjax.kernels import stax

__all__ = [
  "KERNELS",
  "build_kernel",
  "run",
  "train_transfer",
  "transfer_protocol",
  "validate",
]

KERNELS = ("fc", "conv")


def build_kernel(config: Any) -> Callable:
  """Builds the infinite-width network of ``config`` (a ``kernel`` ConfigDict).

  ``name='fc'``: Flatten, ``depth`` x [Dense(width), Relu], Dense(1).
  ``name='conv'``: ``depth`` x [Conv(width, 3x3, SAME), Relu, AvgPool(2x2, stride 2)],
  Flatten, Dense(1) (the dataset-distillation ConvNet without normalisation).
  All layers use ``W_std``, ``b_std`` and ``parameterization``.

  Returns:
    ``kernel(x1, x2) -> [n1, n2]`` on NHWC images: the network's ``config.kind``
    kernel, 'ntk' or 'nngp'.

  Raises:
    ValueError: unknown ``kernel.name`` or ``kernel.kind`` ('ntk' or 'nngp').
  """
  if config.name not in KERNELS:
    raise ValueError(f"config.kernel.name must be one of {list(KERNELS)}, got {config.name!r}")
  if config.kind not in ("ntk", "nngp"):
    raise ValueError(f"config.kernel.kind must be 'ntk' or 'nngp', got {config.kind!r}")
  common = dict(W_std=config.W_std, b_std=config.b_std, parameterization=config.parameterization)
  layers = [stax.Flatten()] if config.name == "fc" else []
  for _ in range(config.depth):
    if config.name == "fc":
      layers += [stax.Dense(config.width, **common), stax.Relu()]
    else:
      layers += [
        stax.Conv(config.width, (3, 3), padding="SAME", **common),
        stax.Relu(),
        stax.AvgPool((2, 2), strides=(2, 2)),
      ]
  if config.name == "conv":
    layers.append(stax.Flatten())
  _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, **common))
  return functools.partial(kernel_fn, get=config.kind)


def transfer_protocol(config: Any, num_support: int) -> evaluation.Protocol:
  """The finite-network protocol of KIP's transfer check: ``config.evaluation``
  (:func:`kdjax.distill.evaluation.protocol_from_config`; ``batch_size=0`` trains full batch
  on the ``num_support`` images). The KIP configs give it the kernel's architecture (``fc``:
  an MLP with ``kernel.depth`` hidden layers; ``conv``: the ConvNet with ``kernel.depth``
  blocks), the mean squared error to the support labels (KIP's labels are real-valued
  regression targets), no augmentation and one seed."""
  return evaluation.protocol_from_config(config.evaluation, num_support=num_support)


def train_transfer(
  config: Any,
  x_support: np.ndarray,
  y_support: np.ndarray,
  x_test: np.ndarray,
  labels_test: np.ndarray,
  *,
  seed: int,
) -> float:
  r"""Trains a finite-width network on the support set alone; returns its test accuracy.

  The shared protocol :func:`kdjax.distill.evaluation.evaluate` with
  :func:`transfer_protocol`: the finite-width counterpart of the kernel regression,

  .. math:: \min_\theta \tfrac{1}{2m}\textstyle\sum_i \lVert f_\theta(x_i) - y_i \rVert^2

  (Nguyen, Chen & Lee, 2021, "Dataset Meta-Learning from Kernel Ridge-Regression",
  transfer to finite networks).
  """
  protocol = transfer_protocol(config, len(x_support))
  num_classes = np.shape(y_support)[1]
  return evaluation.evaluate(
    x_support, y_support, x_test, labels_test, protocol, num_classes=num_classes, seed=seed
  )["mean"]


def validate(config: Any) -> None:
  """Checks the whole KIP config before any work starts: pure Python, nothing is loaded or
  written (ValueError naming the key)."""
  config_lib.check_migrated(config, "the config")
  config_lib.Loop.from_config(config)
  config_lib.Dataset.from_config(config.dataset)
  config_lib.Optimizer.from_config(config.optimizer)
  evaluation.protocol_from_config(config.evaluation)
  k = config.kip
  for key in ("per_class", "target_batch_size"):
    config_lib.check_int(k[key], f"config.kip.{key}")
  config_lib.check_number(k.reg, "config.kip.reg", above=0)
  config_lib.check_number(k.label_offset, "config.kip.label_offset", minimum=0, below=1)
  for key in ("learn_images", "learn_labels", "label_solve"):
    config_lib.check_bool(k[key], f"config.kip.{key}")
  kernel = config.kernel
  config_lib.check_choice(kernel.name, "config.kernel.name", KERNELS)
  for key in ("depth", "width"):
    config_lib.check_int(kernel[key], f"config.kernel.{key}")
  config_lib.check_number(kernel.W_std, "config.kernel.W_std", above=0)
  config_lib.check_number(kernel.b_std, "config.kernel.b_std", minimum=0)
  build_kernel(kernel)


def _refuse_npz_checkpoints(workdir: str) -> None:
  old = glob.glob(os.path.join(workdir, support.CHECKPOINT_DIR, "ckpt_*.npz"))
  if old:
    raise ValueError(
      f"workdir {workdir!r} holds KIP checkpoints in the old npz format "
      f"({os.path.basename(sorted(old)[-1])}), which kdjax no longer reads (checkpoints are "
      "orbax now); start a new --workdir, or move that workdir's checkpoints/ and "
      "metrics.jsonl away to rerun it from step 0"
    )


def run(config: Any, workdir: str) -> dict:
  """Runs (or resumes) the KIP job of ``config`` in ``workdir``; returns the summary.

  Args:
    config: a ConfigDict as in ``experiments/kip_mnist5k.py`` (``job='kip'``).
    workdir: run directory (created; resumed if it holds this config).

  Returns:
    Flat summary: ``test_accuracy`` (KRR with the final support set),
    ``test_accuracy_init`` (random real support), ``kip_test_accuracy`` (before Label
    Solve), with ``config.kip.label_solve`` also ``label_solve_test_accuracy`` and the
    KIP loss on the whole training set before/after (``kip_train_loss``,
    ``label_solve_train_loss``), ``transfer_test_accuracy`` and
    ``transfer_test_accuracy_init`` (finite network on the final / initial support),
    ``num_support``, ``num_steps``, ``kip_seconds`` and ``kip_timed_steps`` (the KIP
    steps' wall seconds and their number, :func:`kdjax.distill.support.timings`: a
    re-run of a finished job keeps the timings of the run that did the steps).

  Raises:
    ValueError: a bad config (before any work), or a workdir with old npz checkpoints.
    FloatingPointError: the loss or the support set became non-finite (names the step).
  """
  validate(config)
  _refuse_npz_checkpoints(workdir)
  problem = support.support_problem(config, "kip")
  with workdir_lib.open_workdir(workdir, config) as wd:
    return _run(config, wd.path, problem)


def _run(config: Any, workdir: str, problem: support.SupportProblem) -> dict:
  kernel = build_kernel(config.kernel)
  ds, k = problem.ds, config.kip
  optimizer = config_lib.Optimizer.from_config(config.optimizer).make(config.num_steps)
  init, step_fn = kip.make_kip_step(
    kernel,
    optimizer,
    reg=k.reg,
    learn_images=k.learn_images,
    learn_labels=k.learn_labels,
    mesh=problem.mesh,
  )
  x_test_j, labels_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
  accuracy = jax.jit(lambda x, y: kip.krr_accuracy(kernel, x, y, x_test_j, labels_test, reg=k.reg))
  result = support.train(
    config,
    workdir,
    name="kip",
    state_key="kip",
    state=init(problem.x0, problem.y0),
    step_fn=step_fn,
    accuracy=lambda state: accuracy(state.x, state.y),
    problem=problem,
  )
  state = result.state
  x_final, y_final = np.asarray(state.x), np.asarray(state.y)
  kip_acc = float(accuracy(state.x, state.y))
  summary = {
    "test_accuracy_init": result.test_accuracy_init,
    "kip_test_accuracy": kip_acc,
    "num_support": int(len(x_final)),
    "num_steps": int(config.num_steps),
    **support.timings(workdir, "kip", result),
  }
  if k.label_solve:
    x_train_j = jnp.asarray(ds.x_train)
    targets_j = jnp.asarray(
      data.regression_targets(ds.y_train, ds.num_classes, offset=k.label_offset)
    )
    y_final = np.asarray(
      jax.jit(lambda xs: kip.label_solve(kernel, xs, x_train_j, targets_j, reg=k.reg))(state.x)
    )
    full_loss = jax.jit(
      lambda xs, ys: kip.kip_loss(kernel, xs, ys, x_train_j, targets_j, reg=k.reg)
    )
    summary["kip_train_loss"] = float(full_loss(state.x, state.y))
    summary["label_solve_train_loss"] = float(full_loss(state.x, jnp.asarray(y_final)))
    summary["label_solve_test_accuracy"] = float(accuracy(state.x, jnp.asarray(y_final)))
    print(f"label solve: test_accuracy={summary['label_solve_test_accuracy']:.4f}", flush=True)
  summary["test_accuracy"] = float(accuracy(jnp.asarray(x_final), jnp.asarray(y_final)))
  outputs.save_support_set(
    workdir,
    x_final,
    y_final,
    per_class=k.per_class,
    records=result.records,
    title=f"KIP {ds.name}, {k.per_class}/class",
  )
  if config.evaluation.enabled:
    summary["transfer_test_accuracy"] = train_transfer(
      config, x_final, y_final, ds.x_test, ds.y_test, seed=config.seed
    )
    summary["transfer_test_accuracy_init"] = train_transfer(
      config, problem.x0, problem.y0, ds.x_test, ds.y_test, seed=config.seed
    )
    print(
      f"transfer ({config.evaluation.network}, width {config.evaluation.width}): "
      f"test_accuracy={summary['transfer_test_accuracy']:.4f} on the KIP support, "
      f"{summary['transfer_test_accuracy_init']:.4f} on the random real support",
      flush=True,
    )
  support.write_summary(workdir, summary)
  return summary
