"""Kernel ridge regression and the Gaussian-process posterior.

The ridge is given relative to the kernel's scale, `lambda = reg * tr(K) / n`,
as in KIP (Nguyen, Chen, Lee, 2021, "Dataset Meta-Learning from Kernel
Ridge-Regression"), so the same `reg` works for NNGP and NTK of any depth.
The solves use a Cholesky factorisation. Everything is jit- and
grad-compatible; eagerly, a system that is not positive definite raises a
ValueError (under `jit` it yields NaN, which cannot raise).
"""
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

__all__ = ["regularized", "solve", "predict", "posterior"]


def _check_square(name: str, k: jax.Array) -> jax.Array:
  k = jnp.asarray(k)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f"{name} must be a square [n, n] matrix, got {k.shape}")
  return k


def regularized(k_train_train: jax.Array, reg: float) -> jax.Array:
  r"""`K + reg * tr(K) / n * I`.

  Args:
    k_train_train: `[n, n]` symmetric kernel.
    reg: relative ridge, >= 0.

  Returns:
    `[n, n]` regularised kernel.
  """
  k = _check_square("k_train_train", k_train_train)
  if not isinstance(reg, jax.Array) and reg < 0:
    raise ValueError(f"reg must be >= 0, got {reg}")
  n = k.shape[0]
  return k + (reg * jnp.trace(k) / n) * jnp.eye(n, dtype=k.dtype)


def _cholesky(k_reg: jax.Array) -> jax.Array:
  chol = jnp.linalg.cholesky(k_reg)
  if not isinstance(chol, jax.core.Tracer) and not bool(
      jnp.all(jnp.isfinite(chol))):
    raise ValueError(
        "k_train_train + reg * tr(K) / n * I is not positive definite "
        "(Cholesky failed): increase reg, check the kernel for NaN, or use "
        "float64")
  return chol


def solve(k_train_train: jax.Array, y_train: jax.Array, *,
          reg: float = 1e-6) -> jax.Array:
  r"""KRR dual coefficients `alpha = (K + reg tr(K)/n I)^{-1} y`.

  Args:
    k_train_train: `[n, n]` kernel of the training inputs.
    y_train: `[n]` or `[n, c]` targets.
    reg: relative ridge.

  Returns:
    `alpha`, the shape of `y_train`.
  """
  k = regularized(k_train_train, reg)
  y = jnp.asarray(y_train)
  if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
    raise ValueError(f"y_train must be [n] or [n, c] with n = "
                     f"{k.shape[0]}, got {y.shape}")
  return cho_solve((_cholesky(k), True), y.astype(k.dtype))


def predict(k_test_train: jax.Array, k_train_train: jax.Array,
            y_train: jax.Array, *, reg: float = 1e-6) -> jax.Array:
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
  """
  k_st = jnp.asarray(k_test_train)
  n = jnp.shape(k_train_train)[0]
  if k_st.ndim != 2 or k_st.shape[1] != n:
    raise ValueError(f"k_test_train must be [m, {n}], got {k_st.shape}")
  return k_st @ solve(k_train_train, y_train, reg=reg)


def posterior(k_test_train: jax.Array, k_train_train: jax.Array,
              y_train: jax.Array, k_test_test: jax.Array, *,
              reg: float = 1e-6) -> tuple:
  r"""Gaussian-process posterior mean and (co)variance at the test inputs.

  .. math::
    \mu = K_{*t} (K_{tt} + \lambda I)^{-1} y, \qquad
    \Sigma = K_{**} - K_{*t} (K_{tt} + \lambda I)^{-1} K_{t*}.

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
  """
  k = regularized(k_train_train, reg)
  chol = _cholesky(k)
  k_st = jnp.asarray(k_test_train)
  k_ss = jnp.asarray(k_test_test)
  m = k_st.shape[0]
  if k_st.ndim != 2 or k_st.shape[1] != k.shape[0]:
    raise ValueError(f"k_test_train must be [m, {k.shape[0]}], got "
                     f"{k_st.shape}")
  if k_ss.shape not in ((m,), (m, m)):
    raise ValueError(f"k_test_test must be [{m}] or [{m}, {m}], got "
                     f"{k_ss.shape}")
  y = jnp.asarray(y_train)
  if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
    raise ValueError(f"y_train must be [n] or [n, c] with n = "
                     f"{k.shape[0]}, got {y.shape}")
  mean = k_st @ cho_solve((chol, True), y.astype(k.dtype))
  half = jax.scipy.linalg.solve_triangular(chol, k_st.T, lower=True)
  if k_ss.ndim == 1:
    return mean, k_ss - jnp.sum(half**2, axis=0)
  return mean, k_ss - half.T @ half
