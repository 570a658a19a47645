"""Independent checks of kdjax.kernels.stax: closed forms, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kdjax.kernels import stax


def arccos_relu_nngp(x1, x2, w_std, b_std):
  """One hidden ReLU layer then a readout, from Cho & Saul (2009), in NumPy."""
  d = x1.shape[1]
  k12 = w_std**2 * x1 @ x2.T / d + b_std**2
  k11 = w_std**2 * np.sum(x1**2, 1) / d + b_std**2
  k22 = w_std**2 * np.sum(x2**2, 1) / d + b_std**2
  norms = np.sqrt(np.outer(k11, k22))
  theta = np.arccos(np.clip(k12 / norms, -1, 1))
  relu = norms / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
  return w_std**2 * relu + b_std**2


def test_one_layer_relu_nngp_is_arc_cosine_kernel():
  rng = np.random.default_rng(0)
  x1, x2 = rng.normal(size=(6, 9)), rng.normal(size=(4, 9))
  _, _, kernel_fn = stax.serial(stax.Dense(100, 1.3, 0.2), stax.Relu(), stax.Dense(1, 1.3, 0.2))
  with jax.enable_x64(True):
    got = kernel_fn(x1, x2, "nngp")
  np.testing.assert_allclose(got, arccos_relu_nngp(x1, x2, 1.3, 0.2), rtol=1e-12)


def test_erf_nngp_is_williams_kernel():
  rng = np.random.default_rng(1)
  x1, x2 = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
  _, _, kernel_fn = stax.serial(stax.Dense(10, 1.5, 0.3), stax.Erf())
  k12 = 1.5**2 * x1 @ x2.T / 7 + 0.3**2
  k11 = 1.5**2 * np.sum(x1**2, 1) / 7 + 0.3**2
  k22 = 1.5**2 * np.sum(x2**2, 1) / 7 + 0.3**2
  want = 2 / np.pi * np.arcsin(2 * k12 / np.sqrt(np.outer(1 + 2 * k11, 1 + 2 * k22)))
  with jax.enable_x64(True):
    got = kernel_fn(x1, x2, "nngp")
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_flatten_on_nhwc_images_equals_dense_on_flat_vectors():
  # Flatten of raw images gives the same kernel as the flattened vectors.
  rng = np.random.default_rng(2)
  x1, x2 = rng.normal(size=(4, 5, 6, 3)), rng.normal(size=(3, 5, 6, 3))
  head = (stax.Dense(64, 1.4, 0.1), stax.Relu(), stax.Dense(1, 1.4, 0.1))
  _, _, image_fn = stax.serial(stax.Flatten(), *head)
  _, _, flat_fn = stax.serial(*head)
  with jax.enable_x64(True):
    a = image_fn(x1, x2)
    b = flat_fn(x1.reshape(4, -1), x2.reshape(3, -1))
  np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-12)
  np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)


NETWORKS = {
  "fc_relu": (
    stax.serial(
      stax.Dense(8, 1.5, 0.1),
      stax.Relu(),
      stax.Dense(8, 1.5, 0.1),
      stax.Relu(),
      stax.Dense(1, 1.5, 0.1),
    ),
    (5,),
  ),
  "fc_erf_standard": (
    stax.serial(
      stax.Dense(8, 1.2, 0.1, parameterization="standard"),
      stax.Erf(),
      stax.Dense(1, 1.2, 0.1, parameterization="standard"),
    ),
    (5,),
  ),
  "conv_flatten": (
    stax.serial(
      stax.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
      stax.Relu(),
      stax.Flatten(),
      stax.Dense(1, 1.5, 0.1),
    ),
    (4, 4, 2),
  ),
  "conv_gap": (
    stax.serial(
      stax.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
      stax.Relu(),
      stax.GlobalAvgPool(),
      stax.Dense(1, 1.5, 0.1),
    ),
    (4, 4, 2),
  ),
}


# conv_gap (~12 s CPU, the costliest case) is slow; conv_flatten stays in the default run.
@pytest.mark.parametrize(
  "name",
  [
    pytest.param(n, marks=pytest.mark.slow) if n in ("conv_gap", "conv_flatten") else n
    for n in sorted(NETWORKS)
  ],
)
def test_gradients_wrt_inputs_match_finite_differences(name):
  (_, _, kernel_fn), shape = NETWORKS[name]
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    x1 = jnp.asarray(rng.normal(size=(3,) + shape))
    x2 = jnp.asarray(rng.normal(size=(2,) + shape))
    w = jnp.asarray(rng.normal(size=(3, 3)))
    # Both x1-vs-x2 and x1-vs-itself (whose diagonal is where the arc-cosine
    # derivative is singular term by term).
    for get in ("nngp", "ntk"):
      check_grads(
        lambda a, b: jnp.sum(kernel_fn(a, b, get)[:, :2] ** 2),
        (x1, x2),
        order=1,
        modes=("rev",),
        rtol=1e-5,
      )
      check_grads(
        lambda a: jnp.sum(w * kernel_fn(a, None, get)), (x1,), order=1, modes=("rev",), rtol=1e-5
      )
      g = jax.jit(jax.grad(lambda a: jnp.sum(kernel_fn(a, None, get))))(x1)
      assert bool(jnp.all(jnp.isfinite(g)))


def test_float32_self_kernel_gradient_is_finite():
  _, _, kernel_fn = NETWORKS["fc_relu"][0]
  x = jax.random.normal(jax.random.key(0), (16, 5))
  g = jax.jit(jax.grad(lambda a: jnp.sum(kernel_fn(a, None, "ntk"))))(x)
  assert g.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(g)))


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="parameterization"):
    stax.Dense(3, parameterization="mup")
  with pytest.raises(ValueError, match="padding"):
    stax.Conv(3, (3, 3), padding="REFLECT")
  with pytest.raises(ValueError, match="b_std"):
    stax.Dense(3, b_std=-1.0)
  _, _, kernel_fn = stax.serial(stax.Dense(3), stax.Relu())
  with pytest.raises(ValueError, match="get"):
    kernel_fn(np.ones((2, 3)), None, get="cov")
  with pytest.raises(ValueError, match="x2"):
    kernel_fn(np.ones((2, 3)), np.ones((2, 4)))
  _, _, conv_fn = stax.Conv(3, (3, 3))
  with pytest.raises(ValueError, match="spatial"):
    conv_fn(np.ones((2, 3)))
  with pytest.raises(ValueError, match="x1 has no examples"):
    conv_fn(np.ones((0, 4, 4, 2)))
  with pytest.raises(ValueError, match="x2 has no examples"):
    conv_fn(np.ones((2, 4, 4, 2)), np.ones((0, 4, 4, 2)))


def test_output_types_are_created_once():
  _, _, kernel_fn = stax.serial(stax.Dense(3), stax.Relu())
  x = np.ones((2, 3))
  assert type(kernel_fn(x)) is stax.Kernel
  assert type(kernel_fn(x, get=("nngp", "ntk"))) is stax.Kernel
  assert type(kernel_fn(x, get=("ntk",))) is type(kernel_fn(x, x, get=("ntk",)))
  assert kernel_fn(x, get=("ntk", "nngp"))._fields == ("ntk", "nngp")
