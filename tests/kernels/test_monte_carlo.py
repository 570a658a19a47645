"""Finite networks (init/apply, empirical NTK, monte_carlo_kernel_fn) converge to kernel_fn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.kernels import empirical_ntk_fn, monte_carlo_kernel_fn, stax


def mc_nngp(init_fn, apply_fn, x1, x2, inits, seed=0):
  return monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(seed), inits)(x1, x2, "nngp")


@pytest.mark.parametrize(
  "parameterization", ["ntk", pytest.param("standard", marks=pytest.mark.slow)]
)
def test_monte_carlo_nngp_of_fc_relu_net(parameterization):
  init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(512, 1.5, 0.2, parameterization=parameterization),
    stax.Relu(),
    stax.Dense(64, 1.5, 0.2, parameterization=parameterization),
  )
  x1 = jax.random.normal(jax.random.key(1), (4, 10))
  x2 = jax.random.normal(jax.random.key(2), (3, 10))
  want = kernel_fn(x1, x2, "nngp")
  got = mc_nngp(init_fn, apply_fn, x1, x2, inits=256)
  scale = float(jnp.max(jnp.abs(want)))
  # One draw's estimate has std ~ sqrt(2 / 64) K (64 outputs), so 256 draws give ~1.3% of
  # scale per entry; 5% is ~4 standard deviations.
  np.testing.assert_allclose(got, want, atol=0.05 * scale)
  # The same estimate is far from a kernel with another bias variance.
  _, _, other_fn = stax.serial(
    stax.Dense(1, 1.5, 0.6, parameterization=parameterization),
    stax.Relu(),
    stax.Dense(1, 1.5, 0.6, parameterization=parameterization),
  )
  assert float(jnp.max(jnp.abs(got - other_fn(x1, x2, "nngp")))) > 0.1 * scale


@pytest.mark.slow
def test_monte_carlo_nngp_of_conv_pooling_net():
  init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Conv(128, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
    stax.Relu(),
    stax.AvgPool((2, 2), (2, 2)),
    stax.Conv(128, (2, 2), strides=(2, 2), padding="VALID", W_std=1.5, b_std=0.1),
    stax.Erf(),
    stax.GlobalAvgPool(),
    stax.Dense(32, 1.5, 0.1),
  )
  x1 = jax.random.normal(jax.random.key(3), (3, 8, 8, 2))
  x2 = jax.random.normal(jax.random.key(4), (2, 8, 8, 2))
  want = kernel_fn(x1, x2, "nngp")
  got = mc_nngp(init_fn, apply_fn, x1, x2, inits=128)
  np.testing.assert_allclose(got, want, atol=0.05 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_empirical_ntk_of_one_dense_layer_is_exact(parameterization):
  init_fn, apply_fn, kernel_fn = stax.Dense(7, 1.3, 0.4, parameterization=parameterization)
  x1 = jax.random.normal(jax.random.key(5), (4, 6))
  x2 = jax.random.normal(jax.random.key(6), (3, 6))
  _, params = init_fn(jax.random.key(0), x1.shape)
  ntk_fn = empirical_ntk_fn(apply_fn)
  np.testing.assert_allclose(ntk_fn(x1, x2, params), kernel_fn(x1, x2, "ntk"), rtol=1e-5)
  np.testing.assert_allclose(ntk_fn(x1, None, params), kernel_fn(x1, None, "ntk"), rtol=1e-5)


def test_empirical_ntk_converges_to_analytic_ntk_with_width():
  x1 = jax.random.normal(jax.random.key(7), (5, 8))
  x2 = jax.random.normal(jax.random.key(8), (4, 8))
  errors = []
  for width in (32, 512):
    init_fn, apply_fn, kernel_fn = stax.serial(
      stax.Dense(width, 1.5, 0.1),
      stax.Relu(),
      stax.Dense(width, 1.5, 0.1),
      stax.Relu(),
      stax.Dense(4, 1.5, 0.1),
    )
    want = kernel_fn(x1, x2, "ntk")
    ntk_fn = empirical_ntk_fn(apply_fn)
    errs = []
    for seed in range(4):
      _, params = init_fn(jax.random.key(seed), x1.shape)
      errs.append(float(jnp.max(jnp.abs(ntk_fn(x1, x2, params) - want)) / jnp.max(jnp.abs(want))))
    errors.append(np.mean(errs))
  # Fluctuations shrink like 1/sqrt(width): 16x the width, ~4x smaller.
  assert errors[1] < 0.2, errors
  assert errors[1] < errors[0] / 3, errors


def test_empirical_ntk_of_wide_convnet_is_close_to_analytic():
  init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Conv(256, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
    stax.Relu(),
    stax.Flatten(),
    stax.Dense(2, 1.5, 0.1),
  )
  x1 = jax.random.normal(jax.random.key(9), (3, 5, 5, 2))
  _, params = init_fn(jax.random.key(0), x1.shape)
  got = empirical_ntk_fn(apply_fn)(x1, None, params)
  want = kernel_fn(x1, None, "ntk")
  assert float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want))) < 0.1


def fc_net(width, outputs=32):
  return stax.serial(
    stax.Dense(width, 1.5, 0.2),
    stax.Relu(),
    stax.Dense(width, 1.5, 0.2),
    stax.Relu(),
    stax.Dense(outputs, 1.5, 0.2),
  )


def relative_errors(estimates, want):
  """Frobenius-norm relative errors (steadier than the largest entry)."""
  return [float(jnp.linalg.norm(e - want) / jnp.linalg.norm(want)) for e in estimates]


@pytest.mark.parametrize(
  "get,outputs,counts",
  [pytest.param("nngp", 32, (2, 8, 32, 128), marks=pytest.mark.slow), ("ntk", 2, (1, 4, 16, 64))],
)
def test_monte_carlo_error_falls_with_samples_like_one_over_sqrt(get, outputs, counts):
  init_fn, apply_fn, kernel_fn = fc_net(128 if get == "nngp" else 64, outputs)
  x1 = jax.random.normal(jax.random.key(11), (4, 6))
  x2 = jax.random.normal(jax.random.key(12), (3, 6))
  want = kernel_fn(x1, x2, get)
  mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), counts)(x1, x2, get)
  assert len(mc) == len(counts)
  errors = relative_errors(mc, want)
  # 64x the samples: ~8x smaller error for pure sampling noise; ask for 3x.
  assert errors[-1] < errors[0] / 3, errors
  assert errors[-1] < 0.05, errors
  if get == "ntk":
    return
  # Nested chain: the estimate at the last count is the same asked alone or in a list.
  alone = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), counts[-1])(x1, x2, get)
  np.testing.assert_allclose(alone, mc[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  "get,sizes",
  [
    pytest.param("nngp", ((8, 8), (64, 32), (512, 64)), marks=pytest.mark.slow),
    ("ntk", ((8, 2), (64, 8), (256, 16))),
    pytest.param("ntk", ((8, 8), (64, 32), (512, 128)), marks=pytest.mark.slow),
  ],
)
def test_monte_carlo_converges_as_width_and_samples_grow(get, sizes):
  x1 = jax.random.normal(jax.random.key(13), (4, 6))
  errors = []
  for width, samples in sizes:
    init_fn, apply_fn, kernel_fn = fc_net(width, outputs=32 if get == "nngp" else 4)
    got = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(1), samples)(x1, None, get)
    np.testing.assert_allclose(got, got.T, rtol=1e-5, atol=1e-6)
    errors.append(relative_errors([got], kernel_fn(x1, None, get))[0])
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.05, errors


def test_monte_carlo_tiled_equals_whole():
  init_fn, apply_fn, _ = fc_net(16, outputs=2)
  x1 = jax.random.normal(jax.random.key(14), (3, 6))
  x2 = jax.random.normal(jax.random.key(15), (2, 6))
  whole = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(2), 2)
  tiled = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(2), 2, batch_size=2)
  for a, b in (
    (whole(x1, x2, "nngp"), tiled(x1, x2, "nngp")),
    (whole(x1, None, "nngp"), tiled(x1, None, "nngp")),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_monte_carlo_bad_arguments_raise():
  init_fn, apply_fn, _ = fc_net(8)
  key = jax.random.key(0)
  for bad in (0, [4, -1], 2.5, []):
    with pytest.raises(ValueError, match="n_samples"):
      monte_carlo_kernel_fn(init_fn, apply_fn, key, bad)
  with pytest.raises(ValueError, match="batch_size > 0 needs an int n_samples"):
    monte_carlo_kernel_fn(init_fn, apply_fn, key, [1, 2], batch_size=2)
  with pytest.raises(ValueError, match="trace_axes"):
    monte_carlo_kernel_fn(init_fn, apply_fn, key, 2, trace_axes=())
  with pytest.raises(ValueError, match="get must be"):
    monte_carlo_kernel_fn(init_fn, apply_fn, key, 2)(jnp.ones((2, 6)), None, "ntkgp")
