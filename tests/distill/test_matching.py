"""DM and DC/DSA (kdjax.distill.dm, kdjax.distill.dc): their losses against float64 NumPy
formulas written from the papers, finite differences, the steps on tiny networks, and the
distill job's methods 'dm', 'dc', 'dsa' (runlocal runs are slow-marked: on 2 shared cores
their compilation takes minutes; the steps below are their fast siblings)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import dc_digits, dm_digits, dm_mnist5k, dsa_digits, dsa_mnist5k
from kdjax import models
from kdjax.distill import dc, dm, job
from kdjax.jobs import workdir as workdir_lib
from launch import sweep


def dm_reference(x_s, labels_s, x_t, labels_t, w, num_classes):
  """Zhao & Bilen (2023), eq. of the module docstring, with psi(x) = tanh(flatten(x) W)."""
  embed = lambda x: np.tanh(x.reshape(len(x), -1) @ w)
  e_s, e_t = embed(x_s), embed(x_t)
  total = 0.0
  for c in range(num_classes):
    if np.any(labels_t == c):
      total += np.sum((e_t[labels_t == c].mean(0) - e_s[labels_s == c].mean(0)) ** 2)
  return total


def test_dm_loss_matches_numpy_and_its_gradient_finite_differences():
  rng = np.random.default_rng(0)
  x_s, x_t = rng.normal(size=(6, 3, 3, 1)), rng.normal(size=(10, 3, 3, 1))
  labels_s, labels_t = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
  w = rng.normal(size=(9, 5))  # class 2 is absent from the target batch: not counted
  with jax.enable_x64(True):
    embed = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w)
    f = jax.jit(
      jax.value_and_grad(lambda x: dm.dm_loss(embed, x, labels_s, x_t, labels_t, num_classes=3))
    )
    value, grad = f(jnp.asarray(x_s))
    np.testing.assert_allclose(value, dm_reference(x_s, labels_s, x_t, labels_t, w, 3), rtol=1e-12)
    d, eps = rng.normal(size=x_s.shape), 1e-6
    fd = (float(f(x_s + eps * d)[0]) - float(f(x_s - eps * d)[0])) / (2 * eps)
    np.testing.assert_allclose(np.sum(np.asarray(grad) * d), fd, rtol=1e-6)
    assert not np.any(np.asarray(grad)[4:])  # class 2's images get no gradient


def distance_reference(grads_a, grads_b):
  """DC's layer-wise distance (Zhao et al., 2021, ``distance_wb``): rows = output channels."""
  total = 0.0
  for a, b in zip(grads_a, grads_b):
    if a.ndim < 2:
      continue
    out = a.shape[-1]
    a, b = np.moveaxis(a, -1, 0).reshape(out, -1), np.moveaxis(b, -1, 0).reshape(out, -1)
    for i in range(out):
      total += 1 - a[i] @ b[i] / (np.linalg.norm(a[i]) * np.linalg.norm(b[i]) + 1e-6)
  return total


def test_gradient_distance_is_the_papers_layerwise_cosine():
  rng = np.random.default_rng(1)
  shapes = [(3, 3, 2, 4), (4,), (12, 5), (5,)]
  a = [rng.normal(size=s) for s in shapes]
  b = [rng.normal(size=s) for s in shapes]
  got = float(jax.jit(dc.gradient_distance)(a, b))
  np.testing.assert_allclose(got, distance_reference(a, b), rtol=1e-5)
  assert abs(float(dc.gradient_distance(a, a))) < 1e-5  # equal gradients: distance 0
  # Scaling a layer's rows does not change the distance (cosine), flipping one does.
  scaled = [g * 3.0 for g in b]
  np.testing.assert_allclose(float(dc.gradient_distance(a, scaled)), got, rtol=1e-5)


