"""Tests of kdjax.diffusion.metrics against scipy / NumPy references."""

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats

from kdjax.data import toy2d
from kdjax.diffusion import metrics


def _u_statistic(x, y):
  dxy = scipy.spatial.distance.cdist(x, y)
  dxx = scipy.spatial.distance.cdist(x, x)
  dyy = scipy.spatial.distance.cdist(y, y)
  n, m = len(x), len(y)
  return 2 * dxy.mean() - dxx.sum() / (n * (n - 1)) - dyy.sum() / (m * (m - 1))


def test_energy_distance_u_statistic_matches_cdist():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1500, 3))  # > one chunk of 1024 rows
  y = rng.normal(size=(70, 3)) + 0.3
  assert metrics.energy_distance(x, y) == pytest.approx(_u_statistic(x, y), rel=1e-9, abs=1e-12)
  assert metrics.energy_distance(x.astype(np.float32), y) == pytest.approx(
    _u_statistic(x.astype(np.float32).astype(np.float64), y), rel=1e-9
  )


def test_energy_distance_v_statistic_is_scipy_squared_in_1d():
  rng = np.random.default_rng(1)
  u, v = rng.normal(size=300), rng.exponential(size=200)
  assert metrics.energy_distance(u, v, unbiased=False) == pytest.approx(
    scipy.stats.energy_distance(u, v) ** 2, rel=1e-9
  )


def test_energy_distance_errors():
  with pytest.raises(ValueError, match="same dimension"):
    metrics.energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="at least 2"):
    metrics.energy_distance(np.zeros((1, 2)), np.zeros((3, 2)))
  with pytest.raises(ValueError, match="non-finite"):
    metrics.energy_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_mode_coverage_counts_points_near_each_mode():
  modes = toy2d.MODES
  x = np.concatenate([modes[:4] + 0.1, modes[:2] + 0.6, [[0.0, 0.0]]])
  within, share = metrics.mode_coverage(x, modes)
  assert within == pytest.approx(4 / 7)
  np.testing.assert_allclose(share, [1 / 7] * 4 + [0] * 4)


def test_frechet_distance_matches_symmetric_square_root_formula():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
  b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.5
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  r1 = scipy.linalg.sqrtm(s1).real  # tr (s1 s2)^1/2 = tr (s1^1/2 s2 s1^1/2)^1/2
  trace = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)))
  ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace
  assert metrics.frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
  assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.slow
def test_digits_classifier_features_separate_real_from_noise():
  from kdjax.data import load

  ds = load("digits")
  clf = metrics.digits_classifier()
  assert clf.score(ds.x_test.reshape(360, -1), ds.y_test) >= 0.97
  images = toy2d.digits_images()
  real = metrics.digits_fid(images[:900], images[900:])
  noise = metrics.digits_fid(np.random.default_rng(0).uniform(size=(900, 8, 8)), images[900:])
  blurred = metrics.digits_fid(np.clip(images[:900] + 0.2, 0, 1), images[900:])
  assert real < 0.2 * blurred and blurred < noise
