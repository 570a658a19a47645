"""Feature KD losses against float64 NumPy references written from the papers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kdjax.losses import features as F

RTOL = 2e-5


def _rng(seed=0):
  return np.random.default_rng(seed)


def _smooth_l1(x):
  return np.where(np.abs(x) <= 1, 0.5 * x * x, np.abs(x) - 0.5)


# ----------------------------------------------------------------- NumPy references


def ref_fitnets(s, t, w=None, mask=None):
  r = s @ w if w is not None else s
  sq = (r - t) ** 2
  if mask is not None:
    sq = sq * mask
  return np.array([0.5 * sq[i].sum() for i in range(len(s))])


def ref_attention(f, p):
  b, h, w, c = f.shape
  out = []
  for i in range(b):
    q = np.zeros(h * w)
    for y in range(h):
      for x in range(w):
        q[y * w + x] = np.mean(np.abs(f[i, y, x, :]) ** p)
    out.append(q / np.linalg.norm(q))
  return np.array(out)


def ref_at_loss(fs, ft, p):
  d = ref_attention(fs, p) - ref_attention(ft, p)
  return (d**2).mean(axis=1)


def ref_rkd_distance(s, t):
  b = len(s)
  pairs = [(i, j) for i in range(b) for j in range(b) if i != j]

  def psi(x):
    d = {pr: np.linalg.norm(x[pr[0]] - x[pr[1]]) for pr in pairs}
    mu = np.mean(list(d.values()))
    return {pr: v / mu for pr, v in d.items()}

  ps, pt = psi(s), psi(t)
  return np.mean([_smooth_l1(pt[pr] - ps[pr]) for pr in pairs])


def ref_rkd_angle(s, t):
  b = len(s)

  def psi(x, i, j, k):
    a, c = x[i] - x[j], x[k] - x[j]
    na, nc = np.linalg.norm(a), np.linalg.norm(c)
    if na == 0 or nc == 0:
      return 0.0
    return a @ c / (na * nc)

  vals = [
    _smooth_l1(psi(t, i, j, k) - psi(s, i, j, k))
    for i, j, k in itertools.product(range(b), repeat=3)
  ]
  return np.mean(vals)


def ref_pkt(s, t, eps=1e-8):
  b = len(s)

  def cond(x):
    kern = lambda a, c: 0.5 * (a @ c / (np.linalg.norm(a) * np.linalg.norm(c)) + 1)
    p = np.zeros((b, b))
    for i in range(b):
      den = sum(kern(x[k], x[i]) for k in range(b) if k != i)
      for j in range(b):
        if j != i:
          p[i, j] = kern(x[j], x[i]) / den
    return p

  p, q = cond(t), cond(s)
  total = 0.0
  for i in range(b):
    for j in range(b):
      if j != i:
        total += p[i, j] * np.log((p[i, j] + eps) / (q[i, j] + eps))
  return total / b


def ref_sp(s, t):
  b = len(s)

  def g(x):
    gram = x @ x.T
    return gram / np.linalg.norm(gram, axis=1, keepdims=True)

  return np.sum((g(t) - g(s)) ** 2) / b**2


def ref_linear_cka(x, y):
  # Feature-space form (Kornblith et al. 2019, eq. for linear CKA): centred columns.
  x = x - x.mean(0)
  y = y - y.mean(0)
  return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def ref_rbf_cka(x, y, threshold):
  n = len(x)

  def gram(z):
    d2 = np.array([[np.sum((z[i] - z[j]) ** 2) for j in range(n)] for i in range(n)])
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))

  h = np.eye(n) - np.ones((n, n)) / n
  hsic = lambda k, l: np.trace(k @ h @ l @ h) / (n - 1) ** 2
  k, l = gram(x), gram(y)
  return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


# ----------------------------------------------------------------------- tests


def test_fitnets_matches_reference_with_regressor_and_mask():
  rng = _rng(1)
  s = rng.normal(size=(4, 6))
  t = rng.normal(size=(4, 3))
  w = rng.normal(size=(6, 3))
  mask = rng.random((4, 3)) > 0.3
  got = F.fitnets_loss(
    jnp.float32(s), jnp.float32(t), regressor=lambda x: x @ jnp.float32(w), where=mask
  )
  assert got.shape == (4,)
  np.testing.assert_allclose(got, ref_fitnets(s, t, w, mask), rtol=RTOL)
  np.testing.assert_allclose(F.fitnets_loss(t[::-1], t), ref_fitnets(t[::-1], t), rtol=RTOL)


def test_fitnets_regressor_gets_gradient():
  rng = _rng(2)
  s, t, w = rng.normal(size=(3, 5)), rng.normal(size=(3, 2)), rng.normal(size=(5, 2))
  grad = jax.grad(lambda w: F.fitnets_loss(s, t, regressor=lambda x: x @ w).sum())(w)
  np.testing.assert_allclose(grad, s.T @ (s @ w - t), rtol=1e-4)


def test_fitnets_shape_mismatch_raises():
  with pytest.raises(ValueError, match="regressor"):
    F.fitnets_loss(jnp.ones((2, 3)), jnp.ones((2, 4)))


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_transfer_matches_reference(p):
  rng = _rng(3)
  fs = rng.normal(size=(2, 4, 3, 5))
  ft = rng.normal(size=(2, 4, 3, 7))
  np.testing.assert_allclose(
    F.attention_map(jnp.float32(fs), p=p), ref_attention(fs, p), rtol=RTOL, atol=1e-7
  )
  got = F.attention_transfer_loss(jnp.float32(fs), jnp.float32(ft), p=p)
  assert got.shape == (2,)
  np.testing.assert_allclose(got, ref_at_loss(fs, ft, p), rtol=1e-4)


def test_attention_transfer_rejects_spatial_mismatch():
  with pytest.raises(ValueError, match="height"):
    F.attention_transfer_loss(jnp.ones((2, 4, 4, 3)), jnp.ones((2, 2, 2, 3)))


def test_rkd_distance_matches_reference():
  rng = _rng(4)
  s, t = rng.normal(size=(6, 5)), 3.0 * rng.normal(size=(6, 8))
  np.testing.assert_allclose(
    F.rkd_distance_loss(jnp.float32(s), jnp.float32(t)), ref_rkd_distance(s, t), rtol=RTOL
  )
  # Distances are normalised by their mean: scaling a network's features changes nothing.
  np.testing.assert_allclose(F.rkd_distance_loss(s, 10.0 * s), 0.0, atol=1e-6)


def test_rkd_angle_matches_reference_including_repeated_points():
  rng = _rng(5)
  s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))
  t[3] = t[1]  # a repeated teacher point: degenerate angles
  np.testing.assert_allclose(
    F.rkd_angle_loss(jnp.float32(s), jnp.float32(t)), ref_rkd_angle(s, t), rtol=RTOL
  )


def test_pkt_matches_reference():
  rng = _rng(6)
  s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 7))
  np.testing.assert_allclose(F.pkt_loss(jnp.float32(s), jnp.float32(t)), ref_pkt(s, t), rtol=1e-4)
  np.testing.assert_allclose(F.pkt_loss(s, s), 0.0, atol=1e-7)


def test_similarity_preserving_matches_reference():
  rng = _rng(7)
  s, t = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 10))
  np.testing.assert_allclose(
    F.similarity_preserving_loss(jnp.float32(s), jnp.float32(t)),
    ref_sp(s.reshape(6, -1), t),
    rtol=RTOL,
  )


def test_linear_cka_matches_feature_space_reference_and_invariances():
  rng = _rng(8)
  x = rng.normal(size=(10, 6))
  y = x @ rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(10, 4))
  np.testing.assert_allclose(
    F.linear_cka(jnp.float32(x), jnp.float32(y)), ref_linear_cka(x, y), rtol=RTOL
  )
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  np.testing.assert_allclose(F.linear_cka(x, 7.0 * x @ q), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
    F.cka_loss(jnp.float32(y), jnp.float32(x)), 1.0 - ref_linear_cka(x, y), rtol=1e-4
  )


def test_rbf_cka_matches_trace_reference():
  rng = _rng(9)
  x = rng.normal(size=(9, 5))
  y = np.tanh(x @ rng.normal(size=(5, 3)))
  for threshold in (0.5, 1.0):
    np.testing.assert_allclose(
      F.rbf_cka(jnp.float32(x), jnp.float32(y), threshold=threshold),
      ref_rbf_cka(x, y, threshold),
      rtol=1e-4,
    )
  np.testing.assert_allclose(
    F.cka_loss(x, y, kernel="rbf"), 1.0 - ref_rbf_cka(x, y, 1.0), rtol=1e-4
  )
  with pytest.raises(ValueError, match="kernel"):
    F.cka_loss(x, y, kernel="poly")


def _scalar(fn):
  return lambda s, t: jnp.sum(fn(s, t))


ALL_LOSSES = {
  "fitnets": F.fitnets_loss,
  "attention": F.attention_transfer_loss,
  "rkd_distance": F.rkd_distance_loss,
  "rkd_angle": F.rkd_angle_loss,
  "pkt": F.pkt_loss,
  "sp": F.similarity_preserving_loss,
  "cka_linear": F.cka_loss,
  "cka_rbf": lambda s, t: F.cka_loss(s, t, kernel="rbf"),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_zero_features_give_finite_values_and_gradients(name):
  fn = _scalar(ALL_LOSSES[name])
  zeros = jnp.zeros((4, 3, 3, 2), jnp.float32)
  other = jnp.asarray(_rng(10).normal(size=(4, 3, 3, 2)), jnp.float32)
  value_and_grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
  for s, t in [(zeros, zeros), (zeros, other), (other, zeros)]:
    value, (gs, gt) = value_and_grad(s, t)
    assert np.isfinite(value), name
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt)), name
  value = jax.jit(fn)(zeros.astype(jnp.bfloat16), other.astype(jnp.bfloat16))
  assert np.isfinite(np.float32(value)), name


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradients_match_finite_differences(name):
  fn = _scalar(ALL_LOSSES[name])
  rng = _rng(11)
  with jax.enable_x64(True):
    s = jnp.asarray(rng.normal(size=(4, 3, 3, 2)))
    t = jnp.asarray(rng.normal(size=(4, 3, 3, 2)))
    check_grads(jax.jit(lambda s: fn(s, t)), (s,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_relational_losses_reject_batch_mismatch():
  for fn in (
    F.rkd_distance_loss,
    F.rkd_angle_loss,
    F.pkt_loss,
    F.similarity_preserving_loss,
    F.cka_loss,
  ):
    with pytest.raises(ValueError):
      fn(jnp.ones((3, 2)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="batch"):
    F.pkt_loss(jnp.ones((3,)), jnp.ones((3,)))
