"""Kernel ridge regression and the Gaussian-process posterior by one Cholesky factorisation.

The ridge is given relative to the kernel's scale, `lambda = reg * tr(K) / n`,
as in KIP (Nguyen, Chen, Lee, 2021, "Dataset Meta-Learning from Kernel
Ridge-Regression"), so the same `reg` works for NNGP and NTK of any depth.

Bad kernels, on concrete (not traced) inputs, raise a ValueError naming the defect:
  * `k_train_train` not symmetric: `max|K - K^T| > max(1e-6, 64 eps) * max|K|`
    (1e-6 relative in float64, 7.6e-6 in float32), or with NaN/inf entries;
  * `K + lambda I` not positive definite (its Cholesky fails): the message gives the
    smallest eigenvalue of `K` and a larger `reg` to try;
  * (`posterior`) a variance below `-tol` (see `posterior`), i.e. a `k_test_test` too
    small for the kernel's other blocks.

Under `jax.jit` (traced inputs) nothing can raise; then the symmetric part
`(K + K^T) / 2` is factored (symmetry is not checked), a failed Cholesky gives NaN in every
output (never a plausible number), and a negative variance beyond `tol` becomes NaN.
Everything is grad-compatible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from kdjax import checks

__all__ = ["regularized", "solve", "predict", "posterior"]


def regularized(k_train_train: jax.typing.ArrayLike, reg: float) -> jax.Array:
  r"""`K + reg * tr(K) / n * I`.

  Args:
    k_train_train: `[n, n]` symmetric kernel.
    reg: relative ridge, >= 0.

  Returns:
    `[n, n]` regularised kernel.
  """
  k = checks.check_square("k_train_train", k_train_train)
  checks.check_reg(reg)
  n = k.shape[0]
  return k + (reg * jnp.trace(k) / n) * jnp.eye(n, dtype=k.dtype)


def _factor(k_train_train: jax.typing.ArrayLike, reg) -> jax.Array:
  """Lower Cholesky factor of the regularised kernel, with the checks of the module."""
  k = checks.check_square("k_train_train", k_train_train)
  checks.check_symmetric("k_train_train", k)
  chol = jnp.linalg.cholesky(regularized(k, reg))
  if checks.is_concrete(chol, reg) and not bool(jnp.all(jnp.isfinite(chol))):
    raise checks.not_positive_definite(k, reg)
  return chol


def _check_test_train(k_test_train: jax.typing.ArrayLike, n: int, dtype) -> jax.Array:
  k_st = jnp.asarray(k_test_train)
  if k_st.ndim != 2 or k_st.shape[1] != n:
    raise ValueError(f"k_test_train must be [m, {n}], got {k_st.shape}")
  return k_st.astype(dtype)


def solve(
  k_train_train: jax.typing.ArrayLike, y_train: jax.typing.ArrayLike, *, reg: float = 1e-6
) -> jax.Array:
  r"""KRR dual coefficients `alpha = (K + reg tr(K)/n I)^{-1} y`.

  Args:
    k_train_train: `[n, n]` kernel of the training inputs.
    y_train: `[n]` or `[n, c]` targets.
    reg: relative ridge.

  Returns:
    `alpha`, the shape of `y_train`.

  Raises:
    ValueError: on bad shapes, or (concrete inputs) a kernel that is not symmetric
      or not positive definite after regularisation.
  """
  chol = _factor(k_train_train, reg)
  y = checks.check_targets(y_train, chol.shape[0], chol.dtype)
  return cho_solve((chol, True), y)


def predict(
  k_test_train: jax.typing.ArrayLike,
  k_train_train: jax.typing.ArrayLike,
  y_train: jax.typing.ArrayLike,
  *,
  reg: float = 1e-6,
) -> jax.Array:
  r"""Kernel ridge regression predictions (the GP / infinite-net posterior mean).

  .. math::
    \hat y = K_{*t} \big(K_{tt} + \lambda I\big)^{-1} y,
    \qquad \lambda = \text{reg} \cdot \operatorname{tr}(K_{tt}) / n.

  Reference: Nguyen, Chen, Lee, 2021, "Dataset Meta-Learning from Kernel
  Ridge-Regression" (the trace-scaled ridge).

  Args:
    k_test_train: `[m, n]` kernel between test and training inputs.
    k_train_train: `[n, n]` kernel of the training inputs.
    y_train: `[n]` or `[n, c]` targets.
    reg: relative ridge.

  Returns:
    `[m]` or `[m, c]` predictions.

  Raises:
    ValueError: as `solve`.
  """
  n = jnp.shape(k_train_train)[0]
  k_st = _check_test_train(k_test_train, n, jnp.result_type(k_train_train, float))
  return k_st @ solve(k_train_train, y_train, reg=reg)


def posterior(
  k_test_train: jax.typing.ArrayLike,
  k_train_train: jax.typing.ArrayLike,
  y_train: jax.typing.ArrayLike,
  k_test_test: jax.typing.ArrayLike,
  *,
  reg: float = 1e-6,
) -> tuple[jax.Array, jax.Array]:
  r"""Gaussian-process posterior mean and (co)variance at the test inputs.

  .. math::
    \mu = K_{*t} (K_{tt} + \lambda I)^{-1} y, \qquad
    \Sigma = K_{**} - K_{*t} (K_{tt} + \lambda I)^{-1} K_{t*}.

  A variance `v_i = Sigma_ii` in `[-tol_i, 0)` is rounding and is set to 0, with
  `tol_i = 100 eps (K_**,ii + (K_{*t} (K + lambda I)^{-1} K_{t*})_ii)`; below `-tol_i`
  the inputs are inconsistent (e.g. a `k_test_test` too small for `k_test_train`): a
  ValueError on concrete inputs, NaN under `jit`.

  Reference: Rasmussen and Williams, 2006, "Gaussian Processes for Machine
  Learning", eqs. 2.23-2.24 (with the trace-scaled ridge as noise variance).

  Args:
    k_test_train: `[m, n]`.
    k_train_train: `[n, n]`.
    y_train: `[n]` or `[n, c]`.
    k_test_test: `[m, m]` for the full covariance or `[m]` (the diagonal
      `k(x, x)`) for the variances only.
    reg: relative ridge.

  Returns:
    `(mean, cov)`: mean `[m]` or `[m, c]`; cov `[m, m]` or `[m]` like
    `k_test_test` (the same for every output column).

  Raises:
    ValueError: as `solve`, or for a variance below `-tol`.
  """
  chol = _factor(k_train_train, reg)
  n = chol.shape[0]
  k_st = _check_test_train(k_test_train, n, chol.dtype)
  m = k_st.shape[0]
  k_ss = jnp.asarray(k_test_test).astype(chol.dtype)
  if k_ss.shape not in ((m,), (m, m)):
    raise ValueError(f"k_test_test must be [{m}] or [{m}, {m}], got {k_ss.shape}")
  y = checks.check_targets(y_train, n, chol.dtype)
  mean = k_st @ cho_solve((chol, True), y)
  half = solve_triangular(chol, k_st.T, lower=True)
  explained = jnp.sum(half**2, axis=0)
  prior = k_ss if k_ss.ndim == 1 else jnp.diagonal(k_ss)
  variance = prior - explained
  tol = 100 * jnp.finfo(chol.dtype).eps * (jnp.abs(prior) + explained)
  bad = variance < -tol
  if checks.is_concrete(variance) and bool(jnp.any(bad)):
    i = int(jnp.argmax(bad))
    raise ValueError(
      f"posterior variance {float(variance[i]):.3g} < 0 at test point {i}: k_test_test "
      f"({float(prior[i]):.3g}) is smaller than what the training points explain "
      f"({float(explained[i]):.3g}); k_test_test must be the kernel of the test inputs "
      "with themselves, from the same kernel as k_test_train and k_train_train"
    )
  variance = jnp.where(bad, jnp.nan, jnp.maximum(variance, 0))
  if k_ss.ndim == 1:
    return mean, variance
  cov = k_ss - half.T @ half
  return mean, cov.at[jnp.diag_indices(m)].set(variance)
