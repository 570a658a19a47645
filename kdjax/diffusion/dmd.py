r"""Distribution matching distillation (Yin et al. (2024), "One-step diffusion with
distribution matching distillation", DMD), on the flow path of :mod:`kdjax.diffusion.flow`.

A one-step generator :math:`G_\theta(z)` (initialised from the teacher) is trained with

* the **distribution-matching gradient** (the paper's eq. (7)-(8)): with
  :math:`x = G_\theta(z)` noised on the flow path, :math:`x_t = (1-t) z' + t x`, read in
  the paper's EDM form (:math:`\alpha = 1`) :math:`y = x_t/t = x + \sigma z'`,
  :math:`\sigma = (1-t)/t`, and the scores :math:`s(y) = -(y - \mu(x_t, t))/\sigma^2` of
  the frozen teacher (:math:`\mu_\mathrm{real}`) and of an online "fake" denoiser of the
  generator's samples (:math:`\mu_\mathrm{fake}`),

  .. math::
    \nabla_\theta D_{KL} = \mathbb E\Big[w_t \big(s_\mathrm{fake} -
    s_\mathrm{real}\big)\frac{\partial G}{\partial\theta}\Big],\quad
    w_t = \frac{\sigma^2\, d}{\lVert \mu_\mathrm{real} - x\rVert_1},

  i.e. per sample :math:`g = (\mu_\mathrm{fake} - \mu_\mathrm{real}) / \mathrm{mean}|x -
  \mu_\mathrm{real}|` (:func:`distribution_matching_grad`), applied through the surrogate
  :math:`\tfrac12\,\mathrm{mean}(x - \mathrm{sg}(x - g))^2` whose gradient in :math:`x` is
  :math:`g/d` (:func:`distribution_matching_loss`);
* the **regression loss** :math:`\lVert G_\theta(z_\mathrm{ref}) - y_\mathrm{ref}\rVert`
  on pairs of noise and the teacher's deterministic ODE output (the paper uses LPIPS on
  images; here the mean squared error, :func:`regression_loss`), weighted by
  :math:`\lambda_\mathrm{reg}` (0.25 in the paper);
* the **fake score** is trained online by flow matching on stop-gradient generator samples
  (:func:`kdjax.diffusion.flow.flow_matching_loss`), alternating with the generator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax.diffusion.flow import bcast, per_example_mean

__all__ = ["distribution_matching_grad", "distribution_matching_loss", "regression_loss"]


def distribution_matching_grad(x, mu_real, mu_fake, *, eps: float = 1e-8):
  r"""Per-sample DMD gradient :math:`g = (\mu_\mathrm{fake} - \mu_\mathrm{real}) /
  \max(\mathrm{mean}|x - \mu_\mathrm{real}|, \epsilon)`, ``[B, ...]``, no gradient."""
  scale = per_example_mean(jnp.abs(x - mu_real))
  g = (mu_fake - mu_real) / bcast(jnp.maximum(scale, eps), x)
  return jax.lax.stop_gradient(g)


def distribution_matching_loss(x, mu_real, mu_fake, *, where=None):
  r"""Per-example surrogate :math:`\tfrac12\mathrm{mean}(x - \mathrm{sg}(x - g))^2` whose
  gradient in ``x`` is :math:`g / d` (``d`` = data dimensions); its value is
  :math:`\tfrac12\mathrm{mean}(g^2)`. ``mu_real``, ``mu_fake``: the teacher's and the fake
  denoiser's data predictions at the noised generator sample."""
  g = distribution_matching_grad(x, mu_real, mu_fake)
  loss = 0.5 * per_example_mean(jnp.square(x - jax.lax.stop_gradient(x - g)))
  return loss if where is None else jnp.where(where, loss, 0.0)


def regression_loss(x, y_ref, *, where=None):
  """Per-example mean squared error of the generator ``x = G(z_ref)`` to the teacher's ODE
  output ``y_ref`` for the same noise (DMD's regression loss, L2 instead of LPIPS)."""
  loss = per_example_mean(jnp.square(x - y_ref))
  return loss if where is None else jnp.where(where, loss, 0.0)
