"""The finite-network evaluation protocol (kdjax.distill.evaluation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import data
from kdjax.distill import evaluation as ev


def _shift_reference(image, dy, dx):
  """NumPy: out[h, w] = image[h + dy, w + dx], zero outside."""
  out = np.zeros_like(image)
  h, w = image.shape[:2]
  for i in range(h):
    for j in range(w):
      if 0 <= i + dy < h and 0 <= j + dx < w:
        out[i, j] = image[i + dy, j + dx]
  return out


def test_random_shift_is_a_zero_padded_translation():
  x = np.random.default_rng(0).normal(size=(40, 5, 6, 2)).astype(np.float32)
  shifted = np.asarray(ev.random_shift(jax.random.key(0), x, 2))
  seen = set()
  for image, out in zip(x, shifted):
    matches = [
      (dy, dx)
      for dy in range(-2, 3)
      for dx in range(-2, 3)
      if np.array_equal(out, _shift_reference(image, dy, dx))
    ]
    assert matches, "output is not a translation of its input"
    seen.add(matches[0])
  assert len(seen) > 5  # offsets are drawn per image
  np.testing.assert_array_equal(np.asarray(ev.random_shift(jax.random.key(0), x, 0)), x)


def test_random_shift_gradient_is_the_reverse_translation():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 4, 1)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4, 4, 1)), jnp.float32)
  key = jax.random.key(3)
  grad = jax.grad(lambda x: jnp.sum(w * ev.random_shift(key, x, 1)))(x)
  # The map is linear: its gradient is the adjoint, checked by <w, S x> = <S^T w, x>.
  y = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
  lhs = float(jnp.sum(w * ev.random_shift(key, y, 1)))
  np.testing.assert_allclose(lhs, float(jnp.sum(grad * y)), rtol=1e-5)


@pytest.fixture(scope="module")
def digits():
  ds = data.load("digits")
  index = data.class_balanced_indices(ds.y_train, 10, seed=0)
  x_train, x_test = data.standardize_images(ds.x_train), data.standardize_images(ds.x_test)
  return x_train[index], ds.y_train[index], x_test, ds.y_test


@pytest.mark.parametrize(
  "network,width,shift",
  [
    pytest.param("convnet", 16, 1, marks=pytest.mark.slow),
    ("mlp", 64, 0),
    pytest.param("resnet", 16, 1, marks=pytest.mark.slow),
  ],
)
def test_trained_networks_beat_untrained_ones_on_digits(digits, network, width, shift):
  x, y, x_test, y_test = digits
  protocol = ev.Protocol(
    network=network,
    width=width,
    depth=2,
    steps=50,
    batch_size=64,
    learning_rate=1e-2,
    seeds=2,
    max_shift=shift,
  )
  result = ev.evaluate(x, y, x_test, y_test, protocol, num_classes=10)
  assert len(result["accuracies"]) == 2
  assert result["mean"] == pytest.approx(np.mean(result["accuracies"]))
  assert result["std"] == pytest.approx(np.std(result["accuracies"]))
  assert result["mean"] > 0.7, result
  # One tiny step leaves the network near chance: the accuracy comes from training.
  untrained = ev.evaluate(
    x,
    y,
    x_test,
    y_test,
    ev.Protocol(network=network, width=width, depth=2, steps=1, learning_rate=1e-6, seeds=1),
    num_classes=10,
  )
  assert untrained["mean"] < result["mean"] - 0.3


def test_seeds_are_reproducible_and_distinct(digits):
  x, y, x_test, y_test = digits
  protocol = ev.Protocol(network="mlp", width=16, depth=1, steps=5, seeds=2)
  a = ev.evaluate(x, y, x_test, y_test, protocol, num_classes=10, seed=3)
  b = ev.evaluate(x, y, x_test, y_test, protocol, num_classes=10, seed=3)
  c = ev.evaluate(x, y, x_test, y_test, protocol, num_classes=10, seed=4)
  assert a == b
  assert a["accuracies"][1] == c["accuracies"][0]  # seed 3 + 1 == seed 4 + 0
  assert a["accuracies"][0] != a["accuracies"][1]


def test_soft_labels_with_mse(digits):
  x, y, x_test, y_test = digits
  soft = data.regression_targets(y, 10)  # 0.9 / -0.1 targets, as KRR methods learn
  protocol = ev.Protocol(
    network="mlp", width=64, depth=1, steps=50, loss="mse", seeds=1, learning_rate=1e-2, max_shift=0
  )
  assert ev.evaluate(x, soft, x_test, y_test, protocol, num_classes=10)["mean"] > 0.7
  with pytest.raises(ValueError, match="distributions"):
    ev.evaluate(x, soft, x_test, y_test, ev.Protocol(loss="xent"), num_classes=10)


def test_bad_input(digits):
  x, y, x_test, y_test = digits
  with pytest.raises(ValueError, match="network must be one of"):
    ev.Protocol(network="vgg")
  with pytest.raises(ValueError, match="loss must be one of"):
    ev.Protocol(loss="hinge")
  with pytest.raises(ValueError, match="steps must be >= 1"):
    ev.Protocol(steps=0)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
    ev.evaluate(x, y + 1, x_test, y_test, num_classes=10)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
    ev.evaluate(x, y, x_test, y_test - 1, num_classes=10)
  with pytest.raises(ValueError, match="one row per image"):
    ev.evaluate(x, y[:-1], x_test, y_test, num_classes=10)
  with pytest.raises(ValueError, match="soft labels"):
    ev.evaluate(x, np.ones((len(x), 3), np.float32), x_test, y_test, num_classes=10)
