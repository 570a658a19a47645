r"""The ``diffusion`` job: a flow-matching teacher, then its few-step students, then samples.

``run(config, workdir)`` trains, each in its own phase directory of ``WORKDIR`` (own
``config.json``, orbax ``checkpoints/``, ``metrics.jsonl``; every phase resumes from its
checkpoints and a finished phase is reloaded, not retrained):

1. ``teacher/``: conditional flow matching (:mod:`kdjax.diffusion.flow`) for
   ``config.num_steps`` steps, or the finished teacher of ``config.teacher_workdir``;
2. one phase per entry of ``config.students`` (in that order):
   ``progressive/round<r>/`` (Salimans & Ho: ``teacher_steps`` Euler steps halved
   ``rounds`` times, each round from the previous round's parameters), ``consistency/``
   (distillation from the teacher's ODE or training without it), ``dmd/`` (one-step
   generator + online fake denoiser, both initialised from the teacher) and ``flow_map/``
   (self-distilled two-time flow map);
3. ``samples/<name>_nfe<k>.npy`` (``config.sample.num_samples`` from the same noise,
   float32; toy2d ``[N, 2]``, digits ``[N, 8, 8]`` mapped back to [0, 1] and clipped): the
   teacher's ``sample.method`` sampler at ``sample.teacher_nfe``, progressive at each
   ``student_nfe`` that a round reached, consistency and flow_map at ``student_nfe``, dmd at
   1 NFE (a one-step generator); ``samples/<name>.png`` (scatter plots / digit grids);
4. ``summary.json``: per sample set ``<name>_nfe<k>/energy_distance`` (toy2d: the unbiased
   energy distance to ``num_samples`` fresh exact samples, :mod:`kdjax.diffusion.metrics`),
   ``/within_0.5`` and ``/min_mode_share`` (eight_gaussians), or ``/fid`` (digits: Fréchet
   distance in the classifier features of ``metrics.digits_features`` to all 1,797
   digits), ``/nfe``; ``<phase>/wall_time_s`` (the training time of each phase, summed over
   resumed runs) and ``<phase>/train_loss`` (last record).

Data: toy2d trains on ``config.num_train`` exact samples (seed ``config.seed``); digits on
all 1,797 images scaled to [-1, 1]. The batch of step ``k`` is drawn by
``np.random.default_rng([seed, phase, k])`` from that pool: a resumed run sees the same
batches. Bad input (each a ValueError naming it, raised by :func:`validate` before the
workdir is touched): an unknown dataset or student, an NFE < 1, progressive rounds that do
not divide ``teacher_steps``, a ``teacher_workdir`` without a finished teacher; a
non-finite logged loss stops the run with :class:`NonFiniteLoss` (a ValueError and a
FloatingPointError) naming the phase and the step.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import mesh as mesh_lib, models
from kdjax.data import toy2d
from kdjax.diffusion import (
  flow_map as flow_map_lib,
  metrics as metrics_lib,
  progressive,
  samplers,
  steps,
)
from kdjax.jobs import config as config_lib, figures, loop, workdir as workdir_lib
from kdjax.jobs.checkpoint import Checkpointer, PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter
from kdjax.train import sharding as sharding_lib
from kdjax.train.state import TrainState

__all__ = ["DATASETS", "STUDENTS", "NonFiniteLoss", "validate", "run"]

DATASETS = toy2d.TOY2D + ("digits",)
STUDENTS = ("progressive", "consistency", "dmd", "flow_map")
_TIMING = "phase_timing.json"


class NonFiniteLoss(ValueError, FloatingPointError):
  """A logged loss was NaN or infinite; the message names the phase and the step."""


def _nfe_list(text: str, path: str) -> list[int]:
  items = [s.strip() for s in str(text).split(",") if s.strip()]
  if not items:
    raise ValueError(f"{path} must list at least one NFE, got {text!r}")
  out = []
  for item in items:
    try:
      value = int(item)
    except ValueError:
      raise ValueError(f"{path}: NFE must be integers >= 1, got {item!r}") from None
    samplers.check_nfe(value, f"{path} entry {item!r}")
    out.append(value)
  return out


def _students(config) -> list[str]:
  names = [s.strip() for s in str(config.students).split(",") if s.strip()]
  for name in names:
    config_lib.check_choice(name, "config.students entry", STUDENTS)
  return names


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every key the job reads; ValueError naming the key. Reads only."""
  c = config
  config_lib.Loop.from_config(c)
  config_lib.check_choice(c.dataset.name, "config.dataset.name", DATASETS)
  students = _students(c)
  config_lib.check_int(c.batch_size, "config.batch_size")
  config_lib.check_int(c.num_train, "config.num_train", minimum=2)
  config_lib.check_model(c.model, "config.model")
  config_lib.Optimizer.from_config(c.teacher.optimizer, "config.teacher.optimizer")
  _nfe_list(c.sample.teacher_nfe, "config.sample.teacher_nfe")
  _nfe_list(c.sample.student_nfe, "config.sample.student_nfe")
  config_lib.check_int(c.sample.num_samples, "config.sample.num_samples", minimum=2)
  config_lib.check_choice(c.sample.method, "config.sample.method", samplers.METHODS)
  p = c.progressive
  if "progressive" in students:
    config_lib.check_int(p.steps_per_round, "config.progressive.steps_per_round")
    config_lib.check_int(p.teacher_steps, "config.progressive.teacher_steps", minimum=2)
    config_lib.check_int(p.rounds, "config.progressive.rounds")
    try:
      progressive.round_steps(p.teacher_steps, p.rounds)
    except ValueError as e:
      raise ValueError(f"config.progressive.rounds: {e}") from None
  for name in ("progressive", "consistency", "dmd", "flow_map"):
    if name in students:
      config_lib.Optimizer.from_config(c[name].optimizer, f"config.{name}.optimizer")
      if name != "progressive":
        config_lib.check_int(c[name].num_steps, f"config.{name}.num_steps")
  if "consistency" in students:
    k = c.consistency
    config_lib.check_choice(k.mode, "config.consistency.mode", steps.CONSISTENCY_MODES)
    config_lib.check_choice(k.solver, "config.consistency.solver", samplers.METHODS)
    config_lib.check_int(k.s0, "config.consistency.s0")
    config_lib.check_int(k.s1, "config.consistency.s1", minimum=int(k.s0))
    config_lib.check_number(k.sigma_min, "config.consistency.sigma_min", above=0)
    config_lib.check_number(k.sigma_max, "config.consistency.sigma_max", above=k.sigma_min)
    config_lib.check_number(k.ema_decay, "config.consistency.ema_decay", minimum=0, below=1)
    config_lib.check_choice(
      k.parametrization, "config.consistency.parametrization", steps.PARAMETRIZATIONS
    )
  if "dmd" in students:
    config_lib.Optimizer.from_config(c.dmd.fake_optimizer, "config.dmd.fake_optimizer")
    config_lib.check_number(c.dmd.reg_weight, "config.dmd.reg_weight", minimum=0)
    config_lib.check_int(c.dmd.num_pairs, "config.dmd.num_pairs")
    config_lib.check_int(c.dmd.fake_updates, "config.dmd.fake_updates")
    config_lib.check_number(c.dmd.t_min, "config.dmd.t_min", minimum=0, below=1)
    config_lib.check_number(c.dmd.t_max, "config.dmd.t_max", above=c.dmd.t_min, maximum=1)
    config_lib.check_int(c.dmd.pair_nfe, "config.dmd.pair_nfe")  # NaN, 0, -1 named here
    samplers.check_nfe(c.dmd.pair_nfe, "config.dmd.pair_nfe")
  if "flow_map" in students:
    config_lib.check_bool(c.flow_map.from_teacher, "config.flow_map.from_teacher")
    config_lib.check_choice(
      c.flow_map.objective, "config.flow_map.objective", flow_map_lib.OBJECTIVES
    )
    config_lib.check_choice(c.flow_map.diagonal, "config.flow_map.diagonal", flow_map_lib.DIAGONALS)
    config_lib.check_choice(c.flow_map.target, "config.flow_map.target", flow_map_lib.TARGETS)
  if c.teacher_workdir:
    phase = os.path.join(str(c.teacher_workdir), "teacher")
    if not loop.finished(phase, int(c.num_steps)):
      raise ValueError(
        f"config.teacher_workdir={str(c.teacher_workdir)!r} holds no finished teacher "
        f"(no checkpoint at step config.num_steps={int(c.num_steps)} in {phase}/checkpoints): "
        "a student needs a finished teacher"
      )


