"""Tiled and sharded Gram matrices equal the one-shot kernel_fn."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from kdjax.kernels import sharded_kernel_fn, stax, tiled_kernel_fn

_, _, CONV_GAP = stax.serial(
  stax.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
  stax.Relu(),
  stax.GlobalAvgPool(),
  stax.Dense(1, 1.5, 0.1),
)


def inputs():
  rng = np.random.default_rng(0)
  return rng.normal(size=(11, 4, 4, 2)), rng.normal(size=(7, 4, 4, 2))


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_tiled_equals_one_shot(batch_size):
  x1, x2 = inputs()
  tiled = tiled_kernel_fn(CONV_GAP, batch_size)
  with jax.enable_x64(True):
    for a, b in ((x1, x2), (x1, None)):
      want = CONV_GAP(a, b)
      got = tiled(a, b)
      np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12, atol=0)
      np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12, atol=0)
    ntk = tiled(x1, x2, "ntk")
    np.testing.assert_allclose(ntk, CONV_GAP(x1, x2, "ntk"), rtol=1e-12)


def test_sharded_over_eight_devices_equals_one_shot():
  assert jax.device_count() == 8
  x1, x2 = inputs()
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  with jax.enable_x64(True):
    for fn in (
      sharded_kernel_fn(CONV_GAP, 2),
      sharded_kernel_fn(CONV_GAP, 1, mesh=mesh, axis_name="data"),
    ):
      for a, b in ((x1, x2), (x1, None)):
        want = CONV_GAP(a, b)
        got = fn(a, b)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)


def test_bad_arguments():
  with pytest.raises(ValueError, match="batch_size"):
    tiled_kernel_fn(CONV_GAP, 0)
  with pytest.raises(ValueError, match="axis_name"):
    sharded_kernel_fn(CONV_GAP, 2, axis_name="nope")
  with pytest.raises(ValueError, match="get"):
    tiled_kernel_fn(CONV_GAP, 2)(np.ones((2, 4, 4, 2)), None, "cov")
  for fn in (tiled_kernel_fn(CONV_GAP, 2), sharded_kernel_fn(CONV_GAP, 2)):
    with pytest.raises(ValueError, match="x1 must be a non-empty batch"):
      fn(np.ones((0, 4, 4, 2)))
