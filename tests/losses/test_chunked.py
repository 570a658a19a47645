"""chunked_kd_loss equals the naive full-logits loss, in values and student gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kdjax.losses import (
  chunked,
  chunked_kd_loss,
  chunked_kd_sum_and_count,
  mean_from_sum_and_count,
)
from kdjax.losses.sequence import get_divergence

N, H, HT, V = 29, 12, 9, 40


def _problem(seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  hs = rng.normal(size=(N, H))
  ws = rng.normal(size=(H, V)) / np.sqrt(H) * 2
  ht = rng.normal(size=(N, HT))
  wt = rng.normal(size=(HT, V)) / np.sqrt(HT) * 2
  where = rng.random(N) > 0.25
  weights = rng.normal(size=N)  # a generic cotangent: the per-token output is not summed
  cast = lambda x: jnp.asarray(x, dtype)
  return (
    cast(hs),
    cast(ws),
    cast(ht),
    cast(wt),
    jnp.asarray(where),
    jnp.asarray(weights, jnp.float32),
  )


def naive(
  hs, ws, ht, wt, *, where=None, vocab_where=None, divergence="kl", temperature=1.0, **hyperparams
):
  student, teacher = hs @ ws, ht @ wt
  if vocab_where is not None:
    student = jnp.where(vocab_where, student, -jnp.inf)
    teacher = jnp.where(vocab_where, teacher, -jnp.inf)
  fn = get_divergence(divergence, temperature=temperature, **hyperparams)
  return fn(student, jax.lax.stop_gradient(teacher), where=where)


def _value_and_grads(loss_fn, hs, ws, ht, wt, weights, **kwargs):
  @jax.jit
  def f(hs, ws):
    losses = loss_fn(hs, ws, ht, wt, **kwargs)
    return jnp.sum(weights * losses), losses

  (_, losses), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(hs, ws)
  return losses, grads


def _assert_close(got, want, rtol=1e-5):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  scale = np.max(np.abs(want))
  assert scale > 0
  np.testing.assert_array_less(np.max(np.abs(got - want)), rtol * scale)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1024])
def test_kl_values_and_gradients_match_naive_for_any_chunk_size(chunk_size):
  hs, ws, ht, wt, where, weights = _problem()
  want_losses, (want_dh, want_dw) = _value_and_grads(
    naive, hs, ws, ht, wt, weights, where=where, temperature=2.0
  )
  got_losses, (got_dh, got_dw) = _value_and_grads(
    chunked_kd_loss, hs, ws, ht, wt, weights, where=where, temperature=2.0, chunk_size=chunk_size
  )
  assert got_losses.shape == (N,)
  _assert_close(got_losses, want_losses)
  _assert_close(got_dh, want_dh)
  _assert_close(got_dw, want_dw)
  np.testing.assert_array_equal(got_losses[~where], 0.0)
  np.testing.assert_array_equal(got_dh[~where], 0.0)


@pytest.mark.parametrize(
  "divergence,hyperparams",
  [
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.3}),
    ("skew_reverse_kl", {"alpha": 0.2}),
    ("tv", {}),
    pytest.param("skew_kl", {"alpha": 0.1}, marks=pytest.mark.slow),
    pytest.param("kd", {}, marks=pytest.mark.slow),
  ],
)
def test_every_divergence_matches_naive(divergence, hyperparams):
  hs, ws, ht, wt, where, weights = _problem(1)
  kwargs = dict(where=where, divergence=divergence, temperature=1.5, **hyperparams)
  want_losses, want_grads = _value_and_grads(naive, hs, ws, ht, wt, weights, **kwargs)
  got_losses, got_grads = _value_and_grads(
    chunked_kd_loss, hs, ws, ht, wt, weights, chunk_size=8, **kwargs
  )
  _assert_close(got_losses, want_losses)
  for got, want in zip(got_grads, want_grads):
    _assert_close(got, want)


def test_gradients_match_float64_finite_differences():
  hs, ws, ht, wt, where, weights = _problem(2)
  with jax.enable_x64(True):
    args = [jnp.asarray(x, jnp.float64) for x in (hs, ws, ht, wt)]
    weights = jnp.asarray(weights, jnp.float64)
    f = lambda hs, ws: jnp.sum(
      weights * chunked_kd_loss(hs, ws, *args[2:], where=where, chunk_size=6)
    )
    check_grads(f, args[:2], order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_teacher_gets_zero_gradient():
  hs, ws, ht, wt, _, _ = _problem(3)
  grads = jax.jit(
    jax.grad(lambda ht, wt: jnp.sum(chunked_kd_loss(hs, ws, ht, wt, chunk_size=5)), argnums=(0, 1))
  )(ht, wt)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_masked_vocabulary_gives_no_nan_and_matches_naive():
  hs, ws, ht, wt, where, weights = _problem(4)
  vocab_where = jnp.arange(V) < V - 7  # a vocabulary padded with 7 unused entries
  for divergence in ("kl",):
    kwargs = dict(where=where, vocab_where=vocab_where, divergence=divergence)
    want_losses, want_grads = _value_and_grads(naive, hs, ws, ht, wt, weights, **kwargs)
    got_losses, got_grads = _value_and_grads(
      chunked_kd_loss, hs, ws, ht, wt, weights, chunk_size=6, **kwargs
    )
    assert np.all(np.isfinite(got_losses))
    _assert_close(got_losses, want_losses)
    for got, want in zip(got_grads, want_grads):
      assert np.all(np.isfinite(got))
      _assert_close(got, want)
    np.testing.assert_array_equal(got_grads[1][:, ~vocab_where], 0.0)


def test_bfloat16_is_finite_and_close_to_float32():
  hs, ws, ht, wt, where, weights = _problem(5)
  want_losses, want_grads = _value_and_grads(
    chunked_kd_loss, hs, ws, ht, wt, weights, where=where, chunk_size=8
  )
  low = [x.astype(jnp.bfloat16) for x in (hs, ws, ht, wt)]
  got_losses, got_grads = _value_and_grads(
    chunked_kd_loss, *low, weights, where=where, chunk_size=8
  )
  assert got_losses.dtype == jnp.float32
  assert got_grads[0].dtype == jnp.bfloat16 and got_grads[1].dtype == jnp.bfloat16
  for got, want in zip((got_losses, *got_grads), (want_losses, *want_grads)):
    assert np.all(np.isfinite(np.asarray(got, np.float32)))
    _assert_close(got, want, rtol=0.05)


def test_never_holds_full_logits():
  """XLA's memory analysis: temporaries scale with chunk_size, not with N."""
  n, h, v = 4096, 64, 4096
  structs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in ((n, h), (h, v), (n, h), (h, v))]

  def temp_bytes(loss_fn, **kwargs):
    f = jax.grad(lambda hs, ws, ht, wt: jnp.sum(loss_fn(hs, ws, ht, wt, **kwargs)), (0, 1))
    return jax.jit(f).lower(*structs).compile().memory_analysis().temp_size_in_bytes

  logits_bytes = n * v * 4
  assert temp_bytes(naive) > logits_bytes
  assert temp_bytes(chunked_kd_loss, chunk_size=32) < logits_bytes / 4
  fused_sum = lambda *args, **kwargs: chunked_kd_sum_and_count(*args, **kwargs)[0]
  assert temp_bytes(fused_sum, chunk_size=32) < logits_bytes / 4


