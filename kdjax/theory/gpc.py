r"""Self-distillation of GP classification with the continuous Bernoulli likelihood.

Borup & Andersen (2023), "Self-Distillation for Gaussian Process Regression and
Classification": to distil a GP classifier into itself, the student must be fitted to
the teacher's soft predictions in ``[0, 1]``. A Bernoulli likelihood is not a density on
soft targets; the **continuous Bernoulli** (Loaiza-Ganem & Cunningham 2019) is,

.. math::

   p(y \mid \lambda) = C(\lambda)\, \lambda^y (1 - \lambda)^{1 - y}, \quad y \in [0, 1],
   \qquad C(\lambda) = \frac{2 \operatorname{artanh}(1 - 2\lambda)}{1 - 2\lambda}.

With ``lambda = sigmoid(f)`` this is an exponential family in the latent ``f`` (natural
parameter ``f``, sufficient statistic ``y``),

.. math::

   \log p(y \mid f) = y f - A(f), \qquad A(f) = \log\frac{e^f - 1}{f}
   = \frac f2 + \log\frac{\sinh(f/2)}{f/2},

so ``d/df log p = y - A'(f)``, ``A'(f) = E[y | f] = 1/2 + (coth(f/2) - 2/f) / 2`` and
``-d^2/df^2 log p = A''(f) = Var[y | f] in (0, 1/12]``: the log-likelihood is concave and
the Laplace approximation (Rasmussen & Williams 2006, Algorithm 3.1) applies with
``W = A''(f)`` and gradient ``y - A'(f)`` (the normalising constant ``C`` is inside A).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.theory import arguments

__all__ = [
  "continuous_bernoulli_log_normalizer",
  "continuous_bernoulli_mean",
  "continuous_bernoulli_variance",
  "continuous_bernoulli_log_likelihood",
  "LaplacePosterior",
  "laplace_mode",
  "laplace_predict",
  "predictive_mean",
  "GPCSelfDistillation",
  "gpc_data_centric",
  "gpc_distribution_centric",
]

_SMALL = 0.05  # |f / 2| below which the Taylor series are used (no cancellation)


def _halves(f):
  u = jnp.asarray(f) / 2
  small = jnp.abs(u) < _SMALL
  return u, small, jnp.where(small, 1.0, u)


def continuous_bernoulli_log_normalizer(f) -> jax.Array:
  r"""``A(f) = log((e^f - 1) / f)`` elementwise (``A(0) = 0``), overflow-free.

  .. math:: A(f) = u + \log\frac{\sinh u}{u},\ u = f/2;\quad
     \log\frac{\sinh u}{u} = |u| + \log(1 - e^{-2|u|}) - \log(2|u|)
     \approx \frac{u^2}{6} - \frac{u^4}{180} + \frac{u^6}{2835}\ (|u| < 0.05).
  """
  u, small, us = _halves(f)
  au = jnp.abs(us)
  exact = au + jnp.log1p(-jnp.exp(-2 * au)) - jnp.log(2 * au)
  u2 = u * u
  series = u2 / 6 - u2**2 / 180 + u2**3 / 2835
  return u + jnp.where(small, series, exact)


def continuous_bernoulli_mean(f) -> jax.Array:
  r"""``E[y | f] = A'(f) = 1/2 + (coth(u) - 1/u) / 2`` with ``u = f / 2``, in ``(0, 1)``.

  Series near 0: ``coth u - 1/u = u/3 - u^3/45 + 2 u^5/945 - u^7/4725``.
  """
  u, small, us = _halves(f)
  exact = 1 / jnp.tanh(us) - 1 / us
  u2 = u * u
  series = u * (1 / 3 - u2 / 45 + 2 * u2**2 / 945 - u2**3 / 4725)
  return 0.5 + 0.5 * jnp.where(small, series, exact)


def continuous_bernoulli_variance(f) -> jax.Array:
  r"""``Var[y | f] = A''(f) = (1/u^2 - 1/sinh^2 u) / 4`` with ``u = f / 2``, in ``(0, 1/12]``.

  Series near 0: ``1/u^2 - 1/sinh^2 u = 1/3 - u^2/15 + 2 u^4/189 - u^6/675``.
  """
  u, small, us = _halves(f)
  exact = 1 / us**2 - 1 / jnp.sinh(us) ** 2
  u2 = u * u
  series = 1 / 3 - u2 / 15 + 2 * u2**2 / 189 - u2**3 / 675
  return 0.25 * jnp.where(small, series, exact)


def continuous_bernoulli_log_likelihood(y, f) -> jax.Array:
  r"""``log p(y | f) = y f - A(f)`` elementwise, for targets ``y`` in ``[0, 1]``."""
  return jnp.asarray(y) * f - continuous_bernoulli_log_normalizer(f)


class LaplacePosterior(NamedTuple):
  """Laplace approximation ``q(f | X, y) = N(mode, (K^{-1} + W)^{-1})`` at the training inputs.

  Attributes:
    mode: ``[n]`` latent mode ``f_hat``.
    gradient: ``[n]`` ``y - A'(f_hat)`` (equals ``K^{-1} f_hat`` at the mode).
    sqrt_w: ``[n]`` ``sqrt(A''(f_hat))``.
    chol: ``[n, n]`` lower Cholesky factor of ``I + W^(1/2) K W^(1/2)``.
    objective: ``log p(y | f_hat) - f_hat^T K^{-1} f_hat / 2``.
    iterations: Newton iterations taken.
  """

  mode: jax.Array
  gradient: jax.Array
  sqrt_w: jax.Array
  chol: jax.Array
  objective: jax.Array
  iterations: jax.Array


@jax.jit
def _newton(K, y, max_iter, tol):
  n = K.shape[0]
  eye = jnp.eye(n, dtype=K.dtype)

  def psi(a):
    f = K @ a
    return jnp.sum(continuous_bernoulli_log_likelihood(y, f)) - 0.5 * a @ f

  def newton_direction(a):
    f = K @ a
    sw = jnp.sqrt(continuous_bernoulli_variance(f))
    chol = jnp.linalg.cholesky(eye + sw[:, None] * K * sw[None, :])
    b = sw**2 * f + y - continuous_bernoulli_mean(f)
    solve = jax.scipy.linalg.cho_solve((chol, True), sw * (K @ b))
    return b - sw * solve - a

  def body(state):
    a, value, _, it = state
    step = newton_direction(a)

    # Halve the step until the objective does not decrease (rarely needed: A is convex).
    def shrink(s):
      return s[0] * 0.5, s[1] + 1

    def worse(s):
      return (psi(a + s[0] * step) < value) & (s[1] < 30)

    scale, _ = jax.lax.while_loop(worse, shrink, (jnp.asarray(1.0, K.dtype), 0))
    a_new = a + scale * step
    value_new = psi(a_new)
    return a_new, value_new, jnp.abs(value_new - value), it + 1

  def cond(state):
    _, value, change, it = state
    return (it < max_iter) & (change > tol * (1 + jnp.abs(value)))

  a0 = jnp.zeros(n, K.dtype)
  init = (a0, psi(a0), jnp.asarray(jnp.inf, K.dtype), 0)
  a, value, _, it = jax.lax.while_loop(cond, body, init)
  f = K @ a
  sw = jnp.sqrt(continuous_bernoulli_variance(f))
  chol = jnp.linalg.cholesky(eye + sw[:, None] * K * sw[None, :])
  return LaplacePosterior(f, y - continuous_bernoulli_mean(f), sw, chol, value, it)


def _check_soft_targets(y, n, name="y"):
  y = jnp.asarray(y)
  if y.shape != (n,):
    raise ValueError(f"{name} must have shape [n] = [{n}], got {y.shape}")
  if checks.is_concrete(y) and not np.all((np.asarray(y) >= 0) & (np.asarray(y) <= 1)):
    raise ValueError(f"{name} must lie in [0, 1] (continuous Bernoulli targets)")
  return y


def laplace_mode(K, y, *, max_iter=100, tol=1e-12) -> LaplacePosterior:
  r"""Laplace approximation of GP classification with the continuous Bernoulli likelihood.

  Newton's method on :math:`\Psi(f) = \sum_i (y_i f_i - A(f_i)) - \tfrac12 f^\top K^{-1} f`
  in the form of Rasmussen & Williams (2006), Algorithm 3.1, with ``W = A''(f)`` and
  ``grad = y - A'(f)``:

  .. math::

     B = I + W^{1/2} K W^{1/2},\quad b = W f + \nabla,\quad
     a = b - W^{1/2} B^{-1} W^{1/2} K b,\quad f \leftarrow K a,

  with step halving if ``Psi`` would decrease. At the mode ``f = K (y - A'(f))``.

  Args:
    K: ``[n, n]`` PSD prior kernel. y: ``[n]`` targets in ``[0, 1]`` (hard or soft).
    max_iter: Newton iterations at most. tol: stop when ``|ΔPsi| <= tol (1 + |Psi|)``.

  Returns:
    A :class:`LaplacePosterior`.
  """
  K = checks.check_kernel("K", K)
  y = _check_soft_targets(y, K.shape[0]).astype(K.dtype)
  arguments.check_steps(max_iter, "max_iter")
  return _newton(K, y, max_iter, jnp.asarray(tol, K.dtype))


def laplace_predict(posterior: LaplacePosterior, k_test, k_test_diag):
  r"""Latent predictive mean and variance at test inputs (R&W 2006, Algorithm 3.2).

  .. math::

     \bar f_* = k_*^\top (y - A'(\hat f)), \qquad
     \mathbb V[f_*] = k(x_*, x_*) - v^\top v,\ v = L^{-1} W^{1/2} k_*.

  Args:
    posterior: from :func:`laplace_mode`.
    k_test: ``[n_test, n]`` test-train kernel. k_test_diag: ``[n_test]`` ``k(x*, x*)``.

  Returns:
    ``(mean [n_test], variance [n_test])``; round-off negative variances become 0, one below
    ``-psd_tolerance`` (relative to ``max(k(x*, x*), v^T v)``) is NaN under ``jax.jit``.

  Raises:
    ValueError: bad shapes, or (concrete inputs) such a negative variance: ``k(x*, x*)`` below
      what the training points explain, so the joint prior covariance is not PSD.
  """
  n = posterior.mode.shape[0]
  k_test = arguments.check_test_kernel(k_test, n)
  k_test_diag = jnp.asarray(k_test_diag)
  if k_test_diag.shape != (k_test.shape[0],):
    raise ValueError(f"k_test_diag must have shape [{k_test.shape[0]}], got {k_test_diag.shape}")
  mean, variance = _predict(posterior, k_test, k_test_diag)
  if checks.is_concrete(variance):
    bad = np.flatnonzero(np.isnan(variance) & np.isfinite(np.asarray(mean)))
    if bad.size:
      raise ValueError(
        f"k_test_diag[{bad[0]}] = {float(k_test_diag[bad[0]]):.6g} is below the variance the "
        "training points explain: the joint prior covariance of training and test points is "
        "not positive semi-definite"
      )
  return mean, variance


@jax.jit
def _predict(posterior, k_test, k_test_diag):
  """Latent mean and variance; a variance below ``-psd_tolerance`` (relative) is NaN."""
  v = jax.scipy.linalg.solve_triangular(
    posterior.chol, posterior.sqrt_w[:, None] * k_test.T, lower=True
  )
  explained = jnp.sum(v**2, axis=0)
  raw = k_test_diag - explained
  tol = checks.psd_tolerance(raw.dtype) * jnp.maximum(jnp.abs(k_test_diag), explained)
  return k_test @ posterior.gradient, jnp.where(raw < -tol, jnp.nan, jnp.maximum(raw, 0.0))


def predictive_mean(mean, variance, *, num_points=32) -> jax.Array:
  r"""``E[y] = ∫ A'(f) N(f | mean, variance) df`` by Gauss–Hermite quadrature.

  The continuous Bernoulli analogue of the averaged class probability; it is ``> 1/2``
  exactly when ``mean > 0`` (``A'`` is odd around ``(0, 1/2)`` and increasing).
  """
  nodes, weights = np.polynomial.hermite_e.hermegauss(num_points)
  return _gauss_hermite_mean(
    jnp.asarray(mean), jnp.asarray(variance), nodes, weights / np.sqrt(2 * np.pi)
  )


@jax.jit
def _gauss_hermite_mean(mean, variance, nodes, weights):
  dtype = jnp.result_type(mean, float)
  f = mean[..., None] + jnp.sqrt(variance)[..., None] * nodes.astype(dtype)
  return jnp.sum(weights.astype(dtype) * continuous_bernoulli_mean(f), axis=-1)


class GPCSelfDistillation(NamedTuple):
  """Rounds of :func:`gpc_data_centric` at the evaluation points.

  Attributes:
    latent_mean: ``[steps, n*]`` Laplace latent means. latent_var: ``[steps, n*]``.
    mean: ``[steps, n*]`` predictive ``E[y]`` (soft prediction in ``(0, 1)``).
    targets: ``[steps, n]`` the training targets each round was fitted to.
  """

  latent_mean: jax.Array
  latent_var: jax.Array
  mean: jax.Array
  targets: jax.Array


def gpc_data_centric(
  K, y, *, steps, alpha=0.0, k_test=None, k_test_diag=None, max_iter=100
) -> GPCSelfDistillation:
  r"""Data-centric self-distillation of continuous-Bernoulli GP classification.

  Round 1 fits the labels ``y`` (``{0, 1}`` or soft, in ``[0, 1]``); round t >= 2 fits
  the soft targets ``b_t = alpha y + (1 - alpha) E_{t-1}[y(X)]``, the previous round's
  predictive means at the training inputs mixed with the labels (Borup & Andersen 2023;
  ``alpha`` is the label weight). Every round is a fresh Laplace fit
  (:func:`laplace_mode`) with the same prior kernel.

  Args:
    K: ``[n, n]`` prior kernel. y: ``[n]`` labels in ``[0, 1]``.
    steps: rounds ``>= 1``. alpha: label weight in ``[0, 1]``.
    k_test: optional ``[n_test, n]`` test-train kernel, with ``k_test_diag`` ``[n_test]``;
      without them the evaluation points are the training inputs.
    max_iter: Newton iterations per round at most.

  Returns:
    A :class:`GPCSelfDistillation`.
  """
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y = _check_soft_targets(y, n).astype(K.dtype)
  steps = arguments.check_steps(steps)
  alpha = arguments.check_alpha(alpha)
  if (k_test is None) != (k_test_diag is None):
    raise ValueError("k_test and k_test_diag must be given together")
  if k_test is None:
    k_test, k_test_diag = K, jnp.diag(K)
  targets, latent_means, latent_vars, means = [], [], [], []
  b = y
  for _ in range(steps):
    posterior = laplace_mode(K, b, max_iter=max_iter)
    mean, var = laplace_predict(posterior, k_test, k_test_diag)
    train_mean, train_var = laplace_predict(posterior, K, jnp.diag(K))
    targets.append(b)
    latent_means.append(mean)
    latent_vars.append(var)
    means.append(predictive_mean(mean, var))
    b = alpha * y + (1 - alpha) * predictive_mean(train_mean, train_var)
  return GPCSelfDistillation(
    jnp.stack(latent_means), jnp.stack(latent_vars), jnp.stack(means), jnp.stack(targets)
  )


def gpc_distribution_centric(
  K, y, *, steps, k_test=None, k_test_diag=None, max_iter=100
) -> GPCSelfDistillation:
  r"""Distribution-centric self-distillation of continuous-Bernoulli GP classification.

  Round t takes round t-1's posterior as its prior and conditions on the same labels
  ``y`` again (Borup & Andersen 2023, the classification analogue of
  :func:`kdjax.theory.gp.gpr_distribution_centric`). Exactly, round t's posterior is
  ``p(f) prod_{s<=t} p(y | f) = p(f) p(y | f)^t``: the data **duplicated** t times. Its
  log density is

  .. math::

     t \sum_i (y_i f_i - A(f_i)) - \tfrac12 f^\top K^{-1} f
     = t \Big[\sum_i (y_i f_i - A(f_i)) - \tfrac12 f^\top (tK)^{-1} f\Big],

  so its Laplace approximation (one per round, of the exact recursion) has the mode of a
  GPC with the prior **covariance scaled** by t, and curvature ``K^{-1} + t W =
  t ((tK)^{-1} + W)``: latent predictive mean ``t k_*^T (y - A'(\hat f))`` and variance
  ``[t k_{**} - t^2 k_*^T (tK + W^{-1})^{-1} k_*] / t``. Computed here through the scaled
  kernel (:func:`laplace_mode` on ``tK``); the tests check it against the duplicated data.

  Args:
    K: ``[n, n]`` prior kernel. y: ``[n]`` labels in ``[0, 1]``. steps: rounds ``>= 1``.
    k_test, k_test_diag: optional test-train kernel ``[n_test, n]`` and ``k(x*, x*)``
      ``[n_test]`` (both or neither; default: the training inputs).
    max_iter: Newton iterations per round at most.

  Returns:
    A :class:`GPCSelfDistillation` (``targets`` are ``y`` in every round).
  """
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y = _check_soft_targets(y, n).astype(K.dtype)
  steps = arguments.check_steps(steps)
  if (k_test is None) != (k_test_diag is None):
    raise ValueError("k_test and k_test_diag must be given together")
  if k_test is None:
    k_test, k_test_diag = K, jnp.diag(K)
  k_test, k_test_diag = jnp.asarray(k_test), jnp.asarray(k_test_diag)
  latent_means, latent_vars, means = [], [], []
  for t in range(1, steps + 1):
    posterior = laplace_mode(t * K, y, max_iter=max_iter)
    mean, var = laplace_predict(posterior, t * k_test, t * k_test_diag)
    latent_means.append(mean)
    latent_vars.append(var / t)
    means.append(predictive_mean(mean, var / t))
  return GPCSelfDistillation(
    jnp.stack(latent_means),
    jnp.stack(latent_vars),
    jnp.stack(means),
    jnp.broadcast_to(y, (steps, n)),
  )