def test_class_batch_picks_the_class_and_averages_over_it():
  labels = jnp.array([2, 0, 1, 0, 2, 0])
  pick = jax.jit(dc.class_batch, static_argnums=(1, 2))
  index, weight = pick(labels, 0, 4)
  assert sorted(np.asarray(index)[:3].tolist()) == [1, 3, 5]
  np.testing.assert_allclose(weight, [1 / 3, 1 / 3, 1 / 3, 0])
  _, weight = pick(labels, 3, 2)  # absent class: zero weights
  np.testing.assert_array_equal(weight, [0, 0])


class _Linear(nn.Module):
  """A softmax-regression classifier on flattened images: DC's gradients in closed form."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def dc_loss_reference(x_s, per_class, x_t, labels_t, real_per_class, w, b):
  """Zhao et al. (2021)'s matching loss for softmax regression ``softmax(flatten(x) W + b)``
  in float64 NumPy: per class, the gradient of the mean cross-entropy is ``(W, b)``'s
  ``X^T (P - Y) / n`` (on the class's first ``real_per_class`` real rows, and its
  synthetic rows), compared by the layer-wise distance (the bias, 1-D, does not count)."""

  def grads(x, c):
    x = x.reshape(len(x), -1)
    z = x @ w + b
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[:, c] -= 1
    return [x.T @ p / len(x), p.mean(0)]

  total = 0.0
  for c in range(w.shape[1]):
    real = x_t[np.flatnonzero(labels_t == c)[:real_per_class]]
    if len(real):
      total += distance_reference(
        grads(real, c), grads(x_s[c * per_class : (c + 1) * per_class], c)
      )
  return total


def test_dc_loss_and_image_gradient_match_numpy_and_finite_differences():
  # The step's loss (all classes, unrolled) against the NumPy formula; its image update
  # (SGD lr 1: x - grad) against central differences of that formula (float64 NumPy; the
  # step computes in float32).
  rng = np.random.default_rng(3)
  x = rng.normal(size=(6, 2, 2, 1))
  x_t = rng.normal(size=(10, 2, 2, 1))
  labels_t = np.array([0, 1, 2, 1, 0, 1, 1, 2, 0, 1])
  y = np.repeat(np.eye(3), 2, 0)
  model = _Linear(3)
  init, step = dc.make_dc_step(
    model,
    optax.sgd(1.0),
    num_classes=3,
    per_class=2,
    seed=0,
    outer_loop=1,
    inner_steps=1,
    model_learning_rate=0.01,
    real_per_class=3,
  )
  params = model.init(jax.random.fold_in(jax.random.key(0), 0), jnp.asarray(x[:1]))
  w, b = (np.asarray(params["params"]["Dense_0"][k]) for k in ("kernel", "bias"))
  state, metrics = step(init(x, y), jnp.asarray(x_t), jnp.asarray(np.eye(3)[labels_t]))
  loss = lambda xs: dc_loss_reference(xs, 2, x_t, labels_t, 3, w, b)  # noqa: E731
  np.testing.assert_allclose(float(metrics["loss"]), loss(x), rtol=1e-6)
  grad, eps = np.zeros_like(x), 1e-6
  for i in np.ndindex(x.shape):
    d = np.zeros_like(x)
    d[i] = eps
    grad[i] = (loss(x + d) - loss(x - d)) / (2 * eps)
  np.testing.assert_allclose(x - np.asarray(state.x), grad, rtol=1e-4, atol=1e-6)


@functools.cache
def tiny():
  model = models.ConvNet(num_classes=3, width=4, depth=1)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
  y = np.repeat(np.eye(3, dtype=np.float32), 2, 0)
  x_t = rng.normal(size=(12, 4, 4, 1)).astype(np.float32)
  y_t = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 12)]
  return model, x, y, x_t, y_t


# DC's step compiles a second-order matching (~40 s under load): slow; DM's is the fast sibling.
@pytest.mark.parametrize("method", ["dm", pytest.param("dc", marks=pytest.mark.slow)])
def test_steps_move_the_images_and_are_functions_of_seed_and_step(method):
  model, x, y, x_t, y_t = tiny()
  if method == "dm":
    init, step = dm.make_dm_step(model, optax.sgd(0.1), num_classes=3, seed=0, strategy="crop")
  else:
    init, step = dc.make_dc_step(
      model,
      optax.sgd(0.1),
      num_classes=3,
      per_class=2,
      seed=0,
      outer_loop=2,
      inner_steps=1,
      model_learning_rate=0.01,
      real_per_class=4,
      strategy="crop",
    )
  runs = []
  for _ in range(2):
    state = init(x, y)
    for _ in range(3):
      state, metrics = step(state, x_t, y_t)
    runs.append(np.asarray(state.x))
    assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))
  np.testing.assert_array_equal(runs[0], runs[1])
  assert not np.allclose(runs[0], x) and np.all(np.isfinite(runs[0]))
  np.testing.assert_array_equal(state.y, y)  # labels stay the class labels


def test_dc_rejects_support_not_by_class():
  model, x, y, _, _ = tiny()
  init, _ = dc.make_dc_step(
    model,
    optax.sgd(0.1),
    num_classes=3,
    per_class=2,
    seed=0,
    outer_loop=1,
    inner_steps=1,
    model_learning_rate=0.01,
    real_per_class=4,
  )
  with pytest.raises(ValueError, match="2 rows of class 0, then of class 1"):
    init(x, y[::-1])


@pytest.mark.parametrize(
  "module,key,value,match",
  [
    (dsa_digits, "dsa.inner_steps", 0, r"config.dsa.inner_steps must be an integer >= 1, got 0"),
    (dc_digits, "dc.outer_loop", 0, r"config.dc.outer_loop must be an integer >= 1"),
    (dsa_digits, "dsa.augment", "none", r"config.dsa.augment: a DSA strategy is"),
    (dm_digits, "dm.augment", "color_zoom", r"config.dm.augment: .*unknown: \['zoom'\]"),
    (dsa_digits, "dsa.real_per_class", 100, r"config.dsa.real_per_class \(100\) exceeds"),
    (dm_digits, "dm.normalization", "batch", "config.dm.normalization must be one of"),
  ],
)
def test_bad_config(tmp_path, module, key, value, match):
  config = module.get_config("1,runlocal")
  section, _, name = key.rpartition(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=match):
    job.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # loads the data (the check is support.support_problem's, as for rfad)
def test_per_class_beyond_the_data(tmp_path):
  config = dm_digits.get_config("1,runlocal")
  config.dm.per_class = 1000
  with pytest.raises(ValueError, match=r"config.dm.per_class: per_class must be in \[1, "):
    job.run(config, str(tmp_path / "run"))


@pytest.mark.parametrize("module", [dm_mnist5k, dsa_mnist5k, dc_digits])
def test_configs_and_sweeps(module):
  c = module.get_config("10")
  job.validate(c)
  for point in module.sweep():
    sweep.apply_point(c, point)


@pytest.mark.slow
@pytest.mark.parametrize("module", [dm_digits, dc_digits, dsa_digits])
def test_runlocal(tmp_path, module):
  config = module.get_config("2,runlocal")
  summary = job.run(config, str(tmp_path))
  with np.load(tmp_path / "support.npz") as f:
    assert f["x"].shape == (20, 8, 8, 1)
    np.testing.assert_allclose(f["y"], np.repeat(np.eye(10) - 0.1, 2, 0), atol=1e-6)
  for key in ("test_accuracy", "transfer_test_accuracy", "transfer_test_accuracy_init"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path))] == [0, 2, 4]


@pytest.mark.slow
def test_a_nan_meta_loss_stops_the_run_naming_the_step(tmp_path):
  config = dm_digits.get_config("1,runlocal")
  config.optimizer.learning_rate = 1e38  # the images overflow after the first update
  with pytest.raises(FloatingPointError, match=r"\[dm\].*step 2"):
    job.run(config, str(tmp_path))
