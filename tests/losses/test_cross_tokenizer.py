"""Cross-tokenizer losses (ULD, ALM) against float64 NumPy references written from the
papers, and the chunk alignment on hand-made tokenizations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from kdjax import losses as L
from kdjax.losses import cross_tokenizer as X

# Jitted once per file: op-by-op dispatch costs more than the checks themselves.
uld = jax.jit(L.uld_loss)
alm = jax.jit(L.alm_loss, static_argnames="divergence")


def ref_uld(student, teacher, temperature):
  """Boizard et al. (2024), Eq. 5: sum_i |sorted p_i - sorted q_i|, zero-padded."""
  p = np.sort(softmax(teacher / temperature, axis=-1), axis=-1)[..., ::-1]
  q = np.sort(softmax(student / temperature, axis=-1), axis=-1)[..., ::-1]
  size = max(p.shape[-1], q.shape[-1])
  pad = lambda x: np.concatenate([x, np.zeros(x.shape[:-1] + (size - x.shape[-1],))], -1)  # noqa: E731
  return np.abs(pad(p) - pad(q)).sum(-1)


def test_uld_matches_the_float64_reference_across_vocabularies_and_masks():
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(3, 4, 7)) * 2, rng.normal(size=(3, 4, 11)) * 2
  where = rng.random((3, 4)) < 0.7
  got = uld(jnp.float32(student), jnp.float32(teacher), temperature=1.5, where=where)
  np.testing.assert_allclose(got, np.where(where, ref_uld(student, teacher, 1.5), 0), atol=1e-6)
  # Relabelling either vocabulary changes nothing; the same distribution gives 0.
  perm = uld(student[..., rng.permutation(7)], teacher[..., ::-1], temperature=1.5)
  np.testing.assert_allclose(perm, ref_uld(student, teacher, 1.5), atol=1e-6)
  same = uld(teacher[..., ::-1], teacher)
  np.testing.assert_allclose(same, 0, atol=1e-6)
  # Masked rows: zero gradient even when they hold NaN.
  bad = student.copy()
  bad[~where] = np.nan
  grad = jax.jit(jax.grad(lambda s: uld(s, teacher, where=where).sum()))(jnp.float32(bad))
  assert np.isfinite(grad).all() and (np.asarray(grad)[~where] == 0).all()
  with pytest.raises(ValueError, match="same shape but for the vocabulary"):
    L.uld_loss(student[:2], teacher)


def ref_binary_kl(log_p, log_q):
  p, q = np.exp(log_p), np.exp(log_q)
  return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_alm_is_the_binarised_kl_of_tempered_chunk_likelihoods():
  rng = np.random.default_rng(1)
  s = -rng.gamma(2.0, 2.0, size=(2, 9))  # chunk log-likelihoods, some near 0, some < -10
  t = -rng.gamma(2.0, 2.0, size=(2, 9))
  s[0, 0] = 0.0  # a chunk the student is certain of: finite thanks to epsilon
  where = rng.random((2, 9)) < 0.8
  tau, eps = 3.0, 1e-6
  got = alm(jnp.float32(s), jnp.float32(t), temperature=tau, where=where)
  want = ref_binary_kl(t / tau - eps, s / tau - eps)
  np.testing.assert_allclose(got, np.where(where, want, 0), rtol=2e-4, atol=1e-6)
  reverse = alm(s, t, temperature=tau, divergence="reverse_kl")
  np.testing.assert_allclose(
    reverse, ref_binary_kl(s / tau - eps, t / tau - eps), rtol=2e-4, atol=1e-6
  )
  np.testing.assert_allclose(alm(t, t, temperature=tau), 0, atol=1e-7)
  # Gradients against float64 central differences.
  with jax.enable_x64(True):
    f = jax.jit(lambda x: jnp.sum(L.alm_loss(x, jnp.asarray(t), temperature=tau)))
    x = np.minimum(s, -1e-3)
    grad = np.asarray(jax.jit(jax.grad(f))(x))
    h = 1e-6
    steps = np.zeros((3,) + s.shape)
    for j, i in enumerate([(0, 1), (1, 3), (1, 8)]):
      steps[(j,) + i] = h
    fd = (jax.vmap(f)(x + steps) - jax.vmap(f)(x - steps)) / (2 * h)
    np.testing.assert_allclose(grad[[0, 1, 1], [1, 3, 8]], fd, rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="divergence must be one of"):
    L.alm_loss(s, t, divergence="tv")
  with pytest.raises(ValueError, match="temperature"):
    L.alm_loss(s, t, temperature=0.0)


def test_chunk_log_likelihoods_sum_token_log_probs_between_boundaries():
  rng = np.random.default_rng(2)
  logp = -rng.random((2, 6))
  ids = np.array([[0, 0, 1, 2, 2, 2], [-1, 0, 1, 1, -1, -1]])
  logp[1, 4] = np.nan  # ignored: in no chunk
  got = np.asarray(jax.jit(L.chunk_log_likelihoods, static_argnums=2)(jnp.float32(logp), ids, 4))
  want = np.zeros((2, 4))
  for b in range(2):
    for t in range(6):
      if ids[b, t] >= 0:
        want[b, ids[b, t]] += logp[b, t]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_aligned_chunks_on_hand_made_tokenizations():
  # "def foo():" as bytes vs as subwords "def", " foo", "():"
  a = [bytes([c]) for c in b"def foo():"]
  b = [b"def", b" foo", b"():"]
  chunk_a, chunk_b, bounds = L.aligned_chunks(a, b)
  np.testing.assert_array_equal(bounds, [0, 3, 7, 10])
  np.testing.assert_array_equal(chunk_a, [0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(chunk_b, [0, 1, 2])
  # Crossing boundaries merge tokens into one chunk; zero-byte (control) tokens join none.
  a = [b"", b"ab", b"cd", b"e", b""]
  b = [b"a", b"bc", b"de"]
  chunk_a, chunk_b, bounds = X.aligned_chunks(a, b)
  np.testing.assert_array_equal(bounds, [0, 5])
  np.testing.assert_array_equal(chunk_a, [-1, 0, 0, 0, -1])
  np.testing.assert_array_equal(chunk_b, [0, 0, 0])
  chunk_a, chunk_b, bounds = X.aligned_chunks([b"ab", b"c", b"de"], [b"a", b"bc", b"d", b"e"])
  np.testing.assert_array_equal(bounds, [0, 3, 5])
  np.testing.assert_array_equal(chunk_a, [0, 0, 1])
  np.testing.assert_array_equal(chunk_b, [0, 0, 1, 1])
  with pytest.raises(ValueError, match="byte decodings disagree.*first difference at byte 2"):
    X.aligned_chunks([b"ab", b"c"], [b"a", b"bd"])
  with pytest.raises(ValueError, match="byte decodings disagree"):
    X.aligned_chunks([b"ab"], [b"a", b"b", b"c"])
