"""FRePo (kdjax.distill.frepo): readout features, online pool with resets, meta-gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import data, models
from kdjax.distill import frepo


def test_features_are_the_readout_input():
  model = models.ConvNet(num_classes=3, width=4, depth=2, normalization="none")
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8, 8, 1)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)  # jitted: op by op compiles every op
  phi, logits = jax.jit(lambda v: (frepo.features(model, v, x), model.apply(v, x)))(variables)
  dense = variables["params"]["Dense_0"]
  assert phi.shape == (5, 4 * 2 * 2)
  np.testing.assert_allclose(phi @ dense["kernel"] + dense["bias"], logits, rtol=1e-5, atol=1e-5)


def _make(pool_size=2, max_updates=2):
  model = models.ConvNet(num_classes=10, width=8, depth=2, normalization="none")
  return model, frepo.make_frepo_step(
    model,
    optax.adam(0.01),
    model_optimizer=optax.adam(1e-3),
    reg=1e-4,
    pool_size=pool_size,
    max_updates=max_updates,
    seed=0,
  )


@pytest.mark.slow
def test_meta_gradient_matches_a_reference_krr_loss(digits_regression):
  x, y, labels = digits_regression
  index = data.class_balanced_indices(labels, 1, seed=0)
  model, (init, step, init_model) = _make()
  state = init(x[index], y[index])
  x_t, y_t = jnp.asarray(x[:64]), jnp.asarray(y[:64])
  params = jax.tree.map(lambda a: a[0], state.pool)

  def reference(xs):  # KRR loss written out with the model's own readout features
    phi_s, phi_t = frepo.features(model, params, xs), frepo.features(model, params, x_t)
    k_ss = phi_s @ phi_s.T
    k_ss = k_ss + 1e-4 * jnp.trace(k_ss) / k_ss.shape[0] * jnp.eye(k_ss.shape[0])
    return 0.5 * jnp.mean(jnp.square(phi_t @ phi_s.T @ jnp.linalg.solve(k_ss, state.y) - y_t))

  expected_loss = float(reference(state.x))
  expected_grad = np.asarray(jax.grad(reference)(state.x))
  x_before = np.asarray(state.x)
  state, metrics = step(state, x_t, y_t)
  assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-4)
  assert float(metrics["grad_norm"]) > 0 and np.isfinite(float(metrics["grad_norm"]))
  # Adam's first step moves every coordinate by -lr * sign(gradient).
  moved = np.asarray(state.x) - x_before
  big = np.abs(expected_grad) > 1e-3 * np.abs(expected_grad).max()
  np.testing.assert_array_equal(np.sign(moved[big]), -np.sign(expected_grad[big]))


def test_pool_models_train_online_and_reset(digits_regression):
  x, y, labels = digits_regression
  index = data.class_balanced_indices(labels, 1, seed=0)
  model, (init, step, init_model) = _make(pool_size=2, max_updates=2)
  state = jax.jit(init)(x[index], y[index])  # jitted: op by op compiles every op
  x_t, y_t = jnp.asarray(x[:64]), jnp.asarray(y[:64])
  pool0 = jax.tree.map(np.asarray, state.pool)
  ages = []
  for _ in range(4):
    state, _ = step(state, x_t, y_t)
    ages.append(np.asarray(state.age).tolist())
  assert ages == [[1, 0], [1, 1], [0, 1], [0, 0]]
  # Model 0 was reset at step 2 to init_model(fold_in(key(0), 2 + pool_size)).
  fresh, _ = jax.jit(init_model)(jax.random.fold_in(jax.random.key(0), 4), state.x)
  got = jax.tree.map(lambda a: a[0], state.pool)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, fresh)
  assert not np.allclose(
    np.asarray(got["params"]["Dense_0"]["kernel"]), pool0["params"]["Dense_0"]["kernel"][0]
  )


@pytest.mark.slow
def test_loss_decreases(digits_regression):
  x, y, labels = digits_regression
  index = data.class_balanced_indices(labels, 1, seed=1)
  _, (init, step, _) = _make(pool_size=3, max_updates=20)
  state = init(x[index], y[index])
  losses = []
  for t in range(30):
    batch = np.random.default_rng(t).choice(len(x), 128, replace=False)
    state, metrics = step(state, jnp.asarray(x[batch]), jnp.asarray(y[batch]))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
  assert bool(jnp.all(jnp.isfinite(state.x)))


def test_bad_input():
  with pytest.raises(ValueError, match="pool_size and max_updates"):
    frepo.make_frepo_step(
      models.ConvNet(),
      optax.adam(0.1),
      model_optimizer=optax.adam(0.1),
      reg=1e-3,
      pool_size=0,
      max_updates=1,
      seed=0,
    )
  with pytest.raises(ValueError, match="no nn.Dense readout"):
    frepo.features(_NoDense(), {}, jnp.ones((1, 2)))


class _NoDense(nn.Module):
  def __call__(self, x):
    return x
