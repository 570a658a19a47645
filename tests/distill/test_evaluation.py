"""The finite-network evaluation protocol (kdjax.distill.evaluation)."""

import dataclasses

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


# ----------------------------------------------------------------------------------------
# The field protocol (width 128, DSA, SGD with the papers' step decay, epochs).


def test_epochs_count_passes_over_the_set():
  assert ev.Protocol(steps=7).num_steps(500) == 7
  assert ev.Protocol(epochs=3, batch_size=256).num_steps(500) == 6  # 2 minibatches a pass
  assert ev.Protocol(epochs=3, batch_size=256).num_steps(10) == 3
  assert ev.Protocol(epochs=3, batch_size=256).num_steps(512) == 6
  with pytest.raises(ValueError, match="epochs must be >= 0"):
    ev.Protocol(epochs=-1)
  with pytest.raises(ValueError, match="optimizer must be one of"):
    ev.Protocol(optimizer="lamb")
  with pytest.raises(ValueError, match="DSA strategy"):
    ev.Protocol(augment="blur")


def test_sgd_is_pytorch_sgd_with_coupled_decay_and_the_step_decay():
  protocol = ev.Protocol(optimizer="sgd", learning_rate=0.01, weight_decay=5e-4, steps=10)
  lr = ev.schedule(protocol)
  assert [float(lr(i)) for i in (0, 4, 5, 9)] == pytest.approx([0.01, 0.01, 0.001, 0.001])
  # PyTorch SGD(momentum=0.9, weight_decay=wd), float64: d = g + wd p; b = 0.9 b + d;
  # p -= lr(t) b, over 7 steps across the decay at step 5.
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=4)
  grads = rng.normal(size=(7, 4))
  tx = ev.make_optimizer(dataclasses.replace(protocol, steps=10))
  p = jnp.asarray(p0, jnp.float32)
  state, update = tx.init(p), jax.jit(tx.update)  # one compilation, not one per op
  ref, buf = p0.copy(), np.zeros(4)
  for t, g in enumerate(grads):
    d = g + 5e-4 * ref
    buf = 0.9 * buf + d
    ref = ref - (0.01 if t < 5 else 0.001) * buf
    updates, state = update(jnp.asarray(g, jnp.float32), state, p)
    p = p + updates
  np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-5)


def _spy_dsa(monkeypatch):
  from kdjax.distill import dsa

  calls, apply = [], dsa.apply
  monkeypatch.setattr(ev.dsa, "apply", lambda p, x, s: calls.append(s) or apply(p, x, s))
  ev._compiled.cache_clear()
  return calls


def test_field_protocol_steps_have_dsa_and_width_128(monkeypatch):
  """Traced, not compiled: the parameters' shapes and the transforms in the training step."""
  from kdjax.distill import dsa

  calls = _spy_dsa(monkeypatch)
  protocol = ev.Protocol(depth=1, seeds=1, **ev.FIELD)
  init, step, _ = ev._compiled(protocol, 10)
  x = jnp.zeros((12, 8, 8, 1))
  carry = jax.eval_shape(init, jax.random.key(0), x)
  kernels = [v.shape for v in jax.tree.leaves(carry[0]["params"]) if v.ndim == 4]
  assert kernels == [(3, 3, 1, 128)]
  step.lower(carry, x, jnp.zeros((12, 10)), jax.random.key(0), 0)
  assert calls == [dsa.DIGITS]
  assert protocol.num_steps(12) == 1000  # 1,000 epochs of one minibatch
  ev._compiled.cache_clear()


@pytest.mark.slow
def test_field_protocol_trains_width_128_networks_with_dsa(monkeypatch):
  from kdjax.distill import dsa

  calls = _spy_dsa(monkeypatch)
  protocol = ev.Protocol(depth=1, seeds=1, **{**ev.FIELD, "epochs": 2})
  x = np.random.default_rng(0).normal(size=(12, 8, 8, 1)).astype(np.float32)
  y = np.arange(12) % 10
  result = ev.evaluate(x, y, x[:5], y[:5], protocol, num_classes=10)
  assert result["steps"] == 2  # 2 epochs of one minibatch (12 < 256)
  assert calls == [dsa.DIGITS]  # traced into the jitted training step
  ev._compiled.cache_clear()
