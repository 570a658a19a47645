"""Combinators, pooling, regimes, symmetry/PSD and init/apply shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.kernels import stax


def arccos_relu(k12, k11, k22):
  norms = np.sqrt(np.outer(k11, k22))
  theta = np.arccos(np.clip(k12 / norms, -1, 1))
  return norms / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))


def test_leaky_relu_nngp_is_linear_plus_arc_cosine():
  # leaky(x) = alpha x + (1 - alpha) relu(x) and E[u relu(v)] = K12 / 2.
  rng = np.random.default_rng(0)
  x1, x2 = rng.normal(size=(5, 6)), rng.normal(size=(4, 6))
  alpha = 0.2
  k12, k11, k22 = x1 @ x2.T / 6, np.sum(x1**2, 1) / 6, np.sum(x2**2, 1) / 6
  want = alpha * k12 + (1 - alpha) ** 2 * arccos_relu(k12, k11, k22)
  _, _, kernel_fn = stax.LeakyRelu(alpha)
  with jax.enable_x64(True):
    np.testing.assert_allclose(kernel_fn(x1, x2, "nngp"), want, rtol=1e-12)


def test_residual_block_kernel_is_sum_of_branches():
  branch = stax.serial(stax.Dense(16, 1.4, 0.1), stax.Relu(), stax.Dense(6, 1.4, 0.1))
  init_fn, apply_fn, kernel_fn = stax.serial(
    stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum()
  )
  rng = np.random.default_rng(1)
  x1, x2 = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
  with jax.enable_x64(True):
    got = kernel_fn(x1, x2)
    want = branch[2](x1, x2)
    np.testing.assert_allclose(got.nngp, want.nngp + x1 @ x2.T / 6, rtol=1e-12)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)
  shape, params = init_fn(jax.random.key(0), (4, 6))
  out = apply_fn(params, jnp.asarray(x1, jnp.float32))
  assert shape == out.shape == (4, 6)
  np.testing.assert_allclose(out - x1, branch[1](params[1][1], x1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "window,strides,padding",
  [
    ((2, 2), (2, 2), "VALID"),
    # The other geometries are in the slow run (and in the neural-tangents references).
    pytest.param((3, 2), (2, 1), "SAME", marks=pytest.mark.slow),
    pytest.param((3, 3), None, "SAME", marks=pytest.mark.slow),
  ],
)
def test_pooling_kernel_equals_pooled_inputs(window, strides, padding):
  # Without random layers the kernel is deterministic: per-unit inner product.
  rng = np.random.default_rng(2)
  x1, x2 = rng.normal(size=(3, 7, 5, 2)), rng.normal(size=(2, 7, 5, 2))
  for head in (stax.Flatten(), stax.GlobalAvgPool()):
    init_fn, apply_fn, kernel_fn = stax.serial(stax.AvgPool(window, strides, padding), head)
    out_shape, params = init_fn(jax.random.key(0), x1.shape)
    with jax.enable_x64(True):
      f1, f2 = apply_fn(params, x1), apply_fn(params, x2)
      want = np.asarray(f1 @ f2.T) / f1.shape[1]
      np.testing.assert_allclose(kernel_fn(x1, x2, "nngp"), want, rtol=1e-12)
      np.testing.assert_allclose(
        kernel_fn(x1, None, "nngp"), np.asarray(f1 @ f1.T) / f1.shape[1], rtol=1e-12
      )
      # No parameters: the NTK is zero.
      assert not np.any(np.asarray(kernel_fn(x1, x2).ntk))
    assert out_shape == f1.shape


def lowered_text(kernel_fn, x):
  return jax.jit(lambda a: kernel_fn(a, None, "nngp")).lower(x).as_text()


def test_flatten_head_keeps_only_same_pixel_covariances():
  x = jnp.ones((3, 6, 6, 2))
  conv = (
    stax.Conv(8, (3, 3), padding="SAME"),
    stax.Relu(),
    stax.Conv(8, (3, 3), padding="SAME"),
    stax.Relu(),
  )
  pixel_pairs = "3x3x6x6x6x6x"
  _, _, flatten_fn = stax.serial(*conv, stax.Flatten(), stax.Dense(1))
  _, _, gap_fn = stax.serial(*conv, stax.GlobalAvgPool(), stax.Dense(1))
  assert pixel_pairs not in lowered_text(flatten_fn, x)
  assert pixel_pairs in lowered_text(gap_fn, x)


NETWORKS = [
  (
    stax.serial(
      stax.Dense(8, 1.5, 0.1),
      stax.Erf(),
      stax.Dense(8, 1.5, 0.1),
      stax.LeakyRelu(0.1),
      stax.Dense(1, 1.5, 0.1),
    ),
    (7,),
  ),
  (
    stax.serial(
      stax.Conv(8, (3, 3), (2, 1), "SAME", 1.5, 0.1),
      stax.Relu(),
      stax.Conv(8, (2, 2), None, "VALID", 1.5, None),
      stax.Relu(),
      stax.Flatten(),
      stax.Dense(1, 1.5, 0.1),
    ),
    (6, 5, 3),
  ),
  (
    stax.serial(
      stax.Conv(8, (3, 3), None, "SAME", 1.5, 0.1, parameterization="standard"),
      stax.ABRelu(-0.5, 1),
      stax.AvgPool((2, 2), (2, 2), "SAME"),
      stax.Conv(8, (3, 3), None, "SAME", 1.5, 0.1),
      stax.Relu(),
      stax.GlobalAvgPool(),
      stax.Dense(1, 1.5, 0.1),
    ),
    (5, 5, 3),
  ),
]


# The pooling network (the heaviest compile) runs in the slow run; the Dense and Conv/Flatten
# ones stay in the default run.
@pytest.mark.parametrize(
  "index",
  [
    pytest.param(i, marks=pytest.mark.slow) if i == len(NETWORKS) - 1 else i
    for i in range(len(NETWORKS))
  ],
)
def test_kernels_are_symmetric_psd_and_consistent(index):
  (init_fn, apply_fn, kernel_fn), shape = NETWORKS[index]
  rng = np.random.default_rng(3)
  x = rng.normal(size=(9,) + shape)
  with jax.enable_x64(True):
    k = kernel_fn(x)
    k_cross = kernel_fn(x[:4], x[4:])
  for mat, cross in ((k.nngp, k_cross.nngp), (k.ntk, k_cross.ntk)):
    mat = np.asarray(mat)
    np.testing.assert_allclose(mat, mat.T, rtol=1e-12)
    assert np.linalg.eigvalsh(mat).min() > -1e-10 * np.abs(mat).max()
    np.testing.assert_allclose(cross, mat[:4, 4:], rtol=1e-10)
  out_shape, params = init_fn(jax.random.key(0), (9,) + shape)
  assert apply_fn(params, jnp.asarray(x, jnp.float32)).shape == out_shape


def test_leading_flatten_skips_per_pixel_covariances_with_the_same_kernel():
  """A network that starts with Flatten flattens its inputs first (a shortcut)."""
  dense = lambda: stax.Dense(16, W_std=1.5, b_std=0.1)
  head = (dense(), stax.Relu(), dense(), stax.Erf(), stax.Dense(1, W_std=1.5, b_std=0.1))
  _, _, shortcut = stax.serial(stax.Flatten(), *head)
  _, _, per_pixel = stax.serial(stax.Identity(), stax.Flatten(), *head)
  rng = np.random.default_rng(3)
  x1 = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
  x2 = rng.normal(size=(5, 8, 8, 3)).astype(np.float32)
  for a, b in ((x1, x2), (x1, None)):
    fast, slow = shortcut(a, b), per_pixel(a, b)
    np.testing.assert_allclose(fast.nngp, slow.nngp, rtol=1e-5)
    np.testing.assert_allclose(fast.ntk, slow.ntk, rtol=1e-5)

  def sizes(jaxpr):  # Sizes of every intermediate, inside nested jits too.
    for eqn in jaxpr.eqns:
      yield from (np.prod(v.aval.shape) for v in eqn.outvars)
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", param)
        if hasattr(inner, "eqns"):
          yield from sizes(inner)

  def largest_intermediate(kernel_fn):
    return max(sizes(jax.make_jaxpr(lambda a, b: kernel_fn(a, b, get="ntk"))(x1, x2).jaxpr))

  pixels = 8 * 8
  assert largest_intermediate(per_pixel) >= 6 * 5 * pixels
  assert largest_intermediate(shortcut) < 6 * 5 * pixels
