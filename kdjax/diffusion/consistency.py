r"""Consistency models: distillation from a teacher's ODE and training without one.

Song, Dhariwal, Chen & Sutskever (2023), "Consistency models" (CD and CT), with the
improved recipe of Song & Dhariwal (2024), "Improved techniques for training consistency
models" (iCT: pseudo-Huber metric, :math:`1/(\sigma_{n+1} - \sigma_n)` weighting,
lognormal noise sampling, discretisation curriculum, no EMA target).

Everything lives in EDM's variance-exploding view of the flow path (see
:mod:`kdjax.diffusion.flow`): :math:`x_\sigma = x_1 + \sigma z`. The consistency function
is :math:`f_\theta(x, \sigma) = c_\mathrm{skip}(\sigma) x + c_\mathrm{out}(\sigma)
F_\theta(c_\mathrm{in}(\sigma) x, c_\mathrm{noise}(\sigma))` (:func:`consistency_function`,
exactly :math:`f(x, \sigma_\mathrm{min}) = x`). Both objectives compare it at adjacent
levels :math:`\sigma_n < \sigma_{n+1}` of the Karras grid, with a stop-gradient target
:math:`\theta^- = \mathrm{sg}(\theta)`:

.. math::
  \mathcal L = \lambda(\sigma_n)\, d\big(f_\theta(x_{\sigma_{n+1}}, \sigma_{n+1}),\
  f_{\theta^-}(\hat x_{\sigma_n}, \sigma_n)\big),\qquad
  \lambda = \frac{1}{\sigma_{n+1} - \sigma_n},\quad d(a, b) = \sqrt{\lVert a-b\rVert^2 +
  c^2} - c,

where :math:`\hat x_{\sigma_n}` is one step of the teacher's ODE
:math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` from :math:`x_{\sigma_{n+1}}` (CD,
:func:`teacher_ode_step`), or :math:`x_1 + \sigma_n z` with the same :math:`z` (CT).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.diffusion.flow import bcast, denoise, edm_preconditioning, t_from_sigma

__all__ = [
  "consistency_function",
  "flow_consistency_function",
  "pseudo_huber",
  "consistency_loss",
  "teacher_denoiser",
  "teacher_ode_step",
  "ict_num_scales",
  "lognormal_index_weights",
  "multistep_sigmas",
]


def consistency_function(network: Callable, x, sigma, *, sigma_data: float, sigma_min: float):
  r""":math:`f(x, \sigma) = c_\mathrm{skip} x + c_\mathrm{out} F(c_\mathrm{in} x,
  c_\mathrm{noise})` with :func:`~kdjax.diffusion.flow.edm_preconditioning`;
  ``network(x_in, c_noise[B]) -> [B, ...]``, ``sigma [B]``."""
  c_skip, c_out, c_in, c_noise = edm_preconditioning(
    sigma, sigma_data=sigma_data, sigma_min=sigma_min
  )
  return bcast(c_skip, x) * x + bcast(c_out, x) * network(bcast(c_in, x) * x, c_noise)


def flow_consistency_function(velocity: Callable, x, sigma, *, sigma_min: float):
  r"""A consistency function read off a flow velocity network (so it can start as the
  teacher, as Song et al. (2023) initialise CD from the diffusion model):

  .. math::
    f(x, \sigma) = x + \frac{\sigma - \sigma_\mathrm{min}}{1 + \sigma}
    \big(v(\tfrac{x}{1 + \sigma}, \tfrac{1}{1 + \sigma}) - x\big),

  the teacher's denoiser :math:`D = x_t + (1 - t) v(x_t, t)` at :math:`t = 1/(1 + \sigma)`,
  :math:`x_t = t x` (:func:`teacher_denoiser`) with :math:`\sigma` replaced by
  :math:`\sigma - \sigma_\mathrm{min}` in the weight, so that :math:`f(x,
  \sigma_\mathrm{min}) = x` exactly; ``velocity(x_t, t[B]) -> [B, ...]``, ``sigma [B]``."""
  t = 1.0 / (1.0 + sigma)
  w = (sigma - sigma_min) / (1.0 + sigma)
  return x + bcast(w, x) * (velocity(bcast(t, x) * x, t) - x)


def pseudo_huber(a, b, *, c: float):
  r"""Per-example :math:`\sqrt{\lVert a - b\rVert^2 + c^2} - c` (Song & Dhariwal (2024),
  eq. (6); they use :math:`c = 0.00054\sqrt d`)."""
  sq = jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)
  return jnp.sqrt(sq + c * c) - c


def consistency_loss(f_online, f_target, sigma_n, sigma_next, *, c: float, where=None):
  r"""Per-example :math:`\lambda(\sigma_n) d(f_\theta, \mathrm{sg}(f_{\theta^-}))` with
  :math:`\lambda = 1/(\sigma_{n+1} - \sigma_n)` and the pseudo-Huber ``d`` (``c > 0``;
  ``c = 0`` is the L2 norm).

  Args:
    f_online: :math:`f_\theta(x_{\sigma_{n+1}}, \sigma_{n+1})`, ``[B, ...]``.
    f_target: :math:`f_{\theta^-}(\hat x_{\sigma_n}, \sigma_n)` (stop-gradient applied here).
    sigma_n, sigma_next: ``[B]`` adjacent noise levels.
    c: the pseudo-Huber constant.
    where: optional boolean ``[B]`` mask.
  """
  d = pseudo_huber(f_online, jax.lax.stop_gradient(f_target), c=c)
  loss = d / (sigma_next - sigma_n)
  return loss if where is None else jnp.where(where, loss, 0.0)


def teacher_denoiser(velocity: Callable) -> Callable:
  r"""The teacher's denoiser :math:`D(x_\sigma, \sigma)` in EDM form from a flow velocity:
  :math:`t = 1/(1+\sigma)`, :math:`x_t = t x_\sigma`, :math:`D = x_t + (1 - t) v(x_t, t)`."""

  def denoiser(x_sigma, sigma):
    t = t_from_sigma(sigma)
    x_t = bcast(t, x_sigma) * x_sigma
    return denoise(x_t, velocity(x_t, t), t)

  return denoiser


def teacher_ode_step(denoiser: Callable, x, sigma_from, sigma_to, *, method: str = "heun"):
  r"""One step of the probability-flow ODE :math:`dx/d\sigma = (x - D(x,\sigma))/\sigma`
  from ``sigma_from`` to ``sigma_to`` (``[B]``): Euler, or Heun (Karras et al. (2022),
  Algorithm 1; the consistency-distillation solver of Song et al. (2023)). No gradient."""
  if method not in ("euler", "heun"):
    raise ValueError(f"teacher_ode_step method must be 'euler' or 'heun', got {method!r}")
  h = bcast(sigma_to - sigma_from, x)
  d = (x - denoiser(x, sigma_from)) / bcast(sigma_from, x)
  x_next = x + h * d
  if method == "heun":
    d2 = (x_next - denoiser(x_next, sigma_to)) / bcast(sigma_to, x)
    x_next = x + h * 0.5 * (d + d2)
  return jax.lax.stop_gradient(x_next)


def ict_num_scales(step: int, total_steps: int, *, s0: int = 10, s1: int = 1280) -> int:
  r"""iCT's discretisation curriculum (Song & Dhariwal (2024), eq. (7)):
  :math:`N(k) = \min(s_0 2^{\lfloor k/K'\rfloor}, s_1) + 1`,
  :math:`K' = \lfloor K / (\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor`."""
  k_prime = max(1, int(total_steps // (np.log2(s1 // s0) + 1)))
  return int(min(s0 * 2 ** (step // k_prime), s1) + 1)


def lognormal_index_weights(sigmas, *, p_mean: float = -1.1, p_std: float = 2.0):
  r"""iCT's probabilities of the pairs :math:`(\sigma_n, \sigma_{n+1})`, ``[N-1]``:
  :math:`p(n) \propto \mathrm{erf}(\frac{\ln\sigma_{n+1} - P_\mathrm{mean}}{\sqrt2
  P_\mathrm{std}}) - \mathrm{erf}(\frac{\ln\sigma_n - P_\mathrm{mean}}{\sqrt2 P_\mathrm{std}})`."""
  e = jax.scipy.special.erf((jnp.log(sigmas) - p_mean) / (jnp.sqrt(2.0) * p_std))
  w = e[1:] - e[:-1]
  return w / jnp.sum(w)


def multistep_sigmas(nfe: int, *, sigma_min: float, sigma_max: float, rho: float = 7.0):
  """The noise levels ``[nfe]`` at which multistep consistency sampling evaluates f:
  ``sigma_max`` first, then the Karras grid of ``nfe + 1`` levels between the boundary
  and ``sigma_max``, largest first (Song et al. (2023), Algorithm 1)."""
  from kdjax.diffusion.flow import karras_sigmas

  grid = karras_sigmas(nfe + 1, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  return grid[1:][::-1]


def karras_sigma(i, n, *, sigma_min: float, sigma_max: float, rho: float = 7.0):
  """The ``i``-th of ``n`` Karras levels with traced ``i`` and ``n`` (elementwise)."""
  frac = i / jnp.maximum(n - 1, 1)
  lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  return (lo + frac * (hi - lo)) ** rho


def sample_pair_indices(
  rng,
  batch: int,
  num_scales,
  *,
  max_scales: int,
  sigma_min: float,
  sigma_max: float,
  rho: float = 7.0,
  p_mean: float = -1.1,
  p_std: float = 2.0,
):
  """``n [B]`` in ``[0, num_scales - 1)`` drawn with :func:`lognormal_index_weights` over the
  (traced) ``num_scales``-level grid; ``max_scales`` is its static upper bound."""
  i = jnp.arange(max_scales)
  sig = karras_sigma(i, num_scales, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  sig_next = karras_sigma(i + 1, num_scales, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  cdf = lambda s: jax.scipy.special.erf((jnp.log(s) - p_mean) / (jnp.sqrt(2.0) * p_std))  # noqa: E731
  w = jnp.where(i < num_scales - 1, cdf(sig_next) - cdf(sig), 0.0)
  return jax.random.categorical(rng, jnp.log(jnp.maximum(w, 1e-30)), shape=(batch,))


def sample(f: Callable, z, rng, *, nfe: int, sigma_min: float, sigma_max: float, rho: float = 7.0):
  r"""Multistep consistency sampling (Song et al. (2023), Algorithm 1) with exactly ``nfe``
  evaluations of ``f(x, sigma[B])``: :math:`x \leftarrow f(\sigma_\mathrm{max} z,
  \sigma_\mathrm{max})`, then for each lower level :math:`\tau` of
  :func:`multistep_sigmas`: :math:`x \leftarrow f(x + \sqrt{\tau^2 - \sigma_\mathrm{min}^2}
  z', \tau)` with fresh noise :math:`z'` from ``rng``."""
  from kdjax.diffusion.samplers import check_nfe

  nfe = check_nfe(nfe)
  levels = multistep_sigmas(nfe, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  full = lambda s: jnp.full((z.shape[0],), s, z.dtype)  # noqa: E731
  x = f(sigma_max * z, full(sigma_max))
  for k in range(1, nfe):
    tau = levels[k]
    noise = jax.random.normal(jax.random.fold_in(rng, k), z.shape, z.dtype)
    x = f(x + jnp.sqrt(tau**2 - sigma_min**2) * noise, full(tau))
  return x
