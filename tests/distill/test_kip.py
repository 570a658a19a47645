"""Tests of kdjax.distill.kip against float64 NumPy KRR, and of its sharded step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from kdjax.distill import kip


def poly_kernel(a, b):
  """(1 + <a, b>/d)^2 on flattened inputs: a simple positive-definite kernel."""
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  return (1.0 + a @ b.T / a.shape[1]) ** 2


def np_poly_kernel(a, b):
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  return (1.0 + a @ b.T / a.shape[1]) ** 2


def np_krr_matrix(xs, xt, reg):
  """A = K_ts (K_ss + reg tr(K_ss)/m I)^-1 in float64."""
  kss, kts = np_poly_kernel(xs, xs), np_poly_kernel(xt, xs)
  m = len(xs)
  return kts @ np.linalg.inv(kss + reg * np.trace(kss) / m * np.eye(m))


def problem(seed=0, m=6, b=32, c=3):
  rng = np.random.default_rng(seed)
  xs = rng.normal(size=(m, 4, 4, 1))
  xt = rng.normal(size=(b, 4, 4, 1))
  ys = np.eye(c)[np.arange(m) % c] - 0.1
  yt = np.eye(c)[rng.integers(0, c, b)] - 0.1
  return xs, ys, xt, yt


def f32(*arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


def test_kip_loss_matches_float64_numpy():
  xs, ys, xt, yt = problem()
  expected = 0.5 * np.mean((yt - np_krr_matrix(xs, xt, 1e-3) @ ys) ** 2)
  got = kip.kip_loss(poly_kernel, *f32(xs, ys, xt, yt), reg=1e-3)
  np.testing.assert_allclose(got, expected, rtol=2e-4)


@pytest.mark.parametrize("learn_images,learn_labels", [(True, True), (True, False), (False, True)])
def test_step_decreases_loss_and_updates_only_learned_parts(learn_images, learn_labels):
  xs, ys, xt, yt = f32(*problem(1))
  init, step = kip.make_kip_step(
    poly_kernel, optax.adam(1e-2), reg=1e-3, learn_images=learn_images, learn_labels=learn_labels
  )
  state = init(xs, ys)
  losses = []
  for _ in range(20):
    state, metrics = step(state, xt, yt)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.9 * losses[0]
  assert int(state.step) == 20
  assert np.array_equal(np.asarray(state.x), np.asarray(xs)) != learn_images
  assert np.array_equal(np.asarray(state.y), np.asarray(ys)) != learn_labels


def test_sharded_step_equals_unsharded_step():
  assert len(jax.devices()) == 8
  mesh = Mesh(np.array(jax.devices()), ("data",))
  xs, ys, xt, yt = f32(*problem(2, b=64))
  results = []
  for m in (None, mesh):
    init, step = kip.make_kip_step(
      poly_kernel, optax.adam(1e-2), reg=1e-3, learn_labels=True, mesh=m
    )
    state = init(xs, ys)
    for _ in range(3):
      state, metrics = step(state, xt, yt)
    results.append((np.asarray(state.x), np.asarray(state.y), float(metrics["loss"])))
  (x0, y0, l0), (x1, y1, l1) = results
  np.testing.assert_allclose(x1, x0, atol=1e-5)
  np.testing.assert_allclose(y1, y0, atol=1e-5)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)


def test_label_solve_is_the_least_squares_solution():
  xs, _, xt, yt = problem(3)
  a = np_krr_matrix(xs, xt, 1e-2)
  expected = np.linalg.lstsq(a, yt, rcond=None)[0]
  got = kip.label_solve(poly_kernel, *f32(xs, xt, yt), reg=1e-2)
  np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
  # Optimality: the gradient of the KIP loss with respect to the labels vanishes there.
  with jax.enable_x64(True):
    grad = jax.grad(
      lambda y: kip.kip_loss(
        poly_kernel, jnp.asarray(xs), y, jnp.asarray(xt), jnp.asarray(yt), reg=1e-2
      )
    )(jnp.asarray(expected))
  assert np.abs(np.asarray(grad)).max() < 1e-10


def test_krr_accuracy_matches_numpy():
  xs, ys, xt, yt = problem(4)
  labels = yt.argmax(1)
  expected = np.mean((np_krr_matrix(xs, xt, 1e-3) @ ys).argmax(1) == labels)
  got = kip.krr_accuracy(poly_kernel, *f32(xs, ys, xt), jnp.asarray(labels), reg=1e-3)
  np.testing.assert_allclose(got, expected)


def test_init_support_per_class_and_errors():
  labels = np.repeat(np.arange(3), 4)
  x = np.arange(12.0).reshape(12, 1, 1, 1)
  xs, ys = kip.init_support(x, labels, per_class=2, num_classes=3, seed=0)
  assert xs.shape == (6, 1, 1, 1) and ys.shape == (6, 3)
  np.testing.assert_array_equal(ys.argmax(1), [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(labels[xs[:, 0, 0, 0].astype(int)], [0, 0, 1, 1, 2, 2])
  with pytest.raises(ValueError, match="per_class must be in"):
    kip.init_support(x, labels, per_class=5, num_classes=3, seed=0)


def test_bad_step_arguments():
  with pytest.raises(ValueError, match="at least one of learn_images"):
    kip.make_kip_step(poly_kernel, optax.adam(1e-2), reg=1e-3, learn_images=False)
  with pytest.raises(ValueError, match="data_axis"):
    kip.make_kip_step(
      poly_kernel, optax.adam(1e-2), reg=1e-3, mesh=Mesh(np.array(jax.devices()), ("batch",))
    )