class _Job:
  """What every phase shares: config, mesh, data pool, model, preemption flag."""

  def __init__(self, config, workdir: str, preemption: PreemptionFlag):
    self.c, self.workdir, self.preemption = config, workdir, preemption
    self.mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(int(config.batch_size), self.mesh, "config.batch_size")
    self.seed = int(config.seed)
    name = config.dataset.name
    if name == "digits":
      self.pool = 2.0 * toy2d.digits_images() - 1.0
    else:
      self.pool = toy2d.sample(name, int(config.num_train), seed=self.seed)
    self.shape = self.pool.shape[1:]
    self.model = models.from_config(config.model)
    self.sigma_data = float(np.std(self.pool))

  def batch(self, phase: int, step: int) -> dict:
    rng = np.random.default_rng([self.seed, phase, step])
    idx = rng.integers(0, len(self.pool), int(self.c.batch_size))
    return mesh_lib.global_batch({"x1": self.pool[idx]}, self.mesh)

  def init_params(self, tag: int, two_times: bool = False):
    x = jnp.zeros((1,) + self.shape, jnp.float32)
    t = jnp.zeros((1,), jnp.float32)
    args = (x, t, t) if two_times else (x, t)
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), tag)
    return self.model.init(key, *args)["params"]

  def state(self, params, tx):
    params = jax.tree.map(jnp.array, params)  # a copy: the step donates it
    return TrainState(jnp.int32(0), params, tx.init(params), {})

  def place(self, tree):
    sh = sharding_lib.tree_shardings(tree, self.mesh)
    return jax.device_put(tree, sh), sh

  def train(self, name: str, phase: int, state, step, total: int, teacher=None, batch_fn=None):
    """Runs (or resumes, or reloads) one phase; returns its final state."""
    phase_dir = os.path.join(self.workdir, name)
    state, shardings = self.place(state)
    teacher_sh = None
    if teacher is not None:
      teacher, teacher_sh = self.place(teacher)
    jitted = steps.jit_step(step, self.mesh, shardings, teacher_sh)
    batch_fn = batch_fn or (lambda k: self.batch(phase, k))
    with workdir_lib.open_workdir(phase_dir, self.c, locked=False):
      ckpt = Checkpointer(
        os.path.join(phase_dir, loop.CHECKPOINT_DIR), keep=int(self.c.keep_checkpoints)
      )
      try:
        start, state = loop.resume(ckpt, state, name, shardings)
        if start >= total:
          return state
        log = MetricsWriter(phase_dir, resume_step=start, total_steps=total, name=name)
        began = time.time()

        def step_fn(state, k):
          b = batch_fn(k)
          return jitted(state, b) if teacher is None else jitted(state, b, teacher)

        try:
          state = loop.run_steps(
            state,
            step_fn,
            start=start,
            total=total,
            every=loop.Every.of(self.c),
            name=name,
            checkpointer=ckpt,
            metrics=log,
            preemption=self.preemption,
          )
        except FloatingPointError as e:
          raise NonFiniteLoss(str(e)) from e
        finally:
          _add_time(phase_dir, time.time() - began)
          log.close()
        ckpt.wait()
      finally:
        ckpt.close()
    return state


