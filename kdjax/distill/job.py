r"""The dataset-distillation job: ``python -m launch.main --config=experiments/rfad_mnist5k.py:10
--workdir=DIR``.

``run(config, workdir)`` learns a support set with ``config.method`` ('rfad': Loo et al.,
2022, :mod:`kdjax.distill.rfad`; 'frepo': Zhou et al., 2022, :mod:`kdjax.distill.frepo`;
'dm': Zhao & Bilen, 2023, :mod:`kdjax.distill.dm`; 'dc' / 'dsa': Zhao et al., 2021,
:mod:`kdjax.distill.dc` without / with the siamese augmentation of
:mod:`kdjax.distill.dsa`; 'mtt' / 'datm': Cazenavette et al., 2022 / Guo et al., 2024,
:mod:`kdjax.distill.mtt`, which first train or load their expert buffer; 'rcig': Loo et
al., 2023, :mod:`kdjax.distill.rcig`; settings in
``config.<method>``) from class-balanced random
real images, on target batches sharded over all devices, and writes to ``workdir`` (on
:mod:`kdjax.jobs`): ``metrics.jsonl`` + TensorBoard events (``train_loss``;
``test_accuracy``: KRR with the method's kernel: RFAD's with
``config.rfad.num_models_eval`` random networks, FRePo's and RCIG's with the features of pool
model 0; DM's, DC's and DSA's, which have no kernel: the embedding of one random ConvNet of the
method's architecture),
orbax checkpoints (a re-run resumes and ends with the same support set: every target
batch and every random network is a function of ``(seed, step)``), ``support.npz``,
``support.png``, ``learning_curve.png``, ``loss.png`` and ``summary.json`` with
``test_accuracy`` and ``transfer_test_accuracy`` (when ``config.evaluation.enabled``: finite
networks trained from scratch on
the support set alone by :func:`kdjax.distill.evaluation.evaluate`, mean over seeds),
beside the same numbers for the random real initial support (``*_init``).

The finite networks follow ``config.evaluation`` with one label-aware rule: class labels
(the initial support, or a support whose labels were not learned) are fitted with the
protocol's loss; learned labels (``<method>.learn_labels``) are real-valued KRR targets,
so the networks regress them with the MSE, :math:`\tfrac12\lVert f_\theta(x) - y\rVert^2`
(as RFAD's and FRePo's finite evaluations train on learned labels).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax import models
from kdjax.distill import dc, dm, dsa, evaluation, frepo, mtt, outputs, rcig, rfad, support
from kdjax.jobs import config as config_lib, loop, workdir as workdir_lib

__all__ = ["METHODS", "validate", "protocol", "finite_task", "run"]

METHODS = ("rfad", "frepo", "dm", "dc", "dsa", "rcig") + mtt.METHODS
MATCHING = ("dm", "dc", "dsa")  # the non-kernel baselines: a ConvNet and an augmentation
NORMALIZATIONS = ("instance", "none")  # kdjax.models.ConvNet's, for FRePo's model pool
RCIG_INTS = ("pool_size", "max_updates", "pool_steps", "inner_steps", "hinv_steps")


def validate(config: Any) -> None:
  """Checks every key the job reads, before any work: pure Python, nothing is loaded or
  written; raises ValueError naming the key."""
  config_lib.check_migrated(config, "the config")
  name = config_lib.check_choice(config.method, "config.method", METHODS)
  config_lib.Loop.from_config(config)
  config_lib.Dataset.from_config(config.dataset)
  config_lib.Optimizer.from_config(config.optimizer)
  evaluation.protocol_from_config(config.evaluation)
  r = config[name]
  if name in mtt.METHODS:  # MTT / DATM: kdjax.distill.mtt
    return mtt.validate_block(r, f"config.{name}")
  specific = {
    "rfad": ("num_models", "num_models_eval"),
    "frepo": ("pool_size", "max_updates"),
    "dm": (),
    "dc": ("outer_loop", "inner_steps", "real_per_class"),
    "rcig": RCIG_INTS,
  }[name if name != "dsa" else "dc"]
  for key in ("per_class", "width", "depth", "target_batch_size") + specific:
    config_lib.check_int(r[key], f"config.{name}.{key}")
  config_lib.check_number(r.reg, f"config.{name}.reg", above=0)
  config_lib.check_number(r.label_offset, f"config.{name}.label_offset", minimum=0, below=1)
  if name in MATCHING:
    config_lib.check_choice(r.normalization, f"config.{name}.normalization", NORMALIZATIONS)
    if r.augment != "none" or name == "dsa":
      try:
        dsa.parse_strategy(r.augment)
      except ValueError as err:
        raise ValueError(f"config.{name}.augment: {err} ('dsa' is 'dc' with one)") from None
    if name != "dm":
      config_lib.check_number(r.model_learning_rate, f"config.{name}.model_learning_rate", above=0)
      if r.real_per_class > r.target_batch_size:
        raise ValueError(
          f"config.{name}.real_per_class ({r.real_per_class}) exceeds "
          f"config.{name}.target_batch_size ({r.target_batch_size})"
        )
    return
  config_lib.check_bool(r.learn_labels, f"config.{name}.learn_labels")
  if name in ("rfad", "rcig"):
    config_lib.check_choice(r.loss, f"config.{name}.loss", rfad.LOSSES)
  if name != "rfad":
    config_lib.check_number(r.model_learning_rate, f"config.{name}.model_learning_rate", above=0)
    config_lib.check_choice(r.normalization, f"config.{name}.normalization", NORMALIZATIONS)
  if name == "rcig":
    config_lib.check_bool(r.clip_implicit, "config.rcig.clip_implicit")


def _method(config: Any, mesh: Any, num_classes: int) -> tuple[Any, Any, Any]:
  """``(init, step, features)`` of ``config.method``; ``features(state, x) -> [n, F]`` is
  the method's kernel feature map used for the KRR test accuracy."""
  r = config[config.method]
  optimizer = config_lib.Optimizer.from_config(config.optimizer).make(config.num_steps)
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 2**30)  # the KRR features' draw
  if config.method == "rfad":
    network = rfad.convnet(r.width, r.depth)
    init, step = rfad.make_rfad_step(
      network,
      optimizer,
      reg=r.reg,
      num_models=r.num_models,
      seed=config.seed,
      loss=r.loss,
      learn_labels=r.learn_labels,
      mesh=mesh,
    )
    return (
      init,
      step,
      lambda state, x: rfad.random_features(network, eval_key, x, num_models=r.num_models_eval),
    )
  model = models.ConvNet(
    num_classes=num_classes, width=r.width, depth=r.depth, normalization=r.normalization
  )
  if config.method in MATCHING:
    if config.method == "dm":
      init, step = dm.make_dm_step(
        model,
        optimizer,
        num_classes=num_classes,
        seed=config.seed,
        strategy=r.augment,
        mesh=mesh,
      )
    else:
      init, step = dc.make_dc_step(
        model,
        optimizer,
        num_classes=num_classes,
        per_class=r.per_class,
        seed=config.seed,
        outer_loop=r.outer_loop,
        inner_steps=r.inner_steps,
        model_learning_rate=r.model_learning_rate,
        real_per_class=r.real_per_class,
        strategy=r.augment,
        mesh=mesh,
      )
    # DM's, DC's and DSA's kernel: the features of one random ConvNet.
    return (
      init,
      step,
      lambda state, x: frepo.features(model, model.init(eval_key, x[:1]), x),
    )
  if config.method == "rcig":
    init, step, _ = rcig.make_rcig_step(
      model,
      optimizer,
      model_optimizer=optax.adam(r.model_learning_rate),
      reg=r.reg,
      **{k: r[k] for k in RCIG_INTS},
      seed=config.seed,
      loss=r.loss,
      learn_labels=r.learn_labels,
      clip_implicit=r.clip_implicit,
      mesh=mesh,
    )
  else:
    init, step, _ = frepo.make_frepo_step(
      model,
      optimizer,
      model_optimizer=optax.adam(r.model_learning_rate),
      reg=r.reg,
      pool_size=r.pool_size,
      max_updates=r.max_updates,
      seed=config.seed,
      learn_labels=r.learn_labels,
    )
  # FRePo's and RCIG's kernel: the features of the pool's first model.
  first = lambda state: jax.tree.map(lambda a: a[0], state.pool)  # noqa: E731
  return init, step, lambda state, x: frepo.features(model, first(state), x)


