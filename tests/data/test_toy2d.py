"""Tests of kdjax.data.toy2d: the exact 2-D distributions and digits in [0, 1]."""

import numpy as np
import pytest
from sklearn.datasets import make_moons

from kdjax.data import toy2d


def test_eight_gaussians_is_the_equal_mixture_with_std_0_1():
  x = toy2d.sample("eight_gaussians", 40000, seed=3).astype(np.float64)
  assert x.dtype == np.float64 and x.shape == (40000, 2)
  k = np.arange(8)
  modes = 2.0 * np.stack([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)], 1)
  np.testing.assert_allclose(toy2d.MODES, modes, atol=1e-12)
  nearest = np.argmin(np.linalg.norm(x[:, None] - modes[None], axis=-1), axis=1)
  freq = np.bincount(nearest, minlength=8) / len(x)
  np.testing.assert_allclose(freq, 1 / 8, atol=0.01)  # ~4.5 sigma of a binomial
  for j in range(8):
    r = x[nearest == j] - modes[j]
    np.testing.assert_allclose(r.mean(0), 0.0, atol=0.01)
    np.testing.assert_allclose(r.std(0), 0.1, rtol=0.05)
  np.testing.assert_array_equal(
    toy2d.sample("eight_gaussians", 10, seed=3), toy2d.sample("eight_gaussians", 10, seed=3)
  )
  assert not np.array_equal(
    toy2d.sample("eight_gaussians", 10, seed=3), toy2d.sample("eight_gaussians", 10, seed=4)
  )


def test_two_moons_is_make_moons_noise_0_05_unscaled():
  x = toy2d.sample("two_moons", 501, seed=7)
  assert x.dtype == np.float32
  np.testing.assert_array_equal(
    x, make_moons(501, noise=0.05, random_state=7)[0].astype(np.float32)
  )


def test_bad_names_and_sizes():
  with pytest.raises(ValueError, match="dataset name must be one of"):
    toy2d.sample("three_moons", 10)
  with pytest.raises(ValueError, match="n must be >= 1"):
    toy2d.sample("two_moons", 0)


def test_digits_images_in_unit_interval():
  x = toy2d.digits_images()
  assert x.shape == (1797, 8, 8) and x.dtype == np.float32
  assert x.min() == 0.0 and x.max() == 1.0
  from sklearn.datasets import load_digits

  np.testing.assert_allclose(np.sort(x.ravel()), np.sort(load_digits().images.ravel() / 16.0))