def _add_time(phase_dir: str, seconds: float) -> None:
  path = os.path.join(phase_dir, _TIMING)
  total = _read_time(phase_dir) + seconds
  if jax.process_index() == 0:
    workdir_lib.atomic_write(path, json.dumps({"wall_time_s": total}) + "\n")


def _read_time(phase_dir: str) -> float:
  path = os.path.join(phase_dir, _TIMING)
  if not os.path.exists(path):
    return 0.0
  with open(path) as f:
    return float(json.load(f)["wall_time_s"])


def _last_loss(phase_dir: str) -> float | None:
  records = workdir_lib.read_metrics(phase_dir) if os.path.isdir(phase_dir) else []
  losses = [r["train_loss"] for r in records if "train_loss" in r]
  return losses[-1] if losses else None


def _optimizer(block, num_steps: int, path: str):
  return config_lib.Optimizer.from_config(block, path).make(num_steps)


def _teacher(job: _Job):
  c = job.c
  total = int(c.num_steps)
  tx = _optimizer(c.teacher.optimizer, total, "config.teacher.optimizer")
  init = job.state(job.init_params(0), tx)
  if c.teacher_workdir:  # read-only: restore the finished teacher of another run
    phase = os.path.join(str(c.teacher_workdir), "teacher", loop.CHECKPOINT_DIR)
    ckpt = Checkpointer(phase, keep=int(c.keep_checkpoints))
    try:
      _, state = ckpt.restore_latest(init)
    finally:
      ckpt.close()
    return state.params, ["teacher"]
  step = steps.flow_matching_step(job.model, tx, seed=job.seed)
  return job.train("teacher", 0, init, step, total).params, ["teacher"]


