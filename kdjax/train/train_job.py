"""``run(config, workdir)``: the training job of ``launch.main`` (config.job == 'train').

Methods (``config.method``):

* ``supervised``: train ``config.model`` on the labels.
* ``kd``: train ``config.model`` from a frozen teacher. The teacher is the finished run
  in ``config.teacher_workdir`` or, when that is empty, is first trained here in
  ``WORKDIR/teacher`` from ``config.teacher`` (model, optimizer, num_steps, augment).
* ``born_again``: generations ``WORKDIR/gen_0 .. gen_{G-1}``; generation 0 learns the
  labels, generation k distils generation k-1 (same architecture), optionally with
  CWTM or DKPP (Furlanello et al. (2018), "Born again neural networks").
* ``self_distill``: the same generations, generation k trained on ground-truth-weighted
  targets ``alpha * onehot(y) + (1 - alpha) * teacher`` (Borup & Andersen (2021), "Even
  your teacher needs guidance: ground-truth targets dampen regularization imposed by
  self-distillation").

The whole config is validated before any work starts. Every phase runs in its own
directory with ``config.json``, ``metrics.jsonl``, TensorBoard events, ``checkpoints/``
and PNG plots (the parts of :mod:`kdjax.jobs`), and is resumable: a phase whose last
checkpoint is at ``num_steps`` is not retrained. The batch of step ``s`` and the dropout
key of step ``s`` depend only on ``(seed, s)``, so a resumed run equals an uninterrupted
one. SIGTERM makes the loop save a checkpoint and raise ``Preempted`` (a clean
``SystemExit``). A non-finite loss or teacher output stops the job with a
FloatingPointError naming the phase and the step.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from kdjax import data as data_lib, mesh as mesh_lib, models
from kdjax.jobs import (
  config as config_lib,
  data_loading,
  evaluate as evaluate_lib,
  figures,
  loop as jobs_loop,
  workdir as workdir_lib,
)
from kdjax.jobs.checkpoint import Checkpointer, PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter, check_finite
from kdjax.jobs.preemption import Preempted  # noqa: F401  (re-exported for callers)
from kdjax.train import (
  augment as augment_lib,
  objectives as objectives_lib,
  sharding as sharding_lib,
  state as state_lib,
  steps as steps_lib,
)

METHODS = ("supervised", "kd", "born_again", "self_distill")


# Phases, generations and sweep points of one process share the loaded arrays.
_load_cached = functools.lru_cache(maxsize=4)(data_loading.load_spec)


def load_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The dataset of ``config.dataset`` (``kdjax.jobs.data_loading``), cached per process."""
  return _load_cached(*data_loading.dataset_spec(config.dataset))


def _check_phase(config: ml_collections.ConfigDict, name: str) -> None:
  """Checks the keys that one phase reads (raises ValueError naming the key); pure Python,
  no jax op runs."""
  config_lib.Loop.from_config(config)
  devices = jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    value = config_lib.check_int(config[key], f"config.{key}")
    if value % devices:
      raise ValueError(
        f"config.{key}={value} must be a positive multiple of the number of devices ({devices})"
      )
  config_lib.Dataset.from_config(config.dataset)
  prefix = "config.teacher" if name == "teacher" else "config"
  models.from_config(config_lib.check_model(config.model, f"{prefix}.model"))
  config_lib.Optimizer.from_config(config.optimizer, f"{prefix}.optimizer")
  augment_lib.get(config.augment)
  sharding_lib.validate_rules(config.sharding.rules)
  config_lib.check_number(config.label_smoothing, "config.label_smoothing", minimum=0, below=1)


