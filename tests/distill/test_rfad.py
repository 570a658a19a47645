"""RFAD (kdjax.distill.rfad): random-feature ConvNet NNGP, KRR forms, loss, sharded step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from kdjax import data
from kdjax.distill import rfad


def test_random_features_converge_to_the_analytic_convnet_nngp():
  """C M grows with both the width (finite-width bias ~ 1/width) and the model count C."""
  x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
  errors = []
  for width, num_models in ((8, 1), (64, 4), (256, 16)):
    network = rfad.convnet(width=width, depth=2)
    exact = np.asarray(network[2](x, x, get="nngp"))
    # One compiled program per width (op by op, the 21 initialisations dominate the test).
    features = jax.jit(lambda k, x: rfad.random_features(network, k, x, num_models=num_models))
    phi = np.asarray(features(jax.random.key(1), x))
    assert phi.shape == (4, num_models * width)  # 6x6 -> 3x3 -> 1x1 pixels
    errors.append(np.linalg.norm(phi @ phi.T - exact) / np.linalg.norm(exact))
  assert errors[2] < 0.05, errors
  assert errors[2] < errors[1] < errors[0], errors


def test_dual_and_primal_krr_agree():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    # Both forms in one compiled program per shape (op by op compiles every op).
    both = jax.jit(
      lambda *a: [rfad.krr_predict(*a, reg=0.1, form=form) for form in ("dual", "primal")]
    )
    for m, f in ((5, 12), (12, 5)):
      phi_s, phi_t, y = rng.normal(size=(m, f)), rng.normal(size=(7, f)), rng.normal(size=(m, 3))
      dual, primal = map(np.asarray, both(phi_t, phi_s, y))
      lam = 0.1 * np.trace(phi_s @ phi_s.T) / m
      reference = phi_t @ phi_s.T @ np.linalg.solve(phi_s @ phi_s.T + lam * np.eye(m), y)
      np.testing.assert_allclose(dual, reference, rtol=1e-9, atol=1e-10)
      np.testing.assert_allclose(primal, reference, rtol=1e-9, atol=1e-10)


def test_platt_loss_matches_numpy():
  rng = np.random.default_rng(2)
  pred, y = rng.normal(size=(6, 4)).astype(np.float32), np.eye(4)[rng.integers(0, 4, 6)] - 0.1
  logits = np.exp(0.7) * pred
  logp = logits - np.log(np.sum(np.exp(logits), 1, keepdims=True))
  expected = -np.mean(logp[np.arange(6), np.argmax(y, 1)])
  got = float(rfad.rfad_loss(jnp.asarray(pred), jnp.asarray(y), loss="platt", log_scale=0.7))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert float(rfad.rfad_loss(jnp.asarray(pred), jnp.asarray(y), loss="mse")) == (
    pytest.approx(0.5 * np.mean((pred - y) ** 2), rel=1e-5)
  )


@pytest.mark.parametrize("loss", [pytest.param("mse", marks=pytest.mark.slow), "platt"])
def test_meta_gradient_matches_finite_differences(loss):
  """The gradient in the support images (and the Platt scale) equals central differences."""
  rng = np.random.default_rng(3)
  network = rfad.convnet(6, 2)
  with jax.enable_x64(True):
    x_s, x_t = rng.normal(size=(3, 4, 4, 1)), rng.normal(size=(5, 4, 4, 1))
    y_s, y_t = np.eye(3)[[0, 1, 2]] - 0.1, np.eye(3)[rng.integers(0, 3, 5)] - 0.1
    key = jax.random.key(4)

    @jax.jit
    def f(x, s):
      return rfad.meta_loss(
        network, key, x, y_s, x_t, y_t, reg=1e-2, num_models=2, loss=loss, log_scale=s
      )

    g_x, g_s = jax.grad(f, argnums=(0, 1))(jnp.asarray(x_s), 0.5)
    assert np.abs(np.asarray(g_x)).max() > 1e-6
    eps = 1e-6
    for _ in range(4):
      d = rng.normal(size=x_s.shape)
      fd = (float(f(x_s + eps * d, 0.5)) - float(f(x_s - eps * d, 0.5))) / (2 * eps)
      np.testing.assert_allclose(float(np.sum(np.asarray(g_x) * d)), fd, rtol=1e-5, atol=1e-10)
    fd_s = (float(f(x_s, 0.5 + eps)) - float(f(x_s, 0.5 - eps))) / (2 * eps)
    np.testing.assert_allclose(float(g_s), fd_s, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize(
  "loss,learn_labels", [pytest.param("mse", False, marks=pytest.mark.slow), ("platt", True)]
)
def test_steps_lower_the_loss_with_finite_gradients(digits_regression, loss, learn_labels):
  x, y, labels = digits_regression
  index = data.class_balanced_indices(labels, 1, seed=0)
  init, step = rfad.make_rfad_step(
    rfad.convnet(16, 2),
    optax.adam(0.01),
    reg=1e-4,
    num_models=2,
    seed=0,
    loss=loss,
    learn_labels=learn_labels,
  )
  state = init(x[index], y[index])
  x_t, y_t = jnp.asarray(x[:256]), jnp.asarray(y[:256])
  losses = []
  for _ in range(25):
    state, metrics = step(state, x_t, y_t)
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
  assert bool(jnp.all(jnp.isfinite(state.x))) and int(state.step) == 25
  if learn_labels:
    assert not np.allclose(np.asarray(state.y), y[index])
    assert float(state.log_scale) != 0.0
  else:
    np.testing.assert_array_equal(np.asarray(state.y), y[index])


def test_sharded_step_equals_unsharded(digits_regression):
  x, y, labels = digits_regression
  index = data.class_balanced_indices(labels, 1, seed=1)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  results = []
  for m in (None, mesh):
    init, step = rfad.make_rfad_step(
      rfad.convnet(8, 2), optax.adam(0.01), reg=1e-4, num_models=2, seed=3, mesh=m
    )
    state, metrics = step(init(x[index], y[index]), jnp.asarray(x[:64]), jnp.asarray(y[:64]))
    results.append((np.asarray(state.x), float(metrics["loss"])))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-4)


def test_bad_input():
  network = rfad.convnet(4, 1)
  with pytest.raises(ValueError, match="loss must be one of"):
    rfad.make_rfad_step(network, optax.adam(0.1), reg=1e-3, num_models=1, seed=0, loss="l1")
  with pytest.raises(ValueError, match="num_models"):
    rfad.make_rfad_step(network, optax.adam(0.1), reg=1e-3, num_models=0, seed=0)
  with pytest.raises(ValueError, match="form must be"):
    rfad.krr_predict(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 1)), reg=1.0, form="x")
