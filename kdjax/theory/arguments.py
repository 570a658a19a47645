"""Argument checks of the :mod:`kdjax.theory` modules: targets, test kernels, label weights,
step counts. Kernel matrices are checked by :func:`kdjax.checks.check_kernel` (symmetric and
PSD, with the tolerances every kdjax module uses).

Value checks (symmetry, PSD, finiteness) run on concrete arrays only; under ``jax.jit``
(traced arrays) only shapes are checked, as each function's docstring says.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from kdjax import checks


def check_joint_kernel(K, k_test, k_test_test) -> None:
  """Raises unless the joint prior covariance of training and test points is symmetric PSD.

  ``[[K, k_test^T], [k_test, k_test_test]]`` (shapes checked by the caller) goes through
  :func:`kdjax.checks.check_kernel` when all three are concrete; under ``jax.jit`` nothing is
  checked.
  """
  if checks.is_concrete(K, k_test, k_test_test):
    joint = jnp.block([[K, k_test.T], [k_test, k_test_test]])
    checks.check_kernel("[[K, k_test^T], [k_test, k_test_test]]", joint)


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