@functools.lru_cache(maxsize=64)
def _check_objective(method: str, block_json: str, classes: int) -> None:
  """Traces the objective of ``method`` with ``config.<method>`` = ``block_json`` on abstract
  logits (``jax.eval_shape``: nothing is computed), so that the losses check their concrete
  hyper-parameters (e.g. the temperature). Cached: a sweep's configs trace it once."""
  block = json.loads(block_json)
  if method == "kd":
    objective = objectives_lib.distillation(
      block["loss"],
      block["loss_kwargs"],
      kd_weight=float(block["kd_weight"]),
      ce_weight=float(block["ce_weight"]),
    )
  elif method == "born_again":
    objective = objectives_lib.born_again(**block)
  else:
    objective = objectives_lib.self_distillation(**block)
  logits = jax.ShapeDtypeStruct((2, classes), jnp.float32)
  labels = jax.ShapeDtypeStruct((2,), jnp.int32)
  jax.eval_shape(lambda s, t, y: objective(s, t, y, jax.random.PRNGKey(0)), logits, logits, labels)


def _objective_block(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config[config.method].to_dict(), sort_keys=True)


class _TeacherView:
  """What :func:`teacher_config` returns, as a read-only view (no copy: validation is cheap)."""

  _OVERRIDES = ("model", "optimizer", "num_steps", "augment")

  def __init__(self, config: ml_collections.ConfigDict):
    self._config = config

  def __contains__(self, key: str) -> bool:
    return key in self._config

  def __getitem__(self, key: str) -> Any:
    if key in self._OVERRIDES:
      return self._config.teacher[key]
    return self._config[key]

  __getattr__ = __getitem__


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the whole config before any work starts (a bad KD loss or teacher key is found
  before the teacher trains, every key before the workdir is touched); raises ValueError
  naming the offending key."""
  config_lib.check_migrated(config, "the config")
  config_lib.check_choice(config.method, "config.method", METHODS)
  _check_phase(config, config.method)
  classes = int(config.model.num_classes)
  if config.method == "kd":
    kd = config.kd
    for key in ("kd_weight", "ce_weight"):
      config_lib.check_number(kd[key], f"config.kd.{key}", minimum=0)
    for key, value in dict(kd.loss_kwargs).items():
      above = 0 if key == "temperature" else None
      config_lib.check_number(value, f"config.kd.loss_kwargs.{key}", above=above)
    _check_objective("kd", _objective_block(config), classes)
    if config.teacher_workdir:
      finished_teacher_config(config.teacher_workdir)
    else:
      config_lib.check_int(config.teacher.num_steps, "config.teacher.num_steps")
      _check_phase(_TeacherView(config), "teacher")
  elif config.method in ("born_again", "self_distill"):
    config_lib.check_int(config.generations, "config.generations")
    block = config[config.method]
    config_lib.check_number(block.temperature, f"config.{config.method}.temperature", above=0)
    if config.method == "born_again":
      config_lib.check_number(block.ce_weight, "config.born_again.ce_weight", minimum=0)
    else:
      config_lib.check_number(block.alpha, "config.self_distill.alpha", minimum=0, maximum=1)
    _check_objective(config.method, _objective_block(config), classes)


class Phase:
  """One model trained for ``config.num_steps`` in ``workdir`` (built, not yet run)."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str,
    ds: data_lib.Dataset,
    objective: objectives_lib.Objective,
    name: str,
    teacher: tuple[Any, Any, Any] | None = None,
  ):
    classes = config.model.num_classes
    if classes != ds.num_classes:
      raise ValueError(
        f"config.model.num_classes={classes} but dataset {ds.name!r} has {ds.num_classes} classes"
      )
    self.config, self.workdir, self.ds, self.name = config, workdir, ds, name
    self.mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(int(config.batch_size), self.mesh, "config.batch_size")
    self.eval_batch_size = int(config.eval_batch_size)
    mesh_lib.check_batch_size(self.eval_batch_size, self.mesh, "config.eval_batch_size")
    self.model = models.from_config(config.model)
    self.tx = config_lib.Optimizer.from_config(config.optimizer).make(int(config.num_steps))
    rules = [tuple(r) for r in config.sharding.rules]
    sample = ds.x_train[: int(config.batch_size)]
    self.state, self.shardings = state_lib.create_state(
      self.model, self.tx, sample, int(config.seed), self.mesh, rules
    )
    self.teacher_args = ()
    teacher_shardings = None
    teacher_module = None
    if teacher is not None:
      teacher_module, teacher_variables, teacher_shardings = teacher
      steps_lib.check_teacher(
        self.model, self.state.variables(), teacher_module, teacher_variables, sample
      )
      check_finite(
        f"{name} (teacher outputs)",
        0,
        teacher_logits=teacher_module.apply(teacher_variables, jnp.asarray(sample), train=False),
      )
      self.teacher_args = (teacher_variables,)
    step = steps_lib.make_train_step(
      self.model,
      self.tx,
      objective,
      seed=int(config.seed),
      teacher=teacher_module,
      augment=augment_lib.get(config.augment),
    )
    self.train_step = steps_lib.jit_train_step(step, self.mesh, self.shardings, teacher_shardings)
    self.eval_step = steps_lib.jit_eval_step(
      steps_lib.make_eval_step(self.model), self.mesh, self.variables_shardings()
    )
    self.batches = data_lib.Batches(
      ds.x_train,
      ds.y_train,
      batch_size=int(config.batch_size),
      seed=int(config.seed),
      sharding=mesh_lib.batch_sharding(self.mesh),
    )

  def variables_shardings(self) -> dict:
    """Shardings of ``{'params': ..., **model_state}`` (the frozen-teacher pytree)."""
    return {"params": self.shardings.params, **self.shardings.model_state}

  def evaluate(self, state: state_lib.TrainState | None = None) -> dict:
    """``test_loss`` and ``test_accuracy`` of ``state`` (default: the current one) on the
    test split."""
    state = self.state if state is None else state
    x, y = self.ds.x_test, self.ds.y_test
    b = self.eval_batch_size
    batches = ({"inputs": x[i : i + b], "labels": y[i : i + b]} for i in range(0, len(y), b))
    return evaluate_lib.evaluate(
      self.eval_step, state.variables(), batches, self.mesh, b, prefix="test"
    )

  def checkpointer(self) -> Checkpointer:
    return Checkpointer(
      os.path.join(self.workdir, "checkpoints"), keep=int(self.config.keep_checkpoints)
    )

  def restore(self, checkpointer: Checkpointer) -> int:
    """Replaces the state by the newest intact checkpoint; returns its step (0 if none)."""
    step, state = checkpointer.restore_latest(jax.eval_shape(lambda: self.state), self.shardings)
    if step is not None:
      self.state = state
    return step or 0

  def run(self, preemption: PreemptionFlag) -> dict:
    """Trains (or resumes) to ``num_steps``; returns the final summary."""
    total = int(self.config.num_steps)
    checkpointer = self.checkpointer()
    try:
      start = self.restore(checkpointer)
      if start:
        jobs_loop.say(f"[{self.name}] resumed from the checkpoint at step {start}")
      log = MetricsWriter(self.workdir, resume_step=start, total_steps=total, name=self.name)
      try:
        if start >= total:
          return {**(log.records[-1] if log.records else self.evaluate()), "step": start}
        summary = self._train(start, total, checkpointer, log, preemption)
      finally:
        log.close()
    finally:
      checkpointer.close()
    if jax.process_index() == 0:
      self._plot(log.records)
    return summary

  def _train(
    self,
    start: int,
    total: int,
    checkpointer: Checkpointer,
    log: MetricsWriter,
    preemption: PreemptionFlag,
  ) -> dict:
    def step_fn(state, step):
      batch = self.batches.batch(step)
      batch = {"inputs": batch["image"], "labels": batch["label"]}
      return self.train_step(state, batch, *self.teacher_args)

    self.state = jobs_loop.run_steps(
      self.state,
      step_fn,
      start=start,
      total=total,
      every=jobs_loop.Every.of(self.config),
      name=self.name,
      checkpointer=checkpointer,
      metrics=log,
      on_eval=lambda state, step: self.evaluate(state),
      # a non-finite state is neither logged as plausible nor saved
      check=lambda state, metrics: {"train_loss": metrics["train_loss"]},
      preemption=preemption,
    )
    return log.records[-1]

  def _plot(self, records: list[dict]) -> None:
    figures.plot_curves(
      records,
      ["train_loss", "test_loss"],
      os.path.join(self.workdir, "loss.png"),
      title=self.name,
      logy=True,
    )
    figures.plot_curves(
      records,
      ["train_accuracy", "test_accuracy"],
      os.path.join(self.workdir, "accuracy.png"),
      title=self.name,
    )

  def teacher(self) -> tuple[Any, Any, Any]:
    """``(module, variables, shardings)`` of the trained model, for use as a frozen teacher."""
    return self.model, self.state.variables(), self.variables_shardings()