def test_bad_inputs_raise():
  hs, ws, ht, wt, _, _ = _problem()
  with pytest.raises(ValueError, match="student_kernel"):
    chunked_kd_loss(hs, ws.T, ht, wt)
  with pytest.raises(ValueError, match="teacher_kernel"):
    chunked_kd_loss(hs, ws, ht, wt[:, :-1])
  with pytest.raises(ValueError, match="teacher_hidden"):
    chunked_kd_loss(hs, ws, ht[:-1], wt)
  with pytest.raises(ValueError, match="where"):
    chunked_kd_loss(hs, ws, ht, wt, where=jnp.ones(N))
  with pytest.raises(ValueError, match="chunk_size"):
    chunked_kd_loss(hs, ws, ht, wt, chunk_size=0)
  with pytest.raises(ValueError, match="divergence"):
    chunked_kd_loss(hs, ws, ht, wt, divergence="hellinger")
  with pytest.raises(ValueError, match="beta"):
    chunked_kd_loss(hs, ws, ht, wt, divergence="kl", beta=0.5)


@pytest.mark.parametrize("vocab", [37, 40])
def test_blocked_kernel_gradient_with_and_without_vocab_padding(vocab, monkeypatch):
  """Small gradient blocks: 40 splits into blocks of 10, prime 37 is padded to 48."""
  from kdjax.losses import chunked

  monkeypatch.setattr(chunked, "_KERNEL_GRAD_BLOCK", 16)
  hs, ws, ht, wt, where, weights = _problem(6)
  ws, wt = ws[:, :vocab], wt[:, :vocab]
  want = _value_and_grads(naive, hs, ws, ht, wt, weights, where=where)
  got = _value_and_grads(chunked_kd_loss, hs, ws, ht, wt, weights, where=where, chunk_size=8)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _assert_close(g, w)


