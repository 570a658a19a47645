"""kdjax's collapse-round bounds for Mobahi et al.'s budget rounds, against iterated solves.

Each bound is checked to hold on every round of the numerical iterates and to be attained
(or nearly) on a spectrum built for it, so a wrong formula fails one way or the other.
"""

import math

import jax
import numpy as np
import pytest

from kdjax.theory import collapse, kernel_distillation
from kdjax.theory.problems import rbf_kernel


def constrained(K, y, eps, steps):
  with jax.enable_x64(True):
    return kernel_distillation.krr_self_distillation_constrained(K, y, eps=eps, steps=steps)


def numeric_collapse(K, y, eps, steps):
  return constrained(K, y, eps, steps).collapse_round


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


def kernel_and_labels(case, rng, n=30):
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
  return K, y


@pytest.mark.parametrize("case", ["flat", "spread", "rank_deficient", "rbf_wide", "rbf_narrow"])
def test_numerical_collapse_round_lies_within_the_bounds(case):
  K, y = kernel_and_labels(case, np.random.default_rng(1))
  for eps in (0.08, 0.2, 0.5):
    bounds = collapse.collapse_round_bounds(K, y, eps=eps)
    assert bounds.upper <= math.ceil(bounds.ratio**2)  # kappa-free, whatever the spectrum
    found = numeric_collapse(K, y, eps, int(min(bounds.upper, bounds.lower + 60)))
    assert found is not None and bounds.lower <= found <= bounds.upper, (eps, bounds, found)


@pytest.mark.parametrize("case", ["spread", "rank_deficient"])
def test_every_round_obeys_the_round_bounds(case):
  """c_t and ||y_t|| of each iterated round lie within round_bounds (null part at round 1)."""
  K, y = kernel_and_labels(case, np.random.default_rng(2))
  n, eps = len(y), 0.03
  values, vectors = np.linalg.eigh(K)
  positive = values > 1e-12 * values.max()
  d_min, d_max = values[positive].min(), values[positive].max()
  run = constrained(K, y, eps, 40)
  assert run.collapse_round is not None and run.collapse_round > 5
  previous, s = y, math.sqrt(n * eps)
  for t in range(run.collapse_round - 1):
    null_ratio = np.linalg.norm((vectors.T @ previous)[~positive]) / s
    if t == 0:
      assert (null_ratio > 0.1) == (case == "rank_deficient")
    b = collapse.round_bounds(np.linalg.norm(previous) / s, null_ratio, d_min, d_max)
    current = np.asarray(run.predictions[t])
    ratio = np.linalg.norm(current) / s
    assert b.reg_lower * (1 - 1e-9) <= float(run.regs[t]) <= b.reg_upper * (1 + 1e-9), t
    assert b.ratio_lower - 1e-9 <= ratio <= b.ratio_upper_budget + 1e-9, t
    assert ratio <= b.ratio_upper_condition + 1e-9, t
    previous = current


def test_multiplier_bounds_are_attained_in_an_eigenspace():
  """Labels along the d_max (d_min) eigenvector give c_1 = d_max/(r-1) (d_min/(r-1))."""
  rng = np.random.default_rng(3)
  values = np.exp(np.linspace(-2.0, 2.0, 8))
  K = spectrum_kernel(rng, values)
  vectors = np.linalg.eigh(K)[1]
  eps = 0.05
  for column, side in ((-1, "reg_upper"), (0, "reg_lower")):
    y = 3.7 * math.sqrt(8 * eps) * vectors[:, column]
    b = collapse.round_bounds(3.7, 0.0, values.min(), values.max())
    assert float(constrained(K, y, eps, 1).regs[0]) == pytest.approx(getattr(b, side), rel=1e-8)


def test_null_space_round_bounds_are_attained():
  """K = diag(2, 0), labels with a null part nu: c_1 = d m / (rho - m), r_1 = rho - m."""
  K, y, eps = np.diag([2.0, 0.0]), np.array([5.5, 0.6]), 0.5  # n eps = 1: rho 5.5, nu 0.6
  b = collapse.round_bounds(np.linalg.norm(y), 0.6, 2.0, 2.0)
  run = constrained(K, y, eps, 8)
  assert float(run.regs[0]) == pytest.approx(b.reg_lower, rel=1e-8)
  assert b.ratio_upper_condition == pytest.approx(5.5 - 0.8, rel=1e-12)
  assert np.linalg.norm(run.predictions[0]) == pytest.approx(b.ratio_upper_condition, rel=1e-8)
  bounds = collapse.collapse_round_bounds(K, y, eps=eps)
  # r: 5.53 -> 4.7 -> 3.7 -> 2.7 -> 1.7 -> 0.7; keeping nu after round 1 would add a round
  assert run.collapse_round == bounds.upper == bounds.lower == 6