def _phase_config(config: ml_collections.ConfigDict, **overrides: Any) -> ml_collections.ConfigDict:
  phase = copy.deepcopy(config)
  with phase.unlocked():
    for key, value in overrides.items():
      phase[key] = value
  return phase


def _train_phase(config, workdir, ds, objective, name, preemption, teacher=None):
  with workdir_lib.open_workdir(workdir, config, locked=False):
    phase = Phase(config, workdir, ds, objective, name, teacher)
    return phase, phase.run(preemption)


def supervised_objective(config: ml_collections.ConfigDict) -> objectives_lib.Objective:
  """Cross-entropy on the labels, with ``config.label_smoothing``."""
  return objectives_lib.supervised(float(config.label_smoothing))


def distillation_objective(config: ml_collections.ConfigDict) -> objectives_lib.Objective:
  """The KD objective of ``config.kd`` (loss, loss_kwargs, kd_weight, ce_weight)."""
  kd = config.kd
  return objectives_lib.distillation(
    kd.loss, dict(kd.loss_kwargs), kd_weight=float(kd.kd_weight), ce_weight=float(kd.ce_weight)
  )


def _generation_objective(config: ml_collections.ConfigDict) -> objectives_lib.Objective:
  if config.method == "born_again":
    return objectives_lib.born_again(**dict(config.born_again))
  return objectives_lib.self_distillation(**dict(config.self_distill))