def protocol(config: Any) -> evaluation.Protocol:
  """The finite-network protocol of ``config.evaluation`` (ValueError names bad keys)."""
  return evaluation.protocol_from_config(config.evaluation)


def finite_task(
  finite: evaluation.Protocol, y: jax.typing.ArrayLike, *, learned: bool, softmax: bool = False
) -> tuple[evaluation.Protocol, np.ndarray]:
  """The protocol and labels the finite networks fit for a support set with label rows ``y``.

  Learned labels are real-valued KRR targets: the networks regress them,
  ``(finite with loss='mse', y)``; learned label *logits* (``softmax=True``, DATM's soft
  labels) are distributions: ``(finite with loss='xent', softmax(y))``, the soft
  cross-entropy. Otherwise the rows are one-hot (minus an offset) class labels:
  ``(finite, argmax(y))``, the protocol's own loss on the class ids.
  """
  y = np.asarray(y)
  if learned and softmax:
    z = np.exp(y - y.max(1, keepdims=True), dtype=np.float64)
    return dataclasses.replace(finite, loss="xent"), (z / z.sum(1, keepdims=True)).astype(
      np.float32
    )
  if learned:
    return dataclasses.replace(finite, loss="mse"), y
  return finite, np.argmax(y, 1)


def run(config: Any, workdir: str) -> dict:
  """Runs (or resumes) the distillation of ``config`` in ``workdir``; returns the summary.

  Returns:
    ``test_accuracy`` / ``test_accuracy_init`` (KRR, the method's kernel, on the final /
    random real support), ``transfer_test_accuracy`` (+ ``_std``) /
    ``transfer_test_accuracy_init`` (finite networks, mean over seeds),
    ``num_support``, ``num_steps``, ``distill_seconds`` and ``distill_timed_steps`` (the
    steps' wall seconds and their number, :func:`kdjax.distill.support.timings`: a re-run
    of a finished job keeps the timings of the run that did the steps).

  Raises:
    ValueError: a bad config (before any work): unknown method or network, ``per_class``
      larger than a class, a target batch the devices do not divide, dataset labels out
      of range, ...
    FloatingPointError: the loss or the support set became non-finite (names the step).
  """
  validate(config)
  problem = support.support_problem(config, config.method)
  with workdir_lib.open_workdir(workdir, config) as wd:
    return _run(config, wd.path, problem)


