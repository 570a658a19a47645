"""GP self-distillation closed forms against explicit Bayesian updates, one round at a time."""

import jax
import numpy as np
import pytest
import scipy.linalg

from kdjax.theory import gp
from tests._helpers import relative_error as rel_err


def rbf(a, b, scale=1.5, length=0.7):
  return scale * np.exp(-0.5 * ((a[:, None] - b[None]) ** 2).sum(-1) / length**2)


def problem(seed, n=18, n_test=6):
  rng = np.random.default_rng(seed)
  x, xt = rng.uniform(-2, 2, size=(n, 2)), rng.uniform(-2, 2, size=(n_test, 2))
  y = np.sin(x[:, 0]) + 0.3 * rng.normal(size=n)
  return rbf(x, x), rbf(xt, x), rbf(xt, xt), y


def condition(mean, cov, train, y, noise):
  """One Gaussian update of a joint prior N(mean, cov) on noisy observations of `train`."""
  gain = scipy.linalg.solve(
    cov[np.ix_(train, train)] + noise * np.eye(len(train)), cov[train], assume_a="pos"
  ).T
  return mean + gain @ (y - mean[train]), cov - gain @ cov[train]


@pytest.mark.parametrize("noise", [0.01, 0.3])
def test_distribution_centric_equals_repeated_conditioning_and_noise_over_t(noise):
  K, k_test, k_tt, y = problem(0)
  n, steps = len(y), 12
  joint = np.block([[K, k_test.T], [k_test, k_tt]])
  train = np.arange(n)
  mean, cov = np.zeros(len(joint)), joint
  with jax.enable_x64(True):
    on_train = gp.gpr_distribution_centric(K, y, noise=noise, steps=steps)
    on_test = gp.gpr_distribution_centric(
      K, y, noise=noise, steps=steps, k_test=k_test, k_test_test=k_tt
    )
  for t in range(steps):
    mean, cov = condition(mean, cov, train, y, noise)  # previous posterior is the prior
    assert rel_err(on_train.mean[t], mean[:n]) < 1e-8
    assert rel_err(on_train.cov[t], cov[:n, :n]) < 1e-7
    assert rel_err(on_test.mean[t], mean[n:]) < 1e-8
    assert rel_err(on_test.cov[t], cov[n:, n:]) < 1e-8
    # One GP regression with noise / (t + 1).
    single_mean, single_cov = condition(np.zeros(len(joint)), joint, train, y, noise / (t + 1))
    assert rel_err(mean, single_mean) < 1e-8 and rel_err(cov, single_cov) < 1e-7


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_data_centric_equals_fresh_gp_per_round(alpha):
  K, k_test, k_tt, y = problem(1)
  n, steps, noise = len(y), 15, 0.1
  joint = np.block([[K, k_test.T], [k_test, k_tt]])
  with jax.enable_x64(True):
    on_train = gp.gpr_data_centric(K, y, noise=noise, steps=steps, alpha=alpha)
    on_test = gp.gpr_data_centric(
      K, y, noise=noise, steps=steps, alpha=alpha, k_test=k_test, k_test_test=k_tt
    )
  targets = y
  for t in range(steps):
    mean, cov = condition(np.zeros(len(joint)), joint, np.arange(n), targets, noise)
    assert rel_err(on_train.mean[t], mean[:n]) < 1e-8
    assert rel_err(on_test.mean[t], mean[n:]) < 1e-8
    assert rel_err(on_train.cov[t], cov[:n, :n]) < 1e-7
    assert rel_err(on_test.cov[t], cov[n:, n:]) < 1e-8
    targets = alpha * y + (1 - alpha) * mean[:n]


def test_matrix_targets_and_bad_input():
  K, k_test, k_tt, y = problem(2)
  Y = np.stack([y, -2 * y], axis=1)
  with jax.enable_x64(True):
    out = gp.gpr_distribution_centric(K, Y, noise=0.2, steps=3)
    single = gp.gpr_distribution_centric(K, y, noise=0.2, steps=3)
  assert out.mean.shape == (3, len(y), 2) and out.cov.shape == (3, len(y), len(y))
  np.testing.assert_allclose(out.mean[..., 1], -2 * np.asarray(single.mean), rtol=1e-10)
  with pytest.raises(ValueError, match="noise must be"):
    gp.gpr_data_centric(K, y, noise=-1.0, steps=2)
  with pytest.raises(ValueError, match="k_test and k_test_test"):
    gp.gpr_data_centric(K, y, noise=0.1, steps=2, k_test=k_test)
  with pytest.raises(ValueError, match="k_test_test must have shape"):
    gp.gpr_distribution_centric(K, y, noise=0.1, steps=2, k_test=k_test, k_test_test=K)
  with pytest.raises(ValueError, match="alpha"):
    gp.gpr_data_centric(K, y, noise=0.1, steps=2, alpha=2.0)
  with pytest.raises(ValueError, match="y must have shape"):
    gp.gpr_distribution_centric(K, y[:-1], noise=0.1, steps=2)
  # A test covariance the training points over-explain: the joint prior is not PSD.
  joint = r"\[\[K, k_test\^T\], \[k_test, k_test_test\]\] must be positive semi-definite"
  for fn in (gp.gpr_data_centric, gp.gpr_distribution_centric):
    with pytest.raises(ValueError, match=joint):
      fn(K, y, noise=0.1, steps=2, k_test=k_test, k_test_test=0.5 * k_tt)
