r"""Deterministic ODE samplers with an exact number of function evaluations (NFE).

Each sampler integrates :math:`\dot x = v(x, t)` from :math:`t = 0` (noise ``x0``) to
:math:`t = 1` on the uniform grid :math:`t_k = k/n`. The loops are Python loops over a
static number of steps, so under ``jax.jit`` they unroll and the NFE is exactly the
number of calls of ``velocity`` (a test counts them):

* :func:`euler` with ``nfe = n``: :math:`x_{k+1} = x_k + h\,v(x_k, t_k)`, ``n`` steps of
  size :math:`h = 1/n`; **n NFE**.
* :func:`heun` with ``nfe = k``: Heun's second-order method (the trapezoidal predictor-
  corrector of Karras et al. (2022), Algorithm 1) on :math:`\lceil k/2\rceil` steps. Each
  step costs 2 evaluations, except that for odd ``k`` the last step is a plain Euler step
  (as EDM's last step to :math:`\sigma = 0`): **2n - 1 NFE for n steps when k is odd, 2n
  when k is even**, so every ``k >= 1`` is possible (``k = 1`` is one Euler step).

:func:`solve` dispatches by name; :func:`check_nfe` is the one NFE validation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["METHODS", "check_nfe", "euler", "heun", "solve", "time_grid"]

METHODS = ("euler", "heun")


def check_nfe(nfe, name: str = "nfe") -> int:
  """``nfe`` as an int; ValueError naming ``name`` unless it is an integer >= 1."""
  if isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1:
    raise ValueError(
      f"{name} (number of function evaluations) must be an integer >= 1, got {nfe!r}"
    )
  return int(nfe)


def time_grid(steps: int, t0: float = 0.0, t1: float = 1.0):
  """``steps + 1`` uniform times from ``t0`` to ``t1`` (float32)."""
  return jnp.linspace(t0, t1, steps + 1, dtype=jnp.float32)


def _full(t, x):
  return jnp.full((x.shape[0],), t, x.dtype)


def euler(
  velocity: Callable, x0, *, nfe: int, t0: float = 0.0, t1: float = 1.0, unroll: bool = True
):
  """Euler's method in ``nfe`` uniform steps from ``t0`` to ``t1``; ``velocity(x, t[B])``.

  ``unroll=False`` runs the same steps in a ``jax.lax.fori_loop`` (one traced copy of the
  model: far faster to compile for a large network at many NFE; same result)."""
  nfe = check_nfe(nfe)
  ts = time_grid(nfe, t0, t1)
  if not unroll:
    body = lambda k, x: x + (ts[k + 1] - ts[k]) * velocity(x, _full(ts[k], x))  # noqa: E731
    return jax.lax.fori_loop(0, nfe, body, x0)
  x = x0
  for k in range(nfe):
    x = x + (ts[k + 1] - ts[k]) * velocity(x, _full(ts[k], x))
  return x


def _heun_step(velocity, x, t, t_next):
  h = t_next - t
  d = velocity(x, _full(t, x))
  d2 = velocity(x + h * d, _full(t_next, x))
  return x + h * 0.5 * (d + d2)


def heun(
  velocity: Callable, x0, *, nfe: int, t0: float = 0.0, t1: float = 1.0, unroll: bool = True
):
  """Heun's method with exactly ``nfe`` evaluations (see the module: ceil(nfe/2) steps);
  ``unroll=False`` as in :func:`euler`."""
  nfe = check_nfe(nfe)
  steps = -(-nfe // 2)
  ts = time_grid(steps, t0, t1)
  full = steps - (nfe % 2)  # steps with two evaluations
  if unroll:
    x = x0
    for k in range(full):
      x = _heun_step(velocity, x, ts[k], ts[k + 1])
  else:
    body = lambda k, x: _heun_step(velocity, x, ts[k], ts[k + 1])  # noqa: E731
    x = jax.lax.fori_loop(0, full, body, x0)
  if nfe % 2:  # the last step is a plain Euler step
    x = x + (ts[steps] - ts[steps - 1]) * velocity(x, _full(ts[steps - 1], x))
  return x


def solve(velocity: Callable, x0, *, nfe: int, method: str = "euler", **kwargs):
  """``euler`` or ``heun`` by name; ValueError for another ``method``."""
  if method not in METHODS:
    raise ValueError(f"sampler method must be one of {list(METHODS)}, got {method!r}")
  return (euler if method == "euler" else heun)(velocity, x0, nfe=nfe, **kwargs)
