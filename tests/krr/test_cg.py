"""kdjax.krr.cg (Nyström-preconditioned CG over a row-sharded Gram) against the Cholesky solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import krr
from kdjax.kernels import stax
from kdjax.mesh import make_mesh

KERNEL_FN = stax.serial(stax.Dense(512, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))[2]


def problem(n, d=16, c=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) / np.sqrt(d)
  y = np.sin(3 * x[:, :c]) + 0.1 * rng.normal(size=(n, c))
  return x, y


def test_cg_equals_cholesky_at_n_2000_on_2_sharded_devices():
  # Two of the 8 fake devices: each CG iteration all-reduces over the mesh, and 8 device
  # threads on 2 shared cores make every rendezvous slow (the 8-device case is below).
  x, y = problem(2000)
  mesh = make_mesh(jax.devices()[:2])
  with jax.enable_x64(True):
    k = np.asarray(KERNEL_FN(x, None, "ntk"))
    want = krr.solve(k, y, reg=1e-4)
    got, info = krr.solve_cg(k, y, reg=1e-4, tol=1e-9, rank=200, mesh=mesh, return_info=True)
  assert len(got.sharding.device_set) == 2  # rows were split over 2 devices
  rel = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
  assert rel < 1e-5, rel
  assert int(info.iterations) < 200, info  # the preconditioner works (plain CG needs more)


def test_preconditioner_cuts_iterations():
  x, y = problem(600)
  with jax.enable_x64(True):
    k = np.asarray(KERNEL_FN(x, None, "ntk"))
    one = make_mesh(jax.devices()[:1])
    _, plain = krr.solve_cg(
      k, y, reg=1e-4, tol=1e-8, rank=0, max_iter=5000, mesh=one, return_info=True
    )
    _, nys = krr.solve_cg(k, y, reg=1e-4, tol=1e-8, rank=100, mesh=one, return_info=True)
  assert int(nys.iterations) < int(plain.iterations) / 2, (nys, plain)


def test_block_gram_recomputed_from_kernel_fn_equals_cholesky():
  x, y = problem(300, c=2)
  with jax.enable_x64(True):
    k = KERNEL_FN(x, None, "nngp")
    want = krr.predict(k[:50], k, y[:, 0], reg=1e-3)
    gram = krr.BlockGram(KERNEL_FN, jnp.asarray(x), batch_size=64, get="nngp")
    np.testing.assert_allclose(gram.matmat(jnp.eye(300)[:, :5]), k[:, :5], rtol=1e-10)
    got = krr.predict_cg(k[:50], gram, y[:, 0], reg=1e-3, tol=1e-10, rank=50)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8 * float(jnp.max(jnp.abs(want))))


# ~14 s on 2 shared cores (each CG step gathers over 8 device threads): slow run. Its default
# siblings: BlockGram on one device (above) and the dense K on 8 devices (below).
@pytest.mark.slow
def test_block_gram_rows_split_over_8_devices_equals_cholesky():
  """BlockGram(mesh=...) computes its row blocks in a shard_map over the 8 fake devices."""
  x, y = problem(75, c=2)
  mesh = make_mesh()
  assert mesh.size == 8
  with jax.enable_x64(True):
    k = KERNEL_FN(x, None, "ntk")
    want = krr.solve(k, y, reg=1e-3)
    # 75 rows in blocks of 4, padded to 96 = 8 devices x 3 blocks.
    gram = krr.BlockGram(KERNEL_FN, jnp.asarray(x), batch_size=4, get="ntk", mesh=mesh)
    v = jnp.asarray(np.random.default_rng(3).normal(size=(75, 2)))
    products = jax.jit(lambda v: (gram.matmat(v), gram.diagonal()))
    assert "shard_map" in str(jax.make_jaxpr(products)(v))
    kv, diagonal = products(v)
    np.testing.assert_allclose(kv, k @ v, rtol=1e-10)
    np.testing.assert_allclose(diagonal, jnp.diagonal(k), rtol=1e-12)
    got = krr.solve_cg(gram, y, reg=1e-3, tol=1e-10, rank=20)
  np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * float(jnp.max(jnp.abs(want))))
  with pytest.raises(ValueError, match="mesh needs a 'data' axis"):
    krr.BlockGram(KERNEL_FN, x, mesh=jax.make_mesh((8,), ("rows",)))
  with pytest.raises(ValueError, match="batch_size must be a positive int"):
    krr.BlockGram(KERNEL_FN, x, batch_size=0)


def test_n_not_a_multiple_of_8_devices_and_single_device_mesh():
  x, y = problem(203, c=1)
  with jax.enable_x64(True):
    k = np.asarray(KERNEL_FN(x, None, "ntk"))
    want = krr.solve(k, y[:, 0], reg=1e-3)
    for mesh in (None, make_mesh(jax.devices()[:1])):
      got = krr.solve_cg(k, y[:, 0], reg=1e-3, tol=1e-10, rank=40, mesh=mesh)
      assert got.shape == (203,)
      np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * float(jnp.max(jnp.abs(want))))


def test_not_positive_definite_raises_and_is_nan_under_jit():
  k = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalue -1
  with pytest.raises(ValueError, match="not positive definite .* try a larger reg"):
    krr.solve_cg(k, np.array([1.0, -1.0, 0.5]), reg=1e-3, rank=0, mesh=make_mesh(jax.devices()[:1]))
  with pytest.raises(ValueError, match="not symmetric"):
    krr.solve_cg(np.array([[2.0, 1.9], [-5.0, 2.0]]), np.ones(2))
  with pytest.raises(ValueError, match="NaN or infinite"):
    krr.solve_cg(np.array([[1.0, np.nan], [np.nan, 1.0]]), np.ones(2))
  with pytest.raises(ValueError, match="reg must be a number > 0"):
    krr.solve_cg(np.eye(2), np.ones(2), reg=0.0)


def test_no_convergence_within_max_iter_raises():
  x, y = problem(200, c=1)
  k = np.asarray(KERNEL_FN(x, None, "ntk"))
  with pytest.raises(ValueError, match="did not reach tol"):
    krr.solve_cg(k, y, reg=1e-6, tol=1e-12, rank=0, max_iter=3, mesh=make_mesh(jax.devices()[:1]))