def _progressive(job: _Job, teacher) -> dict[int, Any]:
  p = job.c.progressive
  per_round, params, out = int(p.steps_per_round), teacher, {}
  for r, student_steps in enumerate(progressive.round_steps(int(p.teacher_steps), int(p.rounds))):
    tx = _optimizer(p.optimizer, per_round, "config.progressive.optimizer")
    step = steps.progressive_step(job.model, tx, seed=job.seed, student_steps=student_steps)
    state = job.state(params, tx)
    state = job.train(f"progressive/round{r + 1}", 10 + r, state, step, per_round, teacher=params)
    params = out[student_steps] = state.params
  return out


def _consistency(job: _Job, teacher):
  k = job.c.consistency
  total = int(k.num_steps)
  tx = _optimizer(k.optimizer, total, "config.consistency.optimizer")
  step = steps.consistency_step(
    job.model,
    tx,
    seed=job.seed,
    mode=k.mode,
    sigma_data=job.sigma_data,
    teacher=job.model,
    sigma_min=float(k.sigma_min),
    sigma_max=float(k.sigma_max),
    s0=int(k.s0),
    s1=int(k.s1),
    total_steps=total,
    solver=k.solver,
    ema_decay=float(k.ema_decay),
    parametrization=k.parametrization,
  )
  # 'flow': the network is a velocity network like the teacher's and starts as the teacher
  init = teacher if k.parametrization == "flow" else job.init_params(2)
  state = job.state(init, tx)
  if float(k.ema_decay):  # the EMA target starts as the online network
    state = {"online": state, "target": jax.tree.map(jnp.array, state.params)}
  with_teacher = k.mode == "distillation"
  state = job.train("consistency", 2, state, step, total, teacher=teacher if with_teacher else None)
  return (state["online"] if float(k.ema_decay) else state).params


def _dmd(job: _Job, teacher):
  d = job.c.dmd
  total = int(d.num_steps)
  tx_gen = _optimizer(d.optimizer, total, "config.dmd.optimizer")
  fake_updates = int(d.fake_updates)
  # the fake score's schedule runs over all of its updates (fake_updates per generator step)
  tx_fake = _optimizer(d.fake_optimizer, total * fake_updates, "config.dmd.fake_optimizer")
  # the regression pairs: noise and the teacher's deterministic ODE output (Heun, pair_nfe)
  velocity = steps.velocity_fn(job.model, teacher)
  z_ref = jax.random.normal(
    jax.random.fold_in(jax.random.PRNGKey(job.seed), 77), (int(d.num_pairs),) + job.shape
  )
  y_ref = jax.jit(lambda z: samplers.heun(velocity, z, nfe=int(d.pair_nfe), unroll=False))(z_ref)
  z_ref, y_ref = np.asarray(z_ref), np.asarray(y_ref)

  def batch_fn(k):
    rng = np.random.default_rng([job.seed, 3, k])
    idx = rng.integers(0, len(z_ref), int(job.c.batch_size))
    return mesh_lib.global_batch({"z_ref": z_ref[idx], "y_ref": y_ref[idx]}, job.mesh)

  step = steps.dmd_step(
    job.model,
    tx_gen,
    tx_fake,
    seed=job.seed,
    reg_weight=float(d.reg_weight),
    t_min=float(d.t_min),
    t_max=float(d.t_max),
    fake_updates=fake_updates,
  )
  state = {"gen": job.state(teacher, tx_gen), "fake": job.state(teacher, tx_fake)}
  return job.train("dmd", 3, state, step, total, teacher=teacher, batch_fn=batch_fn)["gen"].params