def test_fused_sum_and_count_matches_naive_sum_and_its_gradients():
  hs, ws, ht, wt, where, _ = _problem(7)

  def naive_mean(hs, ws):
    return jnp.sum(naive(hs, ws, ht, wt, where=where, divergence="jsd", beta=0.4)) / jnp.sum(where)

  def fused_mean(hs, ws):
    total, count = chunked_kd_sum_and_count(
      hs, ws, ht, wt, where=where, chunk_size=8, divergence="jsd", beta=0.4
    )
    return mean_from_sum_and_count(total, count)

  want = jax.jit(jax.value_and_grad(naive_mean, argnums=(0, 1)))(hs, ws)
  got = jax.jit(jax.value_and_grad(fused_mean, argnums=(0, 1)))(hs, ws)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _assert_close(g, w)
  _, count = chunked_kd_sum_and_count(hs, ws, ht, wt, where=where)
  assert count.dtype == jnp.int32 and int(count) == int(where.sum())


def test_traced_temperature_and_hyperparameters():
  """A temperature (or beta) schedule may be a traced value under jit and grad."""
  hs, ws, ht, wt, where, weights = _problem(8)

  def loss(ws, temperature, beta):
    return jnp.sum(
      weights
      * chunked_kd_loss(
        hs,
        ws,
        ht,
        wt,
        where=where,
        chunk_size=8,
        divergence="jsd",
        temperature=temperature,
        beta=beta,
      )
    )

  got = jax.jit(jax.value_and_grad(loss))(ws, 2.5, 0.3)
  want = _value_and_grads(
    naive, hs, ws, ht, wt, weights, where=where, divergence="jsd", temperature=2.5, beta=0.3
  )
  _assert_close(got[0], jnp.sum(weights * want[0]))
  _assert_close(got[1], want[1][1])


def test_data_parallel_under_shard_map_matches_single_device():
  """Each device chunks its own tokens; psum of (sum, count) gives the global mean, and
  autodiff psums the replicated kernel's gradient."""
  from jax.sharding import Mesh, PartitionSpec as P

  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs several (fake) devices")
  mesh = Mesh(np.array(devices), ("data",))
  rng = np.random.default_rng(9)
  n = 4 * len(devices)
  hs, ws, ht, wt = [
    jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((n, H), (H, V), (n, HT), (HT, V))
  ]
  where = jnp.asarray(rng.random(n) > 0.3)

  def local(hs, ws, ht, wt, where):
    total, count = chunked_kd_sum_and_count(hs, ws, ht, wt, where=where, chunk_size=3)
    return jax.lax.psum(total, "data"), jax.lax.psum(count, "data")

  sharded = jax.shard_map(
    local, mesh=mesh, in_specs=(P("data"), P(), P("data"), P(), P("data")), out_specs=(P(), P())
  )
  got = jax.jit(
    jax.value_and_grad(
      lambda hs, ws: mean_from_sum_and_count(*sharded(hs, ws, ht, wt, where)), argnums=(0, 1)
    )
  )(hs, ws)
  want = jax.jit(
    jax.value_and_grad(
      lambda hs, ws: jnp.sum(naive(hs, ws, ht, wt, where=where)) / jnp.sum(where), argnums=(0, 1)
    )
  )(hs, ws)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _assert_close(g, w)


def test_default_chunk_size_follows_the_vocabulary():
  # The largest power of two <= N whose float32 [chunk, V] logits fit in 64 MiB.
  assert chunked.default_chunk_size(8192, 128256) == 128
  assert chunked.default_chunk_size(8192, 50257) == 256
  assert chunked.default_chunk_size(1024, 16384) == 1024
  assert chunked.default_chunk_size(100, 16384) == 64
  assert chunked.default_chunk_size(0, 10) == 1
  # chunk_size=None (the default) gives the same losses as an explicit chunk size.
  hs, ws, ht, wt, where, _ = _problem()
  np.testing.assert_allclose(
    chunked_kd_loss(hs, ws, ht, wt, where=where),
    chunked_kd_loss(hs, ws, ht, wt, where=where, chunk_size=7),
    rtol=1e-6,
  )
