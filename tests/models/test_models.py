"""Tests of kdjax.models: forward passes against NumPy, published sizes, causality, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models


def _param_count(model, x):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def test_mlp_matches_numpy_forward():
  model = models.MLP(num_classes=3, hidden=(5, 4))
  x = np.random.RandomState(0).randn(6, 2, 3).astype(np.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"]  # jitted, as below:
  h = x.reshape(6, -1).astype(np.float64)
  for name in ("Dense_0", "Dense_1"):
    h = np.maximum(h @ np.asarray(params[name]["kernel"], np.float64) + params[name]["bias"], 0)
  expected = h @ np.asarray(params["Dense_2"]["kernel"], np.float64) + params["Dense_2"]["bias"]
  logits = jax.jit(model.apply)({"params": params}, x)  # op by op compiles every op
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory, millions", [(models.resnet8x4, 1.23), (models.resnet32x4, 7.43)])
def test_cifar_resnets_have_the_published_sizes(factory, millions):
  # Tian et al. (2020), CRD, Table 1: resnet8x4 1.23M and resnet32x4 7.43M parameters (CIFAR-100).
  count = _param_count(factory(100), jnp.zeros((1, 32, 32, 3)))
  assert abs(count / 1e6 - millions) < 0.005


def test_convnet_size_matches_the_layer_formula():
  width, depth, classes, channels = 16, 3, 10, 3
  expected = 0
  c_in = channels
  for _ in range(depth):
    expected += (
      9 * c_in * width + width + 2 * width
    )  # conv kernel + bias + instance-norm scale/bias
    c_in = width
  expected += (32 // 2**depth) ** 2 * width * classes + classes
  model = models.ConvNet(num_classes=classes, width=width, depth=depth)
  assert _param_count(model, jnp.zeros((1, 32, 32, channels))) == expected


def test_convnet_instance_norm_makes_examples_independent_of_the_batch():
  model = models.ConvNet(num_classes=4, width=8, depth=2)
  x = np.random.RandomState(0).randn(3, 16, 16, 1).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  apply = jax.jit(functools.partial(model.apply, train=True))
  full = apply(variables, x)
  alone = apply(variables, x[1:2])
  np.testing.assert_allclose(full[1:2], alone, rtol=1e-5, atol=1e-5)
  # Rescaling one example changes no other example's logits (no statistics across the batch).
  x2 = x.copy()
  x2[0] *= 10.0
  np.testing.assert_allclose(apply(variables, x2)[1:], full[1:], rtol=1e-5, atol=1e-5)


def test_resnet_batch_norm_uses_batch_stats_in_training_and_running_stats_in_eval():
  model = models.CifarResNet(num_classes=5, depth=8, widths=(4, 4, 8, 8))
  x = np.random.RandomState(0).randn(4, 8, 8, 3).astype(np.float32) * 3 + 1
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  logits, updates = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
    variables, x
  )
  assert logits.shape == (4, 5)
  stem_mean = updates["batch_stats"]["BatchNorm_0"]["mean"]
  conv = jax.lax.conv_general_dilated(
    x,
    variables["params"]["Conv_0"]["kernel"],
    (1, 1),
    [(1, 1), (1, 1)],
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  # momentum 0.9 from a zero initial mean: new = 0.1 * batch mean.
  np.testing.assert_allclose(
    stem_mean, 0.1 * np.asarray(conv).mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5
  )
  eval_logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  assert not np.allclose(eval_logits, logits)


def test_resnet_rejects_bad_depth():
  with pytest.raises(ValueError, match="depth must be 6n\\+2"):
    models.CifarResNet(depth=10).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_transformer_is_causal():
  model = models.TransformerLM(
    vocab_size=11, max_len=8, embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32
  )
  tokens = np.random.RandomState(0).randint(0, 11, size=(2, 8))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
  apply = jax.jit(model.apply)
  logits = apply(variables, tokens)
  assert logits.shape == (2, 8, 11)
  changed = tokens.copy()
  changed[:, 5] = (changed[:, 5] + 1) % 11
  new = apply(variables, changed)
  np.testing.assert_allclose(new[:, :5], logits[:, :5], rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(new[:, 5:]) - np.asarray(logits[:, 5:])).max() > 1e-4


def test_transformer_rejects_too_long_sequences():
  model = models.TransformerLM(vocab_size=5, max_len=4, embed_dim=8, num_heads=2, mlp_dim=8)
  with pytest.raises(ValueError, match="max_len=4"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 5), jnp.int32))


def test_create_builds_by_name_and_rejects_unknown_names_and_attributes():
  model = models.from_config({"name": "mlp", "num_classes": 7, "hidden": [3]})
  assert isinstance(model, models.MLP) and model.hidden == (3,) and model.num_classes == 7
  with pytest.raises(ValueError, match="model name must be one of"):
    models.create("vgg")
  with pytest.raises(ValueError, match="bad attributes for model 'mlp'"):
    models.create("mlp", widht=3)


def test_diffusion_models_keep_the_input_shape_with_one_or_two_times():
  import jax
  import jax.numpy as jnp

  from kdjax.models import TimeMLP, UNet

  t = jnp.array([0.1, 0.9])
  x = jnp.ones((2, 2))
  mlp = TimeMLP(hidden=8, depth=1, time_dim=8)
  for times in ((t,), (t, t)):
    out = mlp.apply(mlp.init(jax.random.PRNGKey(0), x, *times), x, *times)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised output layer
  # the U-Net on 8x8 digits and 28x28x1 mnist5k: shapes only (traced, not compiled)
  for model, shape in (
    (UNet(channels=(4, 8), time_dim=8), (2, 8, 8)),
    (UNet(channels=(4, 8, 8), time_dim=8), (2, 28, 28, 1)),
  ):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    for times in ((t,), (t, t)):
      variables = jax.eval_shape(
        lambda x, *ts: model.init(jax.random.PRNGKey(0), x, *ts), x, *times
      )
      out = jax.eval_shape(lambda v, x, *ts: model.apply(v, x, *ts), variables, x, *times)
      assert out.shape == shape and out.dtype == jnp.float32
  with pytest.raises(ValueError, match="divisible by 4"):
    UNet(channels=(4, 8, 8)).init(jax.random.PRNGKey(0), jnp.ones((1, 6, 6)), t[:1])
