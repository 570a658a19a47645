"""Input checks shared by the KRR solvers: shapes, symmetry, positive definiteness.

Checks that need values run only on concrete arrays (eagerly); under `jax.jit` the
inputs are tracers and only the shape checks run (see `kdjax.krr` for what happens then).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "is_concrete",
  "symmetry_tolerance",
  "check_square",
  "check_symmetric",
  "check_targets",
  "check_reg",
  "not_positive_definite",
]


def is_concrete(*arrays) -> bool:
  """True when no argument is a tracer, i.e. its values can be inspected."""
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def symmetry_tolerance(dtype) -> float:
  """Relative symmetry tolerance `max(1e-6, 64 eps)`: 1e-6 in float64, 7.6e-6 in float32."""
  return max(1e-6, 64 * float(jnp.finfo(dtype).eps))


def check_square(name: str, k: jax.typing.ArrayLike) -> jax.Array:
  k = jnp.asarray(k)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f"{name} must be a square [n, n] matrix, got {k.shape}")
  if not jnp.issubdtype(k.dtype, jnp.floating):
    k = k.astype(jnp.result_type(float))
  return k


def check_symmetric(name: str, k: jax.Array) -> None:
  r"""Raises unless `max|K - K^T| <= symmetry_tolerance * max|K|` (concrete `K` only).

  Also rejects NaN or infinite entries, which no solver can use.
  """
  if not is_concrete(k):
    return
  a = k if isinstance(k, np.ndarray) else np.asarray(k)
  scale = asym = 0.0
  bad = 0
  for lo in range(0, a.shape[0], 1024):  # row blocks: O(1024 n) temporary memory
    rows, cols = a[lo : lo + 1024], a[:, lo : lo + 1024].T
    bad += int(np.sum(~np.isfinite(rows)))
    scale = max(scale, float(np.max(np.abs(rows), initial=0.0)))
    asym = max(asym, float(np.max(np.abs(rows - cols), initial=0.0)))
  if bad:
    raise ValueError(f"{name} has {bad} NaN or infinite entries")
  rtol = symmetry_tolerance(a.dtype)
  if asym > rtol * scale:
    raise ValueError(
      f"{name} is not symmetric: max|K - K^T| = {asym:.3g} > {rtol:.2g} * max|K| "
      f"(= {rtol * scale:.3g}); a kernel matrix must be symmetric"
    )


def check_targets(y: jax.typing.ArrayLike, n: int, dtype) -> jax.Array:
  y = jnp.asarray(y)
  if y.ndim not in (1, 2) or y.shape[0] != n:
    raise ValueError(f"y_train must be [n] or [n, c] with n = {n}, got {y.shape}")
  return y.astype(dtype)


def check_reg(reg) -> None:
  if is_concrete(reg) and not float(reg) >= 0:
    raise ValueError(f"reg must be >= 0, got {reg}")


def not_positive_definite(k: jax.Array, reg) -> ValueError:
  r"""The error for `K + reg tr(K)/n I` that is not positive definite, with a reg to try.

  The suggested reg makes the smallest eigenvalue of the regularised matrix about
  `|lambda_min(K)|`, `reg' = 2 |lambda_min(K)| n / tr(K)` (when `tr(K) > 0`), and at
  least `10 reg` and `100 eps` of `K`'s dtype (rounding makes a float32 Cholesky fail on
  matrices that are positive definite in exact arithmetic).
  """
  floor = max(10 * float(reg), 100 * float(jnp.finfo(k.dtype).eps))
  a = np.asarray(k, np.float64)
  n = a.shape[0]
  lam_min = float(np.linalg.eigvalsh((a + a.T) / 2)[0])
  trace = float(np.trace(a))
  hint = "; the kernel's trace is not positive, so no reg helps: check the kernel"
  if trace > 0:
    hint = f"; try reg >= {max(2 * abs(lam_min) * n / trace, floor):.3g}"
  return ValueError(
    f"k_train_train + reg * tr(K) / n * I is not positive definite with reg = {reg} "
    f"(smallest eigenvalue of K: {lam_min:.3g}, ridge added: "
    f"{float(reg) * trace / n:.3g}){hint}, or use float64"
  )
