"""The explicit reductions and the one empty-mean rule: a mean over no example is 0 with a
zero gradient, for an empty shape and for a fully masked batch alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses as L


def test_masked_mean_with_weights_matches_numpy_and_ignores_masked_nan():
  rng = np.random.default_rng(0)
  losses = rng.normal(size=(3, 4))
  mask = rng.random((3, 4)) > 0.3
  weights = rng.random((3, 4))
  poisoned = np.where(mask, losses, np.nan)
  want = np.sum((weights * losses)[mask]) / np.sum(weights[mask])
  got = L.masked_mean(jnp.asarray(poisoned, jnp.float32), mask, weights=weights)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  grad = jax.grad(lambda x: L.masked_mean(x, mask, weights=weights))(jnp.asarray(poisoned))
  np.testing.assert_allclose(
    np.asarray(grad), np.where(mask, weights, 0) / np.sum(weights[mask]), rtol=1e-6
  )
  # Without a mask: the weighted mean; without weights: the plain mean.
  np.testing.assert_allclose(
    float(L.masked_mean(losses, weights=weights)), np.average(losses, weights=weights), rtol=1e-6
  )
  np.testing.assert_allclose(float(L.masked_mean(losses)), losses.mean(), rtol=1e-6)
  with pytest.raises(ValueError, match="weights must be >= 0"):
    L.masked_mean(losses, weights=-weights)
  with pytest.raises(ValueError, match="where must be a boolean"):
    L.masked_mean(losses, mask.astype(np.float32))


def _empty_cases():
  s = jnp.zeros((0, 5))
  t = jnp.ones((0, 5))
  rng = np.random.default_rng(1)
  s3, t3 = (jnp.asarray(x, jnp.float32) for x in rng.normal(size=(2, 3, 5)))
  none = jnp.zeros((3,), bool)
  return {
    "mean_over_examples_empty": lambda x: L.mean_over_examples(x[:0]),
    "masked_mean_empty": lambda x: L.masked_mean(x[:0], jnp.zeros((0,), bool)),
    "masked_mean_all_masked": lambda x: L.masked_mean(x, none),
    "masked_mean_zero_weights": lambda x: L.masked_mean(x, weights=jnp.zeros(3)),
    "dist_loss_empty": lambda x: L.dist_loss(s + x[:0, None], t),
    "dist_loss_all_masked": lambda x: L.dist_loss(s3 + x[:, None], t3, where=none),
    "sequence_kd_loss_all_padding": lambda x: L.sequence_kd_loss(
      (s3 + x[:, None])[None], t3[None], where=none[None]
    ),
  }


@pytest.mark.parametrize("name", sorted(_empty_cases()))
def test_a_mean_over_no_example_is_zero_with_zero_gradient(name):
  fn = _empty_cases()[name]
  x = jnp.asarray([1.0, 2.0, 3.0])
  value, grad = jax.jit(jax.value_and_grad(fn))(x)  # one compile instead of op-by-op dispatch
  assert float(value) == 0.0, f"{name} gave {value}"
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_chunked_losses_of_no_token():
  hs, ht = jnp.zeros((0, 4)), jnp.zeros((0, 3))
  ws, wt = jnp.ones((4, 7)), jnp.ones((3, 7))
  assert L.chunked_kd_loss(hs, ws, ht, wt).shape == (0,)
  total, count = L.chunked_kd_sum_and_count(hs, ws, ht, wt)
  assert float(total) == 0.0 and int(count) == 0
  assert float(L.mean_from_sum_and_count(total, count)) == 0.0
  grads = jax.grad(lambda hs, ws: L.chunked_kd_sum_and_count(hs, ws, ht, wt)[0], (0, 1))(hs, ws)
  assert grads[0].shape == (0, 4)
  np.testing.assert_array_equal(np.asarray(grads[1]), 0.0)