def two_time_from_teacher(fresh, teacher):
  """Two-time parameters (``model(x, s, t)``) that start as the one-time ``teacher``:
  every array of the same shape is copied, and the first time-embedding kernel, which reads
  ``[emb(s), emb(t)]`` (``2d`` rows) where the teacher reads ``emb(t)`` (``d`` rows), gets
  the teacher's rows for ``s`` and zeros for ``t``; so ``v(x, s, t) = v_teacher(x, s)``
  and the flow map starts as the teacher's Euler step ``X_{s,t}(x) = x + (t - s)
  v_teacher(x, s)``."""

  def one(path, a, b):
    if a.shape == b.shape:
      return jnp.asarray(b, a.dtype)
    if a.ndim == 2 and a.shape[1] == b.shape[1] and a.shape[0] == 2 * b.shape[0]:
      return jnp.concatenate([jnp.asarray(b, a.dtype), jnp.zeros_like(b, a.dtype)], axis=0)
    name = jax.tree_util.keystr(path)
    raise ValueError(f"flow_map.from_teacher: no teacher array for {name} {a.shape}")

  return jax.tree_util.tree_map_with_path(one, fresh, teacher)


def _flow_map(job: _Job, teacher):
  f = job.c.flow_map
  total = int(f.num_steps)
  tx = _optimizer(f.optimizer, total, "config.flow_map.optimizer")
  step = steps.flow_map_step(
    job.model, tx, seed=job.seed, objective=f.objective, diagonal=f.diagonal, target=f.target
  )
  init = job.init_params(4, two_times=True)
  if f.from_teacher:
    init = two_time_from_teacher(init, teacher)
  state = job.state(init, tx)
  uses_teacher = f.diagonal == "teacher" or f.target == "teacher"
  return job.train(
    "flow_map", 4, state, step, total, teacher=teacher if uses_teacher else None
  ).params


def _samplers(job: _Job, trained: dict) -> dict[tuple[str, int], Any]:
  """``{(name, nfe): sample(z) -> x}`` for every sample set the job writes."""
  c, model = job.c, job.model
  out = {}
  v = steps.velocity_fn(model, trained["teacher"])
  for nfe in _nfe_list(c.sample.teacher_nfe, "config.sample.teacher_nfe"):
    out["teacher", nfe] = lambda z, nfe=nfe: samplers.solve(
      v, z, nfe=nfe, method=c.sample.method, unroll=False
    )
  student_nfe = _nfe_list(c.sample.student_nfe, "config.sample.student_nfe")
  if "progressive" in trained:
    for nfe in student_nfe:
      if nfe in trained["progressive"]:
        vp = steps.velocity_fn(model, trained["progressive"][nfe])
        out["progressive", nfe] = lambda z, vp=vp, nfe=nfe: samplers.euler(
          vp, z, nfe=nfe, unroll=False
        )
  if "consistency" in trained:
    k = c.consistency
    sample = steps.consistency_sampler(
      model,
      sigma_data=job.sigma_data,
      sigma_min=float(k.sigma_min),
      sigma_max=float(k.sigma_max),
      parametrization=k.parametrization,
    )
    key = jax.random.fold_in(jax.random.PRNGKey(job.seed), 99)
    for nfe in student_nfe:
      out["consistency", nfe] = lambda z, nfe=nfe: sample(trained["consistency"], z, key, nfe)
  if "dmd" in trained:
    out["dmd", 1] = lambda z: steps.generator(model, trained["dmd"], z)
  if "flow_map" in trained:
    vf = lambda x, s, t: model.apply({"params": trained["flow_map"]}, x, s, t)  # noqa: E731
    for nfe in student_nfe:
      out["flow_map", nfe] = lambda z, nfe=nfe: flow_map_lib.sample(vf, z, nfe=nfe)
  return out


