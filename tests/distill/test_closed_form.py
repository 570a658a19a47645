"""Closed-form KRR distillation (Chen, Huang & Weng, 2024) against float64 NumPy ridge."""

import jax
import numpy as np
import pytest

from kdjax import data
from kdjax.distill import closed_form


def _ridge_numpy(phi, y, reg):
  """Independent float64 reference: primal ridge weights."""
  return np.linalg.solve(phi.T @ phi + reg * np.eye(phi.shape[1]), phi.T @ y)


@pytest.fixture(scope="module")
def mnist5k():
  ds = data.load("mnist5k")
  x_train = data.standardize_images(ds.x_train).reshape(len(ds.x_train), -1)
  x_test = data.standardize_images(ds.x_test).reshape(len(ds.x_test), -1)
  y = data.regression_targets(ds.y_train, 10, offset=0.0)  # minus 1/c would have rank 9
  return x_train.astype(np.float64), y.astype(np.float64), x_test.astype(np.float64)


@pytest.mark.parametrize("support_reg", [0.0, 3.0])
def test_linear_kernel_mnist5k_one_point_per_class(mnist5k, support_reg):
  x, y, x_test = mnist5k
  reg = 10.0
  with jax.enable_x64(True):
    support, labels = closed_form.distill(x, y, reg=reg, support_reg=support_reg)
    support, labels = np.asarray(support), np.asarray(labels)
  assert support.shape == (10, 784) and labels.shape == (10, 10)
  full = x_test @ _ridge_numpy(x, y, reg)
  distilled = (
    x_test @ _ridge_numpy(support, labels, support_reg)
    if support_reg
    else (x_test @ np.linalg.pinv(support) @ labels)
  )
  np.testing.assert_allclose(distilled, full, atol=1e-6, rtol=0)
  if support_reg == 0:
    np.testing.assert_allclose(labels, np.eye(10), atol=1e-12)
  # The full-data ridge model is not trivial: it classifies the held-out digits.
  assert np.mean(np.argmax(full, 1) == data.load("mnist5k").y_test) > 0.8


def test_random_feature_kernel_preimages():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 6, 6, 1))
  y = np.eye(4)[rng.integers(0, 4, 300)] - 0.1
  x_test = rng.normal(size=(50, 6, 6, 1))
  with jax.enable_x64(True):
    rf = closed_form.random_features(jax.random.key(1), 36, 20, dtype=np.float64)
    phi = np.asarray(rf(x))
    support_features, labels = closed_form.distill(phi, y, reg=0.5, support_reg=0.1)
    images = np.asarray(rf.preimage(support_features, (6, 6, 1)))
  assert images.shape == (4, 6, 6, 1)
  # Features of the preimages, recomputed independently in NumPy.
  z = images.reshape(4, -1) @ np.asarray(rf.matrix)
  phi_support = np.where(z >= 0, z, 0.2 * z) / np.sqrt(20)
  np.testing.assert_allclose(phi_support, support_features, atol=1e-9)
  z_test = x_test.reshape(50, -1) @ np.asarray(rf.matrix)
  phi_test = np.where(z_test >= 0, z_test, 0.2 * z_test) / np.sqrt(20)
  full = phi_test @ _ridge_numpy(phi, y, 0.5)
  distilled = phi_test @ _ridge_numpy(phi_support, np.asarray(labels), 0.1)
  np.testing.assert_allclose(distilled, full, atol=1e-6, rtol=0)


def test_ridge_weights_primal_equals_dual():
  rng = np.random.default_rng(2)
  phi, y = rng.normal(size=(5, 9)), rng.normal(size=(5, 3))
  with jax.enable_x64(True):
    dual = np.asarray(closed_form.ridge_weights(phi, y, reg=0.3))
    primal = np.asarray(closed_form.ridge_weights(phi[:, :4], y, reg=0.3))  # d <= n
  np.testing.assert_allclose(dual, _ridge_numpy(phi, y, 0.3), atol=1e-10)
  np.testing.assert_allclose(primal, _ridge_numpy(phi[:, :4], y, 0.3), atol=1e-10)


def test_bad_input():
  with pytest.raises(ValueError, match="num_features"):
    closed_form.random_features(jax.random.key(0), 4, 5)
  with pytest.raises(ValueError, match="support_reg"):
    closed_form.distill(np.ones((3, 2)), np.ones((3, 2)), reg=1.0, support_reg=-1.0)
  with pytest.raises(ValueError, match="rank"):
    closed_form.distill(np.ones((6, 3)), np.ones((6, 2)), reg=1.0)
  with pytest.raises(ValueError, match="labels must be"):
    closed_form.distill(np.eye(4), np.eye(4)[:, :2], reg=1.0, labels=np.eye(3))
