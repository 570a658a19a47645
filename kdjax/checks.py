"""Argument checks shared across kdjax: concreteness, kernel matrices, ridges.

One module, one tolerance: the KRR solvers (`kdjax.krr`), the infinite-width dynamics
(`kdjax.kernels.predict`), the self-distillation closed forms (`kdjax.theory`) and the
losses (`kdjax.losses`) all check kernels and values through these functions. A leaf: it
imports only jax and numpy.

Checks that need values run only on concrete arrays (eagerly); under `jax.jit` the inputs
are tracers and only shapes can be checked. Callers then turn a bad kernel into NaN
outputs (never plausible numbers); `kernel_is_valid` is the traced form of
`check_kernel` for that.

Tolerances (relative, to `max|K|` and to the largest `|eigenvalue|`):
  * symmetry: `max|K - K^T| <= max(1e-6, 64 eps) max|K|` (1e-6 in float64, 7.6e-6 in
    float32), `symmetry_tolerance`;
  * PSD: the smallest eigenvalue `>= -sqrt(eps) max|lambda|` (1.5e-8 in float64, 3.5e-4 in
    float32), `psd_tolerance`; negatives above that are rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "is_concrete",
  "symmetry_tolerance",
  "psd_tolerance",
  "check_square",
  "check_symmetric",
  "check_psd",
  "check_kernel",
  "kernel_is_valid",
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


def psd_tolerance(dtype) -> float:
  """Relative PSD tolerance `sqrt(eps)` of `dtype`: 1.5e-8 in float64, 3.5e-4 in float32."""
  return float(np.sqrt(jnp.finfo(dtype).eps))


def check_square(name: str, k: jax.typing.ArrayLike) -> jax.Array:
  """Returns `k` as a floating `[n, n]` array; raises naming `name` for another shape."""
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


def check_psd(name: str, k) -> None:
  r"""Raises unless the smallest eigenvalue of `(K + K^T) / 2` is `>= -psd_tolerance *
  max|lambda|` (concrete `K` only; call `check_symmetric` first)."""
  if not is_concrete(k):
    return
  a = np.asarray(k, np.float64)
  values = np.linalg.eigvalsh((a + a.T) / 2) if a.size else np.zeros(1)
  tol = psd_tolerance(np.asarray(k).dtype) * max(
    float(np.max(np.abs(values))), np.finfo(np.float64).tiny
  )
  if values[0] < -tol:
    raise ValueError(
      f"{name} must be positive semi-definite: its smallest eigenvalue is "
      f"{values[0]:.3g}, below -{tol:.3g} (sqrt(eps) x the largest |eigenvalue|)"
    )


def check_kernel(name: str, k: jax.typing.ArrayLike) -> jax.Array:
  """`check_square`, then (concrete `k`) `check_symmetric` and `check_psd`; returns `k`."""
  k = check_square(name, k)
  check_symmetric(name, k)
  check_psd(name, k)
  return k


def kernel_is_valid(k: jax.Array, evals: jax.Array | None = None) -> jax.Array:
  """Traced form of `check_kernel`: a scalar bool, False for a kernel that is not finite,
  not symmetric, or (given its eigenvalues `evals`) not PSD, with the same tolerances.

  For jitted callers, which cannot raise: `jnp.where(kernel_is_valid(k), out, nan)`.
  """
  scale = jnp.max(jnp.abs(k), initial=0.0)
  ok = jnp.all(jnp.isfinite(k))
  ok &= jnp.max(jnp.abs(k - k.T), initial=0.0) <= symmetry_tolerance(k.dtype) * scale
  if evals is not None:
    largest = jnp.max(jnp.abs(evals), initial=0.0)
    ok &= jnp.min(evals, initial=0.0) >= -psd_tolerance(evals.dtype) * largest
  return ok


def check_targets(y: jax.typing.ArrayLike, n: int, dtype) -> jax.Array:
  """KRR targets: `y_train` `[n]` or `[n, c]`, cast to `dtype`."""
  y = jnp.asarray(y)
  if y.ndim not in (1, 2) or y.shape[0] != n:
    raise ValueError(f"y_train must be [n] or [n, c] with n = {n}, got {y.shape}")
  return y.astype(dtype)


def check_reg(reg) -> None:
  """A relative ridge `reg >= 0` (concrete only)."""
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
