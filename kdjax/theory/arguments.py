"""Argument checks shared by the :mod:`kdjax.theory` modules.

Value checks (symmetry, PSD, finiteness) run on concrete arrays only; under ``jax.jit``
(traced arrays) only shapes are checked, as each function's docstring says.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def psd_tolerance(dtype) -> float:
  """Relative tolerance of the PSD check: ``sqrt(eps)`` of ``dtype`` (1.5e-8 in float64)."""
  return float(np.sqrt(np.finfo(dtype).eps))


def check_kernel(K, name: str = "K") -> jax.Array:
  """Returns ``K`` as an array after checking that it is a symmetric PSD square matrix.

  For concrete inputs this raises a ValueError when ``K`` is not finite, not symmetric
  (``max |K - K^T| > tol max |K|`` with ``tol`` 1e-10 in float64, 1e-5 in lower precision),
  or not PSD: its smallest eigenvalue is below ``-psd_tolerance(dtype) * max |eigenvalue|``
  (round-off negatives above that are treated as exact zeros). Under ``jax.jit`` (a traced
  ``K``) only the shape is checked; :func:`kernel_eigensystem` then turns every eigenvalue
  below that tolerance into NaN, so a non-PSD kernel gives NaN results, never plausible ones.
  """
  K = jnp.asarray(K)
  if K.ndim != 2 or K.shape[0] != K.shape[1]:
    raise ValueError(f"{name} must be a square [n, n] kernel matrix, got shape {K.shape}")
  if _is_concrete(K):
    k = np.asarray(K, dtype=np.float64)
    if not np.all(np.isfinite(k)):
      raise ValueError(f"{name} must be finite")
    scale = max(float(np.max(np.abs(k))), np.finfo(np.float64).tiny)
    tol = 1e-5 if K.dtype in (jnp.float32, jnp.bfloat16, jnp.float16) else 1e-10
    if np.max(np.abs(k - k.T)) > tol * scale:
      raise ValueError(
        f"{name} must be symmetric, max |{name} - {name}^T| = {np.max(np.abs(k - k.T)):.3g}"
      )
    values = np.linalg.eigvalsh((k + k.T) / 2) if k.size else np.zeros(1)
    tol = psd_tolerance(K.dtype) * max(float(np.max(np.abs(values))), np.finfo(np.float64).tiny)
    if values[0] < -tol:
      raise ValueError(
        f"{name} must be positive semi-definite: its smallest eigenvalue is "
        f"{values[0]:.3g}, below -{tol:.3g} (sqrt(eps) x the largest |eigenvalue|)"
      )
  return K


def check_joint_kernel(K, k_test, k_test_test) -> None:
  """Raises unless the joint prior covariance of training and test points is symmetric PSD.

  ``[[K, k_test^T], [k_test, k_test_test]]`` (shapes checked by the caller) goes through
  :func:`check_kernel` when all three are concrete; under ``jax.jit`` nothing is checked.
  """
  if all(_is_concrete(a) for a in (K, k_test, k_test_test)):
    joint = jnp.block([[K, k_test.T], [k_test, k_test_test]])
    check_kernel(joint, "[[K, k_test^T], [k_test, k_test_test]]")


def check_targets(y, n: int, name: str = "y") -> tuple[jax.Array, bool]:
  """Returns ``y`` as ``[n, m]`` and whether it was a vector ``[n]``."""
  y = jnp.asarray(y)
  if y.ndim not in (1, 2) or y.shape[0] != n:
    raise ValueError(
      f"{name} must have shape [n] or [n, m] with n = {n} (the kernel's size), got shape {y.shape}"
    )
  return (y[:, None], True) if y.ndim == 1 else (y, False)


def check_test_kernel(k_test, n: int, name: str = "k_test") -> jax.Array:
  """Checks a test-train kernel ``[n_test, n]``."""
  k_test = jnp.asarray(k_test)
  if k_test.ndim != 2 or k_test.shape[1] != n:
    raise ValueError(f"{name} must have shape [n_test, n] with n = {n}, got {k_test.shape}")
  return k_test


def check_nonnegative(value, name: str) -> float:
  """Returns ``value`` as a float after checking that it is finite and ``>= 0``."""
  value = float(value)
  if not value >= 0 or not math.isfinite(value):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
  return value


def check_alpha(alpha, name: str = "alpha") -> float:
  """Returns the label weight ``alpha`` as a float after checking it is in ``[0, 1]``."""
  alpha = float(alpha)
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(
      f"{name} (the weight of the ground-truth labels) must be in [0, 1], got {alpha!r}"
    )
  return alpha


def check_steps(steps, name: str = "steps", minimum: int = 1) -> int:
  """Returns ``steps`` as an int after checking it is an integer ``>= minimum``."""
  try:
    ok = not isinstance(steps, bool) and int(steps) == steps and steps >= minimum
  except (TypeError, ValueError, OverflowError):  # None, NaN, inf, a string
    ok = False
  if not ok:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {steps!r}")
  return int(steps)
