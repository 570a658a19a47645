r"""Jitted, sharded train steps of the flow teacher and its few-step students.

Every factory returns a pure ``step(state, batch[, teacher_params]) -> (state, metrics)``
(``state`` a :class:`kdjax.train.state.TrainState`, or for DMD a dict of two), to be
compiled by :func:`jit_step` (``jax.jit`` with NamedShardings on the ``'data'`` mesh and
the old state donated, as :func:`kdjax.train.steps.jit_train_step`). ``batch['x1']`` is a
global batch of data ``[B, ...]`` split over ``'data'``; the noise, times and noise-level
indices of step ``k`` come from ``fold_in(fold_in(PRNGKey(seed), tag), k)``, so a step
depends only on the state, the batch and the seed (resumption is exact). The teacher's
parameters are an explicit frozen argument. ``model`` is a flax module called as
``model.apply({'params': p}, x, t[, s])`` (:mod:`kdjax.models.diffusion`).

The losses are the pure functions of :mod:`kdjax.diffusion` (each documented with its
formula and paper); metrics are the batch means ``train_loss`` (and per-part losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdjax.diffusion import consistency, dmd, flow, flow_map, progressive
from kdjax.train.state import TrainState
from kdjax.train.steps import jit_train_step

__all__ = [
  "velocity_fn",
  "flow_matching_step",
  "progressive_step",
  "consistency_step",
  "dmd_step",
  "flow_map_step",
  "consistency_sampler",
  "generator",
  "jit_step",
  "CONSISTENCY_MODES",
  "PARAMETRIZATIONS",
]

CONSISTENCY_MODES = ("distillation", "training")
PARAMETRIZATIONS = ("edm", "flow")


def velocity_fn(model, params) -> Callable:
  """``v(x, t) = model.apply({'params': params}, x, t)``."""
  return lambda x, t, *s: model.apply({"params": params}, x, t, *s)


def _keys(seed: int, tag: int, step) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), tag), step)


def _apply_grads(state: TrainState, tx, grads) -> TrainState:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )


def flow_matching_step(model, tx, *, seed: int) -> Callable:
  """The teacher: conditional flow matching with ``t ~ U[0, 1]``
  (:func:`kdjax.diffusion.flow.flow_matching_loss`)."""

  def step(state: TrainState, batch):
    x1 = batch["x1"]
    r0, r1 = jax.random.split(_keys(seed, 1, state.step))
    x0 = jax.random.normal(r0, x1.shape, x1.dtype)
    t = jax.random.uniform(r1, (x1.shape[0],), x1.dtype)

    def loss_fn(params):
      v = model.apply({"params": params}, flow.interpolate(x0, x1, t), t)
      return jnp.mean(flow.flow_matching_loss(v, x0, x1))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return _apply_grads(state, tx, grads), {"train_loss": loss}

  return step


def progressive_step(model, tx, *, seed: int, student_steps: int) -> Callable:
  """One round of progressive distillation into a ``student_steps``-step Euler sampler;
  the step takes the teacher's (previous round's) parameters."""
  h = 1.0 / (2 * student_steps)

  def step(state: TrainState, batch, teacher_params):
    x1 = batch["x1"]
    r0, r1 = jax.random.split(_keys(seed, 2, state.step))
    x0 = jax.random.normal(r0, x1.shape, x1.dtype)
    t = progressive.student_times(student_steps, r1, x1.shape[0], x1.dtype)
    z_t = flow.interpolate(x0, x1, t)
    target = progressive.progressive_target(velocity_fn(model, teacher_params), z_t, t, h=h)

    def loss_fn(params):
      v = model.apply({"params": params}, z_t, t)
      return jnp.mean(progressive.progressive_loss(v, target, t))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return _apply_grads(state, tx, grads), {"train_loss": loss}

  return step


def consistency_step(
  model,
  tx,
  *,
  seed: int,
  mode: str,
  sigma_data: float,
  teacher=None,
  sigma_min: float = 0.002,
  sigma_max: float = 80.0,
  rho: float = 7.0,
  s0: int = 10,
  s1: int = 1280,
  total_steps: int = 1,
  huber_c: float | None = None,
  solver: str = "heun",
  ema_decay: float = 0.0,
  parametrization: str = "edm",
) -> Callable:
  """Consistency distillation (``mode='distillation'``: the step takes the flow
  ``teacher``'s parameters and makes one ``solver`` step of its ODE) or consistency
  training (``'training'``, no teacher). iCT's curriculum ``N(k)`` from ``s0`` to ``s1``
  over ``total_steps`` (``s0 == s1`` fixes ``N = s1 + 1``), lognormal pair sampling,
  pseudo-Huber ``c`` (default ``0.00054 sqrt(d)``); the network ``model`` reads
  ``(c_in x, c_noise)`` (``parametrization='edm'``, :func:`consistency.consistency_function`)
  or is a flow velocity network ``(x_t, t)`` like the teacher (``'flow'``,
  :func:`consistency.flow_consistency_function`; the job then starts it from the teacher).

  The target network ``theta^-`` is ``sg(theta)`` when ``ema_decay == 0`` (iCT), and
  otherwise the exponential moving average of Song et al. (2023), Algorithm 2:
  ``theta^- <- sg(mu theta^- + (1 - mu) theta)`` after each update, with ``mu =
  ema_decay`` in [0, 1); then the state is ``{'online': TrainState, 'target': params}``
  (the target starts as the online parameters)."""
  if mode not in CONSISTENCY_MODES:
    raise ValueError(f"consistency mode must be one of {list(CONSISTENCY_MODES)}, got {mode!r}")
  if mode == "distillation" and teacher is None:
    raise ValueError("consistency distillation needs the flow teacher module (teacher=...)")
  if not 1 <= s0 <= s1:
    raise ValueError(f"consistency needs 1 <= s0 <= s1, got s0={s0}, s1={s1}")
  if parametrization not in PARAMETRIZATIONS:
    raise ValueError(
      f"consistency parametrization must be one of {list(PARAMETRIZATIONS)}, "
      f"got {parametrization!r}"
    )
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"consistency ema_decay must be in [0, 1), got {ema_decay!r}")
  k_prime = max(1, int(total_steps // (math.log2(s1 // s0) + 1)))
  kw = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)

  def f_apply(params):
    return _consistency_fn(model, params, parametrization, sigma_data, sigma_min)

  def step(full_state, batch, teacher_params=None):
    if ema_decay:
      state, target_params = full_state["online"], full_state["target"]
    else:
      state, target_params = full_state, full_state.params
    x1 = batch["x1"]
    r0, r1 = jax.random.split(_keys(seed, 3, state.step))
    z = jax.random.normal(r0, x1.shape, x1.dtype)
    num_scales = jnp.minimum(s0 * 2 ** (state.step // k_prime), s1) + 1
    n = consistency.sample_pair_indices(r1, x1.shape[0], num_scales, max_scales=s1 + 1, **kw)
    sig_n = consistency.karras_sigma(n, num_scales, **kw).astype(x1.dtype)
    sig_next = consistency.karras_sigma(n + 1, num_scales, **kw).astype(x1.dtype)
    x_next = x1 + flow.bcast(sig_next, x1) * z
    if mode == "distillation":
      denoiser = consistency.teacher_denoiser(velocity_fn(teacher, teacher_params))
      x_n = consistency.teacher_ode_step(denoiser, x_next, sig_next, sig_n, method=solver)
    else:
      x_n = x1 + flow.bcast(sig_n, x1) * z
    c = huber_c if huber_c is not None else 0.00054 * math.sqrt(math.prod(x1.shape[1:]))
    f_target = f_apply(jax.lax.stop_gradient(target_params))(x_n, sig_n)

    def loss_fn(params):
      f_online = f_apply(params)(x_next, sig_next)
      return jnp.mean(consistency.consistency_loss(f_online, f_target, sig_n, sig_next, c=c))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = _apply_grads(state, tx, grads)
    metrics = {"train_loss": loss, "num_scales": num_scales}
    if not ema_decay:
      return state, metrics
    target = jax.tree.map(
      lambda a, b: ema_decay * a + (1.0 - ema_decay) * b, target_params, state.params
    )
    return {"online": state, "target": jax.lax.stop_gradient(target)}, metrics

  if mode == "training":
    return lambda state, batch: step(state, batch)
  return step


def _consistency_fn(model, params, parametrization, sigma_data, sigma_min) -> Callable:
  """``f(x, sigma)`` of the network ``model`` with ``params`` in ``parametrization``."""
  net = lambda x, c: model.apply({"params": params}, x, c)  # noqa: E731
  if parametrization == "flow":
    return lambda x, sigma: consistency.flow_consistency_function(
      net, x, sigma, sigma_min=sigma_min
    )
  return lambda x, sigma: consistency.consistency_function(
    net, x, sigma, sigma_data=sigma_data, sigma_min=sigma_min
  )


def consistency_sampler(
  model,
  *,
  sigma_data: float,
  sigma_min: float = 0.002,
  sigma_max: float = 80.0,
  rho: float = 7.0,
  parametrization: str = "edm",
) -> Callable:
  """``sample(params, z, rng, nfe)``: multistep consistency sampling of the network."""

  def sample(params, z, rng, nfe: int):
    f = _consistency_fn(model, params, parametrization, sigma_data, sigma_min)
    return consistency.sample(f, z, rng, nfe=nfe, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)

  return sample


def generator(model, params, z):
  """DMD's one-step generator :math:`G(z) = z + v(z, 0)`: one Euler step of the flow from
  ``t = 0`` with the teacher's architecture (so it starts as the teacher's 1-NFE sampler)."""
  t = jnp.zeros((z.shape[0],), z.dtype)
  return z + model.apply({"params": params}, z, t)


def dmd_step(
  model,
  tx_gen,
  tx_fake,
  *,
  seed: int,
  reg_weight: float = 0.25,
  t_min: float = 0.02,
  t_max: float = 0.98,
  fake_updates: int = 1,
) -> Callable:
  """One DMD update of the generator (distribution-matching gradient at flow times ``t ~
  U[t_min, t_max]`` + ``reg_weight`` x regression on ``batch['z_ref'], batch['y_ref']``),
  then ``fake_updates`` flow-matching updates of the fake denoiser, each on fresh samples of
  the new generator (DMD2's two time-scale update rule, Yin et al. 2024b, uses 5). ``state
  = {'gen': TrainState, 'fake': TrainState}``; the step takes the teacher's parameters (same
  architecture as both)."""
  if int(fake_updates) < 1:
    raise ValueError(f"dmd fake_updates must be an integer >= 1, got {fake_updates!r}")
  if not 0.0 <= t_min < t_max <= 1.0:
    raise ValueError(f"dmd times need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")

  def step(state, batch, teacher_params):
    gen, fake = state["gen"], state["fake"]
    z_ref, y_ref = batch["z_ref"], batch["y_ref"]
    shape = z_ref.shape
    keys = jax.random.split(_keys(seed, 4, gen.step), 5)
    z = jax.random.normal(keys[0], shape, z_ref.dtype)
    noise = jax.random.normal(keys[1], shape, z_ref.dtype)
    t = jax.random.uniform(keys[2], (shape[0],), z_ref.dtype, t_min, t_max)

    def gen_loss(params):
      x = generator(model, params, z)
      x_t = flow.interpolate(noise, x, t)
      x_t_sg = jax.lax.stop_gradient(x_t)
      mu_real = flow.denoise(x_t_sg, model.apply({"params": teacher_params}, x_t_sg, t), t)
      mu_fake = flow.denoise(x_t_sg, model.apply({"params": fake.params}, x_t_sg, t), t)
      dm = jnp.mean(dmd.distribution_matching_loss(x, mu_real, mu_fake))
      reg = jnp.mean(dmd.regression_loss(generator(model, params, z_ref), y_ref))
      return dm + reg_weight * reg, (dm, reg)

    (loss, (dm, reg)), grads = jax.value_and_grad(gen_loss, has_aux=True)(gen.params)
    gen = _apply_grads(gen, tx_gen, grads)

    def fake_loss(params, x0, x1, tf):
      v = model.apply({"params": params}, flow.interpolate(x0, x1, tf), tf)
      return jnp.mean(flow.flow_matching_loss(v, x0, x1))

    for i in range(int(fake_updates)):
      # the first update sees the generator's batch z; later ones fresh noise of their own
      k0, k1 = keys[3], keys[4]
      zi = z
      if i:
        k0, k1, k2 = jax.random.split(jax.random.fold_in(keys[4], i), 3)
        zi = jax.random.normal(k2, shape, z_ref.dtype)
      x0 = jax.random.normal(k0, shape, z_ref.dtype)
      tf = jax.random.uniform(k1, (shape[0],), z_ref.dtype)
      x1 = jax.lax.stop_gradient(generator(model, gen.params, zi))
      floss, fgrads = jax.value_and_grad(fake_loss)(fake.params, x0, x1, tf)
      fake = _apply_grads(fake, tx_fake, fgrads)
    metrics = {"train_loss": loss, "dm_loss": dm, "regression_loss": reg, "fake_loss": floss}
    return {"gen": gen, "fake": fake}, metrics

  return step


def flow_map_step(
  model,
  tx,
  *,
  seed: int,
  objective: str = "lagrangian",
  diagonal: str = "data",
  target: str = "self",
) -> Callable:
  """Flow-map self-distillation: diagonal flow matching at ``t ~ U[0,1]`` plus the
  ``objective`` ('lagrangian' or 'eulerian') at ``s <= t`` (two sorted uniforms) on
  :math:`I_s`; ``model`` takes two times ``(x, s, t)``. ``diagonal='teacher'`` regresses
  the diagonal onto the frozen teacher's velocity instead of ``x1 - x0``, ``target='teacher'``
  makes the teacher's velocity the off-diagonal target (Boffi et al. 2024's map distillation,
  :mod:`kdjax.diffusion.flow_map`); with either, the step takes the teacher's (one-time)
  parameters as its third argument."""
  if objective not in flow_map.OBJECTIVES:
    raise ValueError(
      f"flow_map objective must be one of {list(flow_map.OBJECTIVES)}, got {objective!r}"
    )
  if diagonal not in flow_map.DIAGONALS:
    raise ValueError(
      f"flow_map diagonal must be one of {list(flow_map.DIAGONALS)}, got {diagonal!r}"
    )
  if target not in flow_map.TARGETS:
    raise ValueError(f"flow_map target must be one of {list(flow_map.TARGETS)}, got {target!r}")
  off_diagonal = flow_map.lagrangian_loss if objective == "lagrangian" else flow_map.eulerian_loss

  def step(state: TrainState, batch, teacher_params=None):
    x1 = batch["x1"]
    r0, r1, r2 = jax.random.split(_keys(seed, 5, state.step), 3)
    b = x1.shape[0]
    x0 = jax.random.normal(r0, x1.shape, x1.dtype)
    t_diag = jax.random.uniform(r1, (b,), x1.dtype)
    st = jnp.sort(jax.random.uniform(r2, (b, 2), x1.dtype), axis=-1)
    s, t = st[:, 0], st[:, 1]
    x_s = flow.interpolate(x0, x1, s)
    teacher = None
    if teacher_params is not None:
      teacher = lambda x, tt: model.apply({"params": teacher_params}, x, tt)  # noqa: E731

    def loss_fn(params):
      v = lambda x, ss, tt: model.apply({"params": params}, x, ss, tt)  # noqa: E731
      diag_target = teacher if diagonal == "teacher" else None
      diag = jnp.mean(flow_map.diagonal_loss(v, x0, x1, t_diag, target=diag_target))
      off = jnp.mean(off_diagonal(v, x_s, s, t, target=teacher if target == "teacher" else None))
      return diag + off, (diag, off)

    (loss, (diag, off)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"train_loss": loss, "diagonal_loss": diag, f"{objective}_loss": off}
    return _apply_grads(state, tx, grads), metrics

  return step


def jit_step(
  step: Callable, mesh: Mesh, state_shardings: Any, teacher_shardings: Any = None
) -> Callable:
  """``jax.jit`` with explicit NamedShardings: state in its layout (donated), batch split
  over ``'data'``, metrics replicated (:func:`kdjax.train.steps.jit_train_step`)."""
  return jit_train_step(step, mesh, state_shardings, teacher_shardings)
