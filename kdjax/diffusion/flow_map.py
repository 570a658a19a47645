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

__all__ = ["OBJECTIVES", "flow_map", "diagonal_loss", "lagrangian_loss", "eulerian_loss", "sample"]

OBJECTIVES = ("lagrangian", "eulerian")


def flow_map(v: Callable, x, s, t):
  r""":math:`X_{s,t}(x) = x + (t - s) v(x, s, t)`; ``v(x, s[B], t[B]) -> [B, ...]``."""
  return x + bcast(t - s, x) * v(x, s, t)


def diagonal_loss(v: Callable, x0, x1, t):
  r"""Flow matching on the diagonal: :math:`\mathrm{mean}(v(I_t, t, t) - (x_1 - x_0))^2`."""
  x_t = (1.0 - bcast(t, x1)) * x0 + bcast(t, x1) * x1
  return per_example_mean(jnp.square(v(x_t, t, t) - (x1 - x0)))


def lagrangian_loss(v: Callable, x_s, s, t):
  r"""LSD per example: :math:`\mathrm{mean}(\partial_t X_{s,t}(x_s) - \mathrm{sg}\,v(X_{s,t}
  (x_s), t, t))^2` at points ``x_s`` of the path at time ``s`` (``[B]``)."""
  x_st, dx_dt = jax.jvp(lambda tt: flow_map(v, x_s, s, tt), (t,), (jnp.ones_like(t),))
  target = jax.lax.stop_gradient(v(x_st, t, t))
  return per_example_mean(jnp.square(dx_dt - target))


def eulerian_loss(v: Callable, x_s, s, t):
  r"""ESD per example: :math:`\mathrm{mean}(\partial_s X_{s,t}(x_s) + \mathrm{sg}(\nabla
  X_{s,t}(x_s)\, v(x_s, s, s)))^2`."""
  _, dx_ds = jax.jvp(lambda ss: flow_map(v, x_s, ss, t), (s,), (jnp.ones_like(s),))
  b = jax.lax.stop_gradient(v(x_s, s, s))
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