def teacher_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The supervised config of the teacher phase: ``config`` with ``config.teacher``'s entries
  (model, optimizer, num_steps, augment)."""
  teacher = config.teacher
  phase = _phase_config(
    config,
    method="supervised",
    model=teacher.model,
    optimizer=teacher.optimizer,
    num_steps=int(teacher.num_steps),
    augment=teacher.augment,
  )
  with phase.unlocked():
    for key in ("teacher", "teacher_workdir", "kd"):
      del phase[key]
  return phase


def finished_teacher_config(teacher_workdir: str) -> ml_collections.ConfigDict:
  """The config of the finished run in ``teacher_workdir``.

  Raises:
    ValueError: the directory holds no run, or its run is not finished.
  """
  path = os.path.join(teacher_workdir, workdir_lib.CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r} holds no "
      f"{workdir_lib.CONFIG_FILE}: it is not the workdir of a finished run"
    )
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config_lib.check_migrated(config, f"config.teacher_workdir={teacher_workdir!r}")
  if "num_steps" not in config:
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r} holds a config without "
      "num_steps (written by an older kdjax); train the teacher again"
    )
  if not jobs_loop.finished(teacher_workdir, int(config.num_steps)):
    latest = jobs_loop.last_checkpoint(teacher_workdir)
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r} holds no finished teacher "
      f"(last checkpoint {latest}, num_steps {config.num_steps}); finish it first"
    )
  return config


def load_teacher(teacher_workdir: str, ds: data_lib.Dataset):
  """The finished run in ``teacher_workdir`` as ``(module, variables, shardings)``."""
  config = finished_teacher_config(teacher_workdir)
  phase = Phase(config, teacher_workdir, ds, supervised_objective(config), "teacher")
  checkpoints = phase.checkpointer()
  try:
    step = phase.restore(checkpoints)  # read only: nothing in teacher_workdir is written
  finally:
    checkpoints.close()
  if step != int(config.num_steps):
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r}: its final checkpoint "
      f"does not restore (newest intact: step {step})"
    )
  return phase.teacher()


def _generations(config, workdir, ds, preemption, student_objective: Callable[[], Any]):
  generations = int(config.generations)
  teacher, rows = None, []
  log = MetricsWriter(workdir, resume_step=None, total_steps=generations - 1, name=config.method)
  try:
    for g in range(generations):
      gen_config = _phase_config(config, method=f"{config.method}_gen{g}")
      objective = supervised_objective(config) if g == 0 else student_objective()
      phase, summary = _train_phase(
        gen_config,
        os.path.join(workdir, f"gen_{g}"),
        ds,
        objective,
        f"gen {g}",
        preemption,
        teacher,
      )
      teacher = phase.teacher()
      rows.append(summary)
      log.write(g, **{k: v for k, v in summary.items() if k != "step"})
  finally:
    log.close()
  if jax.process_index() == 0:
    figures.plot_curves(
      log.records,
      ["test_accuracy"],
      os.path.join(workdir, "generations.png"),
      title=f"{config.method}: accuracy per generation",
      xlabel="generation",
    )
  summary = {f"gen{g}_test_accuracy": r["test_accuracy"] for g, r in enumerate(rows)}
  return {**summary, "test_accuracy": rows[-1]["test_accuracy"]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the training job described by ``config`` in ``workdir``; returns a flat summary.

  The summary (also ``WORKDIR/summary.json``) holds the final record's figures:
  ``test_accuracy``, ``test_loss``, ``train_loss``, ``train_accuracy`` (and what else the
  objective logs); in ``kd`` mode the teacher's as ``teacher_<figure>`` (when it was
  trained here); for generations ``gen<k>_test_accuracy`` and the last generation's
  ``test_accuracy``. A finished run re-run returns and writes the same summary.
  """
  validate(config)
  ds = load_dataset(config)  # checks that need the data run before the workdir is touched
  models_of = [("config.model", config.model)]
  if config.method == "kd" and not config.teacher_workdir:
    models_of.append(("config.teacher.model", config.teacher.model))
  for key, model in models_of:
    if int(model.num_classes) != ds.num_classes:
      raise ValueError(
        f"{key}.num_classes={model.num_classes} but dataset {ds.name!r} has "
        f"{ds.num_classes} classes"
      )
  with workdir_lib.open_workdir(workdir, config), PreemptionFlag() as preemption:
    summary = _run(config, workdir, preemption)
    return jobs_loop.write_summary(workdir, summary)


def _run(config, workdir, preemption) -> dict:
  ds = load_dataset(config)
  if config.method == "supervised":
    _, summary = _train_phase(
      config, workdir, ds, supervised_objective(config), "supervised", preemption
    )
    return _flat(summary)
  if config.method == "kd":
    if config.teacher_workdir:
      teacher = load_teacher(config.teacher_workdir, ds)
      teacher_summary = {}
    else:
      phase, teacher_summary = _train_phase(
        teacher_config(config),
        os.path.join(workdir, "teacher"),
        ds,
        supervised_objective(config),
        "teacher",
        preemption,
      )
      teacher = phase.teacher()
    phase = Phase(config, workdir, ds, distillation_objective(config), "student", teacher)
    summary = phase.run(preemption)
    return {**_flat(summary), **{f"teacher_{k}": v for k, v in _flat(teacher_summary).items()}}
  return _generations(config, workdir, ds, preemption, lambda: _generation_objective(config))


def _flat(summary: dict) -> dict:
  return {k: v for k, v in summary.items() if k != "step"}
