r"""Two-time flow maps learned by self-distillation (Boffi, Albergo & Vanden-Eijnden (2025),
"How to build a consistency model: learning flow maps via self-distillation").

The flow map :math:`X_{s,t}` moves a point of the ODE :math:`\dot x = b_t(x)` from time
:math:`s` to :math:`t`. It is parametrised as :math:`X_{s,t}(x) = x + (t - s)\,v_\theta(x,
s, t)` (:func:`flow_map`), so :math:`X_{s,s} = x` and the tangent condition
:math:`\partial_t X_{s,t}|_{t=s} = v_\theta(x, s, s) = b_s(x)` makes the diagonal the
velocity, trained by flow matching on the interpolant :math:`I_t = (1-t)x_0 + t x_1`
(:func:`diagonal_loss`). Off the diagonal, self-distillation uses the model's own velocity
as a stop-gradient teacher:

* Lagrangian (LSD), :func:`lagrangian_loss`:
  :math:`\lVert \partial_t X_{s,t}(I_s) - \mathrm{sg}\,v_\theta(X_{s,t}(I_s), t, t)\rVert^2`;
* Eulerian (ESD), :func:`eulerian_loss`:
  :math:`\lVert \partial_s X_{s,t}(I_s) + \mathrm{sg}\big(\nabla X_{s,t}(I_s)\,
  v_\theta(I_s, s, s)\big)\rVert^2`.

**Distillation of a teacher** (``target``): when the flow :math:`b_t` is that of a pretrained
velocity :math:`b^\mathrm{T}(x, t)` (the teacher), both losses can read it instead of the
model's own diagonal, as in the Lagrangian / Eulerian *map distillation* of Boffi, Albergo &
Vanden-Eijnden (2024), "Flow map matching" (LMD / EMD): the diagonal regresses
:math:`v_\theta(I_t, t, t)` onto :math:`b^\mathrm{T}(I_t, t)` (a deterministic target, no
flow-matching variance; :func:`diagonal_loss` with ``target``), and the Lagrangian target is
:math:`b^\mathrm{T}(X_{s,t}(I_s), t)` (:func:`lagrangian_loss` with ``target``; Eulerian:
:math:`b^\mathrm{T}(I_s, s)` in the transport term).

Time derivatives are forward-mode (``jax.jvp``) through the network. Losses are per
example means over the data dimensions. One-step sampling is :math:`X_{0,1}(x_0)`; ``k``
steps chain :math:`X_{t_i, t_{i+1}}` on a uniform grid (:func:`sample`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kdjax.diffusion.flow import bcast, per_example_mean
from kdjax.diffusion.samplers import check_nfe, time_grid

__all__ = [
  "OBJECTIVES",
  "DIAGONALS",
  "TARGETS",
  "flow_map",
  "diagonal_loss",
  "lagrangian_loss",
  "eulerian_loss",
  "sample",
]

OBJECTIVES = ("lagrangian", "eulerian")
DIAGONALS = ("data", "teacher")  # the diagonal's target: x1 - x0 (flow matching) or the teacher
TARGETS = ("self", "teacher")  # the off-diagonal target: the model's own diagonal or the teacher


def flow_map(v: Callable, x, s, t):
  r""":math:`X_{s,t}(x) = x + (t - s) v(x, s, t)`; ``v(x, s[B], t[B]) -> [B, ...]``."""
  return x + bcast(t - s, x) * v(x, s, t)


def diagonal_loss(v: Callable, x0, x1, t, *, target: Callable | None = None):
  r"""Flow matching on the diagonal: :math:`\mathrm{mean}(v(I_t, t, t) - (x_1 - x_0))^2`;
  with a teacher velocity ``target(x, t[B])``: :math:`\mathrm{mean}(v(I_t, t, t) -
  \mathrm{sg}\,b^\mathrm{T}(I_t, t))^2` (flow map matching's distillation of the diagonal)."""
  x_t = (1.0 - bcast(t, x1)) * x0 + bcast(t, x1) * x1
  y = x1 - x0 if target is None else jax.lax.stop_gradient(target(x_t, t))
  return per_example_mean(jnp.square(v(x_t, t, t) - y))


def lagrangian_loss(v: Callable, x_s, s, t, *, target: Callable | None = None):
  r"""LSD per example: :math:`\mathrm{mean}(\partial_t X_{s,t}(x_s) - \mathrm{sg}\,v(X_{s,t}
  (x_s), t, t))^2` at points ``x_s`` of the path at time ``s`` (``[B]``); with a teacher
  velocity ``target(x, t[B])`` the target is :math:`b^\mathrm{T}(X_{s,t}(x_s), t)` (LMD)."""
  x_st, dx_dt = jax.jvp(lambda tt: flow_map(v, x_s, s, tt), (t,), (jnp.ones_like(t),))
  y = v(x_st, t, t) if target is None else target(x_st, t)
  return per_example_mean(jnp.square(dx_dt - jax.lax.stop_gradient(y)))


def eulerian_loss(v: Callable, x_s, s, t, *, target: Callable | None = None):
  r"""ESD per example: :math:`\mathrm{mean}(\partial_s X_{s,t}(x_s) + \mathrm{sg}(\nabla
  X_{s,t}(x_s)\, v(x_s, s, s)))^2`; with a teacher velocity ``target(x, s[B])`` the
  transported velocity is :math:`b^\mathrm{T}(x_s, s)` (EMD)."""
  _, dx_ds = jax.jvp(lambda ss: flow_map(v, x_s, ss, t), (s,), (jnp.ones_like(s),))
  b = jax.lax.stop_gradient(v(x_s, s, s) if target is None else target(x_s, s))
  _, transport = jax.jvp(lambda xx: flow_map(v, xx, s, t), (x_s,), (b,))
  return per_example_mean(jnp.square(dx_ds + jax.lax.stop_gradient(transport)))


def sample(v: Callable, x0, *, nfe: int):
  """``nfe`` chained jumps :math:`X_{t_k, t_{k+1}}` on the uniform grid from 0 to 1 (NFE = nfe)."""
  nfe = check_nfe(nfe)
  ts = time_grid(nfe)
  x = x0
  for k in range(nfe):
    s = jnp.full((x.shape[0],), ts[k], x.dtype)
    t = jnp.full((x.shape[0],), ts[k + 1], x.dtype)
    x = flow_map(v, x, s, t)
  return x
