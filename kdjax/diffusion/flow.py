r"""The flow-matching teacher and the EDM noise-level view of it; pure jnp, no flax.

Conventions of all of :mod:`kdjax.diffusion`: time runs from noise to data,

.. math::
  x_t = (1 - t)\,x_0 + t\,x_1, \qquad x_0 \sim \mathcal N(0, I),\ x_1 \sim p_\mathrm{data},
  \ t \in [0, 1],

the linear interpolant of rectified flow (Liu, Gong & Liu (2023), "Flow straight and
fast") and conditional flow matching with the optimal-transport path (Lipman et al.
(2023), "Flow matching for generative modeling"). The teacher's velocity
:math:`v_\theta(x, t)` regresses the target :math:`x_1 - x_0`
(:func:`flow_matching_loss`); samples solve :math:`\dot x = v_\theta(x, t)` from
:math:`t = 0` to 1 (:mod:`kdjax.diffusion.samplers`).

The same path in EDM's variance-exploding form (Karras et al. (2022), "Elucidating the
design space of diffusion-based generative models"): dividing by :math:`t`,
:math:`x_t / t = x_1 + \sigma x_0` with :math:`\sigma = (1 - t)/t`
(:func:`sigma_from_t`, :func:`t_from_sigma`). A velocity gives the denoiser
:math:`D(x_t, t) = \hat x_1 = x_t + (1 - t)\,v(x_t, t)` (:func:`denoise`), the quantity that
consistency models and DMD work with; :func:`edm_preconditioning` is EDM's
:math:`c_\mathrm{skip}, c_\mathrm{out}, c_\mathrm{in}, c_\mathrm{noise}` with the
consistency models' boundary condition at :math:`\sigma_\mathrm{min}`.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = [
  "interpolate",
  "flow_matching_loss",
  "denoise",
  "velocity_from_denoised",
  "sigma_from_t",
  "t_from_sigma",
  "edm_preconditioning",
  "karras_sigmas",
  "per_example_mean",
  "bcast",
]


def bcast(t, x):
  """``t [B]`` (or a scalar) reshaped to broadcast against ``x [B, ...]``."""
  t = jnp.asarray(t, x.dtype)
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def per_example_mean(x):
  """Mean over every axis but the first: ``[B, ...] -> [B]``."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def interpolate(x0, x1, t):
  r""":math:`x_t = (1 - t) x_0 + t x_1` for noise ``x0``, data ``x1`` ``[B, ...]``, ``t [B]``."""
  t = bcast(t, x1)
  return (1.0 - t) * x0 + t * x1


def flow_matching_loss(v_pred, x0, x1, *, where=None):
  r"""Conditional flow matching, per example:
  :math:`\ell = \frac1d \lVert v_\theta(x_t, t) - (x_1 - x_0)\rVert^2`.

  Lipman et al. (2023), eq. (23) with :math:`\sigma_\mathrm{min} = 0`; Liu et al. (2023),
  rectified flow, eq. (1).

  Args:
    v_pred: the model's velocity at :math:`(x_t, t)`, ``[B, ...]``.
    x0: the noise, ``[B, ...]``.
    x1: the data, ``[B, ...]``.
    where: optional boolean ``[B]``; masked examples give 0.

  Returns:
    ``[B]`` (mean over the data dimensions).
  """
  loss = per_example_mean(jnp.square(v_pred - (x1 - x0)))
  return loss if where is None else jnp.where(where, loss, 0.0)


def denoise(x_t, v, t):
  r"""The data prediction :math:`\hat x_1 = x_t + (1 - t)\,v` of a velocity ``v`` at ``t``."""
  return x_t + (1.0 - bcast(t, x_t)) * v


def velocity_from_denoised(x_t, x1_hat, t):
  r"""The velocity :math:`v = (\hat x_1 - x_t)/(1 - t)` of a data prediction (``t < 1``)."""
  return (x1_hat - x_t) / (1.0 - bcast(t, x_t))


def sigma_from_t(t):
  r"""EDM noise level :math:`\sigma = (1 - t)/t` of flow time ``t``
  (:math:`x_t / t = x_1 + \sigma x_0`)."""
  return (1.0 - t) / t


def t_from_sigma(sigma):
  r"""Flow time :math:`t = 1/(1 + \sigma)` of an EDM noise level."""
  return 1.0 / (1.0 + sigma)


def edm_preconditioning(sigma, *, sigma_data: float, sigma_min: float = 0.0):
  r"""EDM preconditioning, with the consistency-model boundary condition at ``sigma_min``.

  .. math::
    c_\mathrm{skip} = \frac{\sigma_d^2}{(\sigma - \sigma_\mathrm{min})^2 + \sigma_d^2},\quad
    c_\mathrm{out} = \frac{\sigma_d(\sigma - \sigma_\mathrm{min})}{\sqrt{\sigma^2 + \sigma_d^2}},
    \quad c_\mathrm{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
    c_\mathrm{noise} = \tfrac14 \ln\sigma ,

  so that :math:`F(x, \sigma) = c_\mathrm{skip} x + c_\mathrm{out} F_\theta(c_\mathrm{in}
  x, c_\mathrm{noise})`. With ``sigma_min = 0`` these are EDM's (Karras et al. (2022),
  Table 1); with ``sigma_min > 0`` they are the consistency model's (Song et al. (2023),
  "Consistency models", Appendix C), for which :math:`c_\mathrm{skip}(\sigma_\mathrm{min})
  = 1` and :math:`c_\mathrm{out}(\sigma_\mathrm{min}) = 0`, i.e. :math:`f(x,
  \sigma_\mathrm{min}) = x` exactly.

  Args:
    sigma: noise levels (any shape, > 0).
    sigma_data: the data's standard deviation.
    sigma_min: the boundary noise level (0 for a denoiser).

  Returns:
    ``(c_skip, c_out, c_in, c_noise)``, each of ``sigma``'s shape.
  """
  sigma = jnp.asarray(sigma)
  sd2 = sigma_data**2
  c_skip = sd2 / ((sigma - sigma_min) ** 2 + sd2)
  c_out = sigma_data * (sigma - sigma_min) / jnp.sqrt(sigma**2 + sd2)
  c_in = 1.0 / jnp.sqrt(sigma**2 + sd2)
  c_noise = 0.25 * jnp.log(sigma)
  return c_skip, c_out, c_in, c_noise


def karras_sigmas(n: int, *, sigma_min: float, sigma_max: float, rho: float = 7.0):
  r"""The ``n`` increasing noise levels of Karras et al. (2022), eq. (5), used by consistency
  models: :math:`\sigma_i = (\sigma_\mathrm{min}^{1/\rho} + \tfrac{i-1}{n-1}
  (\sigma_\mathrm{max}^{1/\rho} - \sigma_\mathrm{min}^{1/\rho}))^\rho`, :math:`i = 1..n`.
  """
  if n < 2:
    raise ValueError(f"karras_sigmas needs n >= 2, got {n}")
  i = jnp.arange(n) / (n - 1)
  return (sigma_min ** (1 / rho) + i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho
