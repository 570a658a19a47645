"""Mobahi et al.'s collapse-round bounds hold around the numerically found collapse round."""

import math

import jax
import numpy as np
import pytest

from kdjax.theory import collapse, krr
from kdjax.theory.problems import rbf_kernel


def numeric_collapse(K, y, eps, steps):
  with jax.enable_x64(True):
    return krr.krr_self_distillation_constrained(K, y, eps=eps, steps=steps).collapse_round


def spectrum_kernel(rng, values):
  q, _ = np.linalg.qr(rng.normal(size=(len(values), len(values))))
  K = (q * values) @ q.T
  return (K + K.T) / 2


def test_bounds_are_tight_for_a_multiple_of_the_identity():
  rng = np.random.default_rng(0)
  y = rng.normal(size=20)
  for eps in (0.03, 0.1, 0.5):
    bounds = collapse.collapse_round_bounds(2.5 * np.eye(20), y, eps=eps)
    assert bounds.condition == pytest.approx(1.0)
    assert bounds.lower == bounds.upper == numeric_collapse(2.5 * np.eye(20), y, eps, 12)
    assert bounds.lower == math.ceil(np.linalg.norm(y) / math.sqrt(20 * eps))


@pytest.mark.parametrize("case", ["flat", "spread", "rank_deficient", "rbf_wide", "rbf_narrow"])
def test_numerical_collapse_round_lies_within_the_bounds(case):
  rng = np.random.default_rng(1)
  n = 30
  if case == "flat":
    K = spectrum_kernel(rng, rng.uniform(1.0, 2.0, size=n))
  elif case == "spread":
    K = spectrum_kernel(rng, np.exp(rng.uniform(-3, 1, size=n)))
  elif case == "rank_deficient":
    K = spectrum_kernel(rng, np.r_[rng.uniform(0.5, 2.0, size=20), np.zeros(10)])
  else:
    x = rng.uniform(-1, 1, size=(n, 1))
    K = rbf_kernel(x, x, lengthscale=0.2 if case == "rbf_wide" else 0.05)
    K = (K + K.T) / 2
  y = rng.normal(size=n) + 1.0 if case[:3] != "rbf" else np.sin(3 * x[:, 0]) + 1.0
  if case == "rank_deficient":  # a small null-space part, below every budget
    null = np.linalg.eigh(K)[1][:, :10]
    y = y - 0.9 * null @ (null.T @ y)
  for eps in (0.08, 0.2, 0.5):
    bounds = collapse.collapse_round_bounds(K, y, eps=eps)
    found = numeric_collapse(K, y, eps, int(min(bounds.upper, bounds.lower + 40)))
    assert found is not None and bounds.lower <= found <= bounds.upper, (eps, bounds, found)


def test_bad_input():
  with pytest.raises(ValueError, match="eps must be"):
    collapse.collapse_round_bounds(np.eye(3), np.ones(3), eps=0.0)
  with pytest.raises(ValueError, match="y must have shape"):
    collapse.collapse_round_bounds(np.eye(3), np.ones(4), eps=0.1)
  with pytest.raises(ValueError, match="positive semi-definite"):
    collapse.collapse_round_bounds(
      np.eye(3) - 2 * np.eye(3)[0:1].T @ np.eye(3)[0:1], np.ones(3), eps=0.1
    )