def _evaluate(job: _Job, x: np.ndarray, reference: np.ndarray) -> dict:
  if job.c.dataset.name == "digits":
    return {"fid": metrics_lib.digits_fid(x, reference)}
  out = {"energy_distance": metrics_lib.energy_distance(x, reference)}
  if job.c.dataset.name == "eight_gaussians":
    within, share = metrics_lib.mode_coverage(x, toy2d.MODES)
    out.update({"within_0.5": within, "min_mode_share": float(share.min())})
  return out


def _plot(job: _Job, name: str, sets: dict[int, np.ndarray], path: str) -> None:
  plt = figures.pyplot()
  nfes = sorted(sets)
  digits = job.c.dataset.name == "digits"
  fig, axes = plt.subplots(1, len(nfes), figsize=(2.6 * len(nfes), 2.8), squeeze=False)
  for ax, nfe in zip(axes[0], nfes):
    x = sets[nfe]
    if digits:
      grid = x[:64].reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64)
      ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
      ax.axis("off")
    else:
      ax.scatter(x[:2048, 0], x[:2048, 1], s=1, alpha=0.5)
      ax.set_xlim(-3, 3) if job.c.dataset.name == "eight_gaussians" else ax.set_xlim(-1.5, 2.5)
      ax.set_ylim(-3, 3) if job.c.dataset.name == "eight_gaussians" else ax.set_ylim(-1, 1.5)
      ax.set_aspect("equal")
    ax.set_title(f"{name} NFE {nfe}", fontsize=9)
  fig.tight_layout()
  figures.save_figure(fig, path)


def _sample_all(job: _Job, trained: dict) -> dict:
  c = job.c
  n = int(c.sample.num_samples)
  digits = c.dataset.name == "digits"
  if digits:
    reference = toy2d.digits_images()
  else:
    reference = toy2d.sample(c.dataset.name, n, seed=job.seed + 1_000_003)
  z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(job.seed), 1234), (n,) + job.shape)
  sample_dir = os.path.join(job.workdir, "samples")
  os.makedirs(sample_dir, exist_ok=True)
  summary, by_name = {}, {}
  for (name, nfe), fn in _samplers(job, trained).items():
    x = np.asarray(jax.jit(fn)(z), np.float32)
    if digits:
      x = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    if not np.all(np.isfinite(x)):
      raise NonFiniteLoss(f"{name} at {nfe} NFE produced non-finite samples")
    if jax.process_index() == 0:
      np.save(os.path.join(sample_dir, f"{name}_nfe{nfe}.npy"), x)
    by_name.setdefault(name, {})[nfe] = x
    key = f"{name}_nfe{nfe}"
    summary[f"{key}/nfe"] = nfe
    figures_of = _evaluate(job, x, reference)
    for metric, value in figures_of.items():
      summary[f"{key}/{metric}"] = value
    loop.say(f"[diffusion] {key}: " + ", ".join(f"{k}={v:.5g}" for k, v in figures_of.items()))
  if jax.process_index() == 0:
    for name, sets in by_name.items():
      _plot(job, name, sets, os.path.join(sample_dir, f"{name}.png"))
  return summary


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the diffusion job (see the module); returns the flat summary."""
  validate(config)
  began = time.time()
  with workdir_lib.open_workdir(workdir, config) as wd, PreemptionFlag() as preemption:
    job = _Job(config, wd.path, preemption)
    teacher, _ = _teacher(job)
    trained = {"teacher": teacher}
    for name in _students(config):
      if name == "progressive":
        trained[name] = _progressive(job, teacher)
      elif name == "consistency":
        trained[name] = _consistency(job, teacher)
      elif name == "dmd":
        trained[name] = _dmd(job, teacher)
      else:
        trained[name] = _flow_map(job, teacher)
    summary = _sample_all(job, trained)
    phases = ["teacher"] + [
      f"progressive/round{r + 1}" if s == "progressive" else s
      for s in _students(config)
      for r in (range(int(config.progressive.rounds)) if s == "progressive" else [0])
    ]
    if config.teacher_workdir:
      phases = phases[1:]
    for phase in phases:
      phase_dir = os.path.join(wd.path, phase)
      summary[f"{phase}/wall_time_s"] = _read_time(phase_dir)
      summary[f"{phase}/train_loss"] = _last_loss(phase_dir)
    summary["wall_time_s"] = time.time() - began
    summary["dataset"] = str(config.dataset.name)
    return loop.write_summary(wd.path, summary)