def test_lower_bound_is_attained_with_a_large_condition_number():
  """Labels in one eigenspace lose exactly sqrt(n eps) a round: T = ceil(r_0), kappa 1e4."""
  rng = np.random.default_rng(4)
  values = np.exp(np.linspace(0.0, math.log(1e4), 10))
  K = spectrum_kernel(rng, values)
  y = np.linalg.eigh(K)[1][:, 4] * 2.0
  for eps in (0.011, 0.05, 0.13):
    bounds = collapse.collapse_round_bounds(K, y, eps=eps)
    assert bounds.condition == pytest.approx(1e4, rel=1e-4)
    assert numeric_collapse(K, y, eps, bounds.lower + 2) == bounds.lower
    assert bounds.lower < bounds.upper


@pytest.mark.parametrize("levels,separation", [(3, 1e5), (4, 1e4)])
def test_upper_bound_is_attained_on_far_apart_eigenvalues(levels, separation):
  """Labels spread over eigenvalues far apart: each round removes one level, T = ceil(r_0^2)."""
  K = np.diag(separation ** np.arange(levels, dtype=np.float64))
  y = math.sqrt(0.95) * np.ones(levels)  # n eps = 1: r_0^2 = 0.95 levels
  eps = 1.0 / levels
  bounds = collapse.collapse_round_bounds(K, y, eps=eps)
  assert bounds.upper == math.ceil(0.95 * levels) == levels
  assert numeric_collapse(K, y, eps, levels + 2) == bounds.upper
  assert bounds.lower == math.ceil(math.sqrt(0.95 * levels)) < bounds.upper


def test_condition_number_bound_tightens_the_budget_bound():
  """For kappa small against r_0 the varphi iterates beat ceil(r_0^2) and the linear form."""
  rng = np.random.default_rng(5)
  K = spectrum_kernel(rng, np.linspace(1.0, 1.5, 12))
  y = rng.normal(size=12)
  eps = 0.02 * np.mean(y**2)
  bounds = collapse.collapse_round_bounds(K, y, eps=eps)
  linear = 1 + math.ceil(bounds.condition * (bounds.ratio - 1))
  assert bounds.upper < min(math.ceil(bounds.ratio**2), linear)
  assert bounds.lower <= numeric_collapse(K, y, eps, int(bounds.upper)) <= bounds.upper


def test_closed_form_remainder_after_the_iteration_cap(monkeypatch):
  """Past _MAX_ITERATED_ROUNDS the rest is bounded in closed form: still valid, still exact
  for K = cI (r_0 ~ 1.2e5 needs more rounds than the cap)."""
  y = np.array([3.0, 4.0, 12.0])  # ||y|| = 13
  eps = (13.0 / 123456.7) ** 2 / 3
  bounds = collapse.collapse_round_bounds(2.5 * np.eye(3), y, eps=eps)
  assert bounds.lower == bounds.upper == 123457
  rng = np.random.default_rng(6)
  K, y = spectrum_kernel(rng, np.linspace(1.0, 3.0, 8)), rng.normal(size=8)
  eps = 0.01 * np.mean(y**2)
  full = collapse.collapse_round_bounds(K, y, eps=eps)
  monkeypatch.setattr(collapse, "_MAX_ITERATED_ROUNDS", 5)
  capped = collapse.collapse_round_bounds(K, y, eps=eps)
  found = numeric_collapse(K, y, eps, int(full.upper))
  assert full.lower <= found <= full.upper < capped.upper <= math.ceil(full.ratio**2)


def test_bad_input():
  with pytest.raises(ValueError, match="eps must be"):
    collapse.collapse_round_bounds(np.eye(3), np.ones(3), eps=0.0)
  with pytest.raises(ValueError, match="y must have shape"):
    collapse.collapse_round_bounds(np.eye(3), np.ones(4), eps=0.1)
  with pytest.raises(ValueError, match="positive semi-definite"):
    collapse.collapse_round_bounds(
      np.eye(3) - 2 * np.eye(3)[0:1].T @ np.eye(3)[0:1], np.ones(3), eps=0.1
    )
  with pytest.raises(ValueError, match="null space"):  # y's null part alone exceeds eps
    collapse.collapse_round_bounds(np.diag([1.0, 0.0]), np.array([1.0, 1.0]), eps=0.4)
  with pytest.raises(ValueError, match="ratio must be"):
    collapse.round_bounds(1.0, 0.0, 1.0, 2.0)
  with pytest.raises(ValueError, match="null_ratio must be"):
    collapse.round_bounds(2.0, 1.0, 1.0, 2.0)
  with pytest.raises(ValueError, match="d_min <= d_max"):
    collapse.round_bounds(2.0, 0.0, 3.0, 2.0)
