"""Tests of kdjax.data.preprocess against direct float64 NumPy/SciPy formulas."""

import numpy as np
import pytest
import scipy.linalg

from kdjax import data


def test_standardize_images_zero_mean_unit_mean_square():
  x = np.random.default_rng(0).uniform(size=(5, 4, 4, 3))
  z = data.standardize_images(x)
  flat = z.reshape(5, -1).astype(np.float64)
  np.testing.assert_allclose(flat.mean(1), 0.0, atol=1e-6)
  np.testing.assert_allclose((flat**2).mean(1), 1.0, rtol=1e-5)
  # Per-image: invariant to a per-image affine change of brightness/contrast.
  np.testing.assert_allclose(data.standardize_images(3.0 * x + 0.5), z, atol=1e-5)
  assert np.all(data.standardize_images(np.ones((1, 2, 2, 1))) == 0)


def test_zca_matrix_is_inverse_square_root_of_regularised_covariance():
  x = np.random.default_rng(1).normal(size=(60, 3, 3, 2)) * np.arange(1, 19).reshape(3, 3, 2)
  zca = data.fit_zca(x, strength=0.05)
  flat = data.standardize_images(x).reshape(60, -1).astype(np.float64)
  centred = flat - flat.mean(0)
  cov = centred.T @ centred / 60
  target = np.linalg.inv(scipy.linalg.sqrtm(cov + 0.05 * np.trace(cov) / 18 * np.eye(18)))
  np.testing.assert_allclose(zca.matrix, target.real, atol=1e-6)
  white = zca(x).reshape(60, -1).astype(np.float64)
  np.testing.assert_allclose(white.mean(0), 0.0, atol=1e-5)
  # Whitened covariance: eigenvalues s / (s + lambda * mean(s)) < 1, close to 1 for big s.
  eig = np.linalg.eigvalsh(white.T @ white / 60)
  assert eig.max() < 1.0 and eig.max() > 0.9
  with pytest.raises(ValueError, match="features per image"):
    zca(np.zeros((2, 4, 4, 2)))
  with pytest.raises(ValueError, match="strength"):
    data.fit_zca(x, strength=0.0)


def test_regression_targets_one_hot_minus_offset():
  y = data.regression_targets(np.array([2, 0]), 3)
  np.testing.assert_allclose(y, [[-0.1, -0.1, 0.9], [0.9, -0.1, -0.1]], rtol=1e-6)
  assert y.dtype == np.float32
  with pytest.raises(ValueError, match="labels must lie in"):
    data.regression_targets(np.array([3]), 3)
  with pytest.raises(ValueError, match="1-D integer"):
    data.regression_targets(np.array([0.5]), 3)


def test_class_balanced_indices():
  labels = np.repeat(np.arange(4), [5, 6, 7, 3])
  idx = data.class_balanced_indices(labels, 3, seed=0)
  np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(4), 3))
  assert len(set(idx.tolist())) == 12
  np.testing.assert_array_equal(idx, data.class_balanced_indices(labels, 3, seed=0))
  with pytest.raises(ValueError, match=r"per_class must be in \[1, 3\]"):
    data.class_balanced_indices(labels, 4, seed=0)
