r"""Self-distillation of Gaussian process regression, in closed form.

Borup & Andersen (2023), "Self-Distillation for Gaussian Process Regression and
Classification", distil a GP into itself in two ways. With prior ``f ~ GP(0, k)``,
Gaussian noise variance ``noise`` (sigma^2), training kernel ``K = V diag(d) V^T`` and
labels ``y``:

* **data-centric**: every round is a fresh GP regression (same prior, same noise) fitted
  to new targets: round 1 to ``y``, round t to ``alpha y + (1 - alpha) m_{t-1}(X)``, the
  previous posterior mean at the training points mixed with the labels (``alpha`` is the
  label weight, as in :mod:`kdjax.theory.kernel_distillation`). The posterior mean is KRR
  with ``reg = noise``, so it is :func:`kdjax.theory.kernel_distillation.krr_self_distillation`;
  the posterior covariance does not depend on the targets and is the same in every round.
* **distribution-centric**: round t uses round t-1's posterior as its prior and
  conditions on the same labels ``y`` again. Conditioning ``t`` times on ``y`` with noise
  ``sigma^2`` multiplies the prior by ``prod_{s<=t} N(y | f, sigma^2 I) ∝
  N(y | f, sigma^2 / t I)``, so round t is one GP with noise variance ``sigma^2 / t``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.theory import arguments, kernel_distillation

__all__ = ["GaussianPosterior", "gpr_data_centric", "gpr_distribution_centric"]


class GaussianPosterior(NamedTuple):
  """Posterior of every round at the evaluation points.

  Attributes:
    mean: ``[steps, n*]`` (``[steps, n*, m]`` for ``y: [n, m]``) posterior means.
    cov: ``[steps, n*, n*]`` posterior covariances of the latent function (shared by all
      target columns).
  """

  mean: jax.Array
  cov: jax.Array


def _checked(K, y, noise, steps, k_test, k_test_test):
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  arguments.check_targets(y, n)
  noise = arguments.check_nonnegative(noise, "noise")
  steps = arguments.check_steps(steps)
  if (k_test is None) != (k_test_test is None):
    raise ValueError(
      "k_test and k_test_test must be given together (test-train "
      "[n_test, n] and test-test [n_test, n_test] kernels)"
    )
  if k_test is not None:
    k_test = arguments.check_test_kernel(k_test, n)
    k_test_test = jnp.asarray(k_test_test)
    if k_test_test.shape != (k_test.shape[0],) * 2:
      raise ValueError(
        f"k_test_test must have shape {(k_test.shape[0],) * 2}, got {k_test_test.shape}"
      )
    arguments.check_joint_kernel(K, k_test, k_test_test)
  return K, noise, steps, k_test, k_test_test


def _posterior_cov(eig, noise, k_test, k_test_test):
  r"""``K - K (K + noise I)^{-1} K`` (train) or ``K_** - K_* (K + noise I)^{-1} K_*^T``."""
  a, inverse = kernel_distillation.shrinkage_factors(eig.values, noise)
  if k_test is None:
    return (eig.vectors * (eig.values * (1.0 - a))) @ eig.vectors.T
  projected = k_test @ eig.vectors
  return k_test_test - (projected * inverse) @ projected.T


def gpr_data_centric(
  K, y, *, noise, steps, alpha=0.0, k_test=None, k_test_test=None
) -> GaussianPosterior:
  r"""Data-centric GP self-distillation (Borup & Andersen 2023), closed form.

  Round t's targets are ``b_1 = y`` and ``b_t = alpha y + (1 - alpha) m_{t-1}(X)``. Each
  round's posterior is that of a GP fitted to ``b_t``:

  .. math::

     m_t(X_*) = K_* (K + \sigma^2 I)^{-1} b_t, \qquad
     \Sigma_t = K_{**} - K_* (K + \sigma^2 I)^{-1} K_*^\top,

  so the means are :func:`kdjax.theory.kernel_distillation.krr_self_distillation` with
  ``reg = noise`` (per eigen-direction ``a^t`` for ``alpha = 0``, ``a = d / (d + sigma^2)``)
  and the covariance is identical in every round.

  Args:
    K: ``[n, n]`` training kernel. y: ``[n]`` or ``[n, m]`` labels.
    noise: observation noise variance ``sigma^2 >= 0``.
    steps: rounds ``>= 1``. alpha: label weight in ``[0, 1]``.
    k_test: optional ``[n_test, n]`` test-train kernel; k_test_test: ``[n_test, n_test]``
      test kernel (both or neither). Without them the posterior at the training inputs.

  Returns:
    :class:`GaussianPosterior` with means ``[steps, n*(, m)]`` and covariances
    ``[steps, n*, n*]``.
  """
  K, noise, steps, k_test, k_test_test = _checked(K, y, noise, steps, k_test, k_test_test)
  mean = kernel_distillation.krr_self_distillation(
    K, y, reg=noise, steps=steps, alpha=alpha, k_test=k_test
  )
  cov = _posterior_cov(kernel_distillation.kernel_eigensystem(K), noise, k_test, k_test_test)
  return GaussianPosterior(mean, jnp.broadcast_to(cov, (steps,) + cov.shape))


def gpr_distribution_centric(
  K, y, *, noise, steps, k_test=None, k_test_test=None
) -> GaussianPosterior:
  r"""Distribution-centric GP self-distillation (Borup & Andersen 2023), closed form.

  Round 1 is GP regression on ``y``; round t takes round t-1's posterior as its prior and
  conditions on ``y`` again. By induction round t's posterior is proportional to
  ``p(f) N(y | f, sigma^2 I)^t ∝ p(f) N(y | f, sigma^2 / t I)``: one GP regression with the
  noise variance divided by t,

  .. math::

     m_t(X_*) = K_* (K + \tfrac{\sigma^2}{t} I)^{-1} y, \qquad
     \Sigma_t = K_{**} - K_* (K + \tfrac{\sigma^2}{t} I)^{-1} K_*^\top .

  Per training eigen-direction the mean factor is ``d / (d + sigma^2 / t)`` (towards
  interpolation as t grows) and the variance ``d sigma^2 / (t d + sigma^2)`` (to 0).

  Args:
    As :func:`gpr_data_centric`, without alpha (every round conditions on the labels).

  Returns:
    :class:`GaussianPosterior` with means ``[steps, n*(, m)]`` and covariances
    ``[steps, n*, n*]``.
  """
  K, noise, steps, k_test, k_test_test = _checked(K, y, noise, steps, k_test, k_test_test)
  eig = kernel_distillation.kernel_eigensystem(K)
  y2d, vector = arguments.check_targets(y, K.shape[0])
  means, covs = [], []
  for t in range(1, steps + 1):
    a, inverse = kernel_distillation.shrinkage_factors(eig.values, noise / t)
    factors = (a if k_test is None else inverse)[None]
    means.append(kernel_distillation.apply_eigen_factors(eig, factors, y2d, k_test)[0])
    covs.append(_posterior_cov(eig, noise / t, k_test, k_test_test))
  mean = jnp.stack(means)
  return GaussianPosterior(mean[..., 0] if vector else mean, jnp.stack(covs))