def _run(config: Any, workdir: str, problem: support.SupportProblem) -> dict:
  r, ds = config[config.method], problem.ds
  extra = {}
  if config.method in mtt.METHODS:  # trains or loads the expert buffer first
    optimizer = config_lib.Optimizer.from_config(config.optimizer).make(config.num_steps)
    init, step_fn, features, problem, extra = mtt.setup(config, workdir, problem, optimizer)
  else:
    init, step_fn, features = _method(config, problem.mesh, ds.num_classes)
  x_test, labels_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

  @jax.jit
  def accuracy(state):
    correct = 0
    for start in range(0, x_test.shape[0], 1000):
      chunk = x_test[start : start + 1000]
      phi = features(state, jnp.concatenate([state.x, chunk]))
      m = state.x.shape[0]
      prediction = rfad.krr_predict(phi[m:], phi[:m], state.y, reg=r.reg)
      correct += jnp.sum(jnp.argmax(prediction, -1) == labels_test[start : start + 1000])
    return correct / x_test.shape[0]

  result = support.train(
    config,
    workdir,
    name=config.method,
    state_key="support",
    state=init(problem.x0, problem.y0),
    step_fn=step_fn,
    accuracy=accuracy,
    problem=problem,
  )
  final = result.state
  x_final, y_final = np.asarray(final.x), np.asarray(final.y)
  summary = {
    "test_accuracy": float(accuracy(final)),
    "test_accuracy_init": result.test_accuracy_init,
    "num_support": int(len(x_final)),
    "num_steps": int(config.num_steps),
    **support.timings(workdir, "distill", result),
    **extra,
  }
  outputs.save_support_set(
    workdir,
    x_final,
    y_final,
    per_class=r.per_class,
    records=result.records,
    title=f"{config.method} {ds.name}, {r.per_class}/class",
  )
  finite = protocol(config)
  for name, (x, y, learned) in (
    ()
    if not config.evaluation.enabled
    else (
      ("", (x_final, y_final, bool(r.get("learn_labels", False)))),
      ("_init", (problem.x0, problem.y0, False)),
    )
  ):
    p, labels = finite_task(finite, y, learned=learned, softmax=config.method == "datm")
    what = f"[{config.method}] finite networks on the {'initial' if name else 'distilled'} set"
    loop.say(f"{what}: {p.seeds} x {p.num_steps(len(x))} steps ...")
    start = time.perf_counter()
    scores = evaluation.evaluate(
      x, labels, ds.x_test, ds.y_test, p, num_classes=ds.num_classes, seed=config.seed
    )
    loop.say(
      f"{what}: test accuracy {scores['mean']:.4f} +- {scores['std']:.4f} "
      f"({time.perf_counter() - start:.0f} s)"
    )
    summary[f"transfer_test_accuracy{name}"] = scores["mean"]
    summary[f"transfer_test_accuracy{name}_std"] = scores["std"]
  support.write_summary(workdir, summary)
  return summary
