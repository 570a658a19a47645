"""Tests for DKD, logit standardisation, DIST, TAID, born-again and GT-weighted targets.

References are float64 NumPy implementations written from the papers' formulas; they
do not import kdjax.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kdjax import losses as L
from tests._helpers import np_kl, np_softmax, random_logits

# ----------------------------------------------------------------------------------------
# Independent float64 references.


def ref_dkd(s, t, labels, alpha=1.0, beta=8.0, temperature=4.0):
  """Zhao et al. (2022), eq. (1)-(7): binary TCKD and non-target NCKD, times T^2."""
  p, q = np_softmax(t, temperature), np_softmax(s, temperature)
  out = []
  for i, g in enumerate(labels):
    bt = np.array([p[i, g], 1 - p[i, g]])
    bs = np.array([q[i, g], 1 - q[i, g]])
    others = np.arange(p.shape[1]) != g
    if p[i, others].sum() == 0:  # no non-target distribution: NCKD is 0 by convention
      pt = ps = np.zeros(p.shape[1] - 1)
    else:
      pt, ps = p[i, others] / p[i, others].sum(), q[i, others] / q[i, others].sum()
    out.append(temperature**2 * (alpha * np_kl(bt, bs) + beta * np_kl(pt, ps)))
  return np.array(out)


def np_standardize(z, eps=1e-7):
  z = np.asarray(z, np.float64)
  return (z - z.mean(-1, keepdims=True)) / (z.std(-1, keepdims=True) + eps)


def ref_standardized_kd(s, t, temperature=1.0):
  zs, zt = np_standardize(s), np_standardize(t)
  return temperature**2 * np_kl(np_softmax(zt, temperature), np_softmax(zs, temperature))


def np_pearson(a, b, eps=1e-8):
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + eps)


def ref_dist(s, t, beta=1.0, gamma=1.0, temperature=1.0):
  """Huang et al. (2022), eq. (4)-(8)."""
  q, p = np_softmax(s, temperature), np_softmax(t, temperature)
  inter = 1 - np_pearson(q, p)
  intra = 1 - np_pearson(q.T, p.T)
  return inter, intra, temperature**2 * (beta * inter.mean() + gamma * intra.mean())


def ref_taid(s, t, time, temperature=1.0):
  target = np_softmax((1 - time) * np.asarray(s) + time * np.asarray(t), temperature)
  return np_kl(target, np_softmax(s, temperature)), target


def values_and_grads(fn, *args):
  """Values of ``fn`` and the gradients of their sum to every argument, under jit."""

  def total(*args):
    values = fn(*args)
    return jnp.sum(values), values

  (_, values), grads = jax.jit(
    jax.value_and_grad(total, argnums=tuple(range(len(args))), has_aux=True)
  )(*args)
  return np.asarray(values), tuple(np.asarray(g) for g in grads)


LABELS = np.array([0, 3, 5, 2, 1, 5])

# Jitted versions for value checks: one compilation per shape is much cheaper than eager
# dispatch (which compiles every primitive at each new shape). Input validation is
# tested on the eager functions.
JL = types.SimpleNamespace(
  **{
    name: jax.jit(getattr(L, name), static_argnames=("axis",))
    for name in [
      "dkd_loss",
      "kd_loss",
      "standardized_kd_loss",
      "standardize_logits",
      "dist_inter_class_loss",
      "dist_intra_class_loss",
      "dist_loss",
      "taid_target_log_probs",
      "taid_loss",
      "cwtm_weights",
      "dkpp_targets",
      "ground_truth_weighted_targets",
      "soft_cross_entropy",
    ]
  }
)

# ----------------------------------------------------------------------------------------
# DKD.


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_reference(alpha, beta, temperature):
  s, t = random_logits(0, (6, 7))
  expected = ref_dkd(s, t, LABELS, alpha, beta, temperature)
  with jax.enable_x64(True):
    got = JL.dkd_loss(
      jnp.asarray(s),
      jnp.asarray(t),
      jnp.asarray(LABELS),
      alpha=alpha,
      beta=beta,
      temperature=temperature,
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10)
  got32 = JL.dkd_loss(
    s.astype(np.float32),
    t.astype(np.float32),
    LABELS,
    alpha=alpha,
    beta=beta,
    temperature=temperature,
  )
  np.testing.assert_allclose(np.asarray(got32), expected, rtol=2e-4, atol=1e-5)
  # Class axis first.
  got_t = JL.dkd_loss(
    s.T.astype(np.float32),
    t.T.astype(np.float32),
    LABELS,
    alpha=alpha,
    beta=beta,
    temperature=temperature,
    axis=0,
  )
  np.testing.assert_allclose(np.asarray(got_t), expected, rtol=2e-4, atol=1e-5)


def test_dkd_decomposes_kd():
  """Zhao et al. eq. (7): KD = TCKD + (1 - p_g^t) NCKD, checked through dkd_loss."""
  s, t = random_logits(1, (6, 7))
  kd = np.asarray(JL.kd_loss(s, t, temperature=2.0))
  tckd = np.asarray(JL.dkd_loss(s, t, LABELS, alpha=1.0, beta=0.0, temperature=2.0))
  nckd = np.asarray(JL.dkd_loss(s, t, LABELS, alpha=0.0, beta=1.0, temperature=2.0))
  p_target = np_softmax(t, 2.0)[np.arange(6), LABELS]
  np.testing.assert_allclose(kd, tckd + (1 - p_target) * nckd, rtol=1e-4, atol=1e-6)


def test_dkd_gradients_and_properties():
  s, t = random_logits(2, (4, 5))
  labels = np.array([0, 4, 2, 2])
  with jax.enable_x64(True):
    check_grads(
      jax.jit(lambda s, t: L.dkd_loss(s, t, labels, temperature=2.0)),
      (jnp.asarray(s), jnp.asarray(t)),
      order=1,
      modes=("rev",),
      atol=1e-6,
      rtol=1e-6,
    )
  # One batch of property rows: random, equal, one-hot teachers on and off the label,
  # -inf student logits, a peaked teacher, and masked rows holding NaN and bad labels.
  one_hot = np.full((4, 5), -np.inf)
  one_hot[np.arange(4), [0, 1, 2, 3]] = 0.0
  s_inf = s.copy()
  s_inf[:, 4] = -np.inf
  student = np.concatenate([s, t, s, s_inf, s, np.full((2, 5), np.nan)])
  teacher = np.concatenate([t, t, one_hot, one_hot, np.where(one_hot == 0, 50.0, 0.0), t[:2]])
  all_labels = np.concatenate([labels, labels, labels, labels, labels, [99, -1]])
  mask = np.arange(len(student)) < 20
  values, (gs, gt) = values_and_grads(
    lambda a, b: JL.dkd_loss(a, b, all_labels, where=mask),
    jnp.asarray(student, jnp.float32),
    jnp.asarray(teacher, jnp.float32),
  )
  assert np.all(np.isfinite(values)) and np.all(values >= 0)
  assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))
  np.testing.assert_allclose(
    values[:20], ref_dkd(student[:20], teacher[:20], labels.tolist() * 5), rtol=2e-4, atol=1e-5
  )
  np.testing.assert_allclose(values[4:8], 0.0, atol=1e-5)
  np.testing.assert_array_equal(values[20:], 0.0)
  np.testing.assert_array_equal(gs[20:], 0.0)
  # bfloat16 never negative, float32 result.
  tb = jnp.asarray(np.random.default_rng(3).standard_normal((64, 9)) * 10, jnp.bfloat16)
  sb = tb + jnp.asarray(np.random.default_rng(4).standard_normal((64, 9)) * 0.01, jnp.bfloat16)
  got = jax.jit(lambda a, b: JL.dkd_loss(a, b, np.arange(64) % 9))(sb, tb)
  assert got.dtype == jnp.float32 and np.all(np.asarray(got) >= 0)


def test_dkd_bad_input():
  s = jnp.zeros((3, 4))
  labels = jnp.array([0, 1, 3])
  with pytest.raises(ValueError, match="labels"):
    L.dkd_loss(s, s, jnp.array([0, 1, 4]))
  with pytest.raises(ValueError, match="labels"):
    L.dkd_loss(s, s, jnp.array([0, -1, 2]))
  with pytest.raises(ValueError, match="labels"):
    L.dkd_loss(s, s, jnp.array([0.0, 1.0, 2.0]))
  with pytest.raises(ValueError, match="labels"):
    L.dkd_loss(s, s, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="alpha"):
    L.dkd_loss(s, s, labels, alpha=-1.0)
  with pytest.raises(ValueError, match="beta"):
    L.dkd_loss(s, s, labels, beta=-0.5)
  with pytest.raises(ValueError, match="temperature"):
    L.dkd_loss(s, s, labels, temperature=0.0)
  with pytest.raises(ValueError, match="teacher_logits"):
    L.dkd_loss(s, jnp.zeros((3, 5)), labels)
  # Under jit the range cannot be checked; in-range labels still work.
  got = jax.jit(lambda l: JL.dkd_loss(s, s + 1.0, l))(labels)
  np.testing.assert_allclose(np.asarray(got), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Logit standardisation.


def test_standardized_kd_matches_reference_and_is_scale_invariant():
  s, t = random_logits(4, (5, 8))
  for temperature in [1.0, 2.0]:
    expected = ref_standardized_kd(s, t, temperature)
    got = JL.standardized_kd_loss(s, t, temperature=temperature)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(JL.standardize_logits(s)), np_standardize(s), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(JL.standardize_logits(s.T, axis=0)), np_standardize(s).T, rtol=1e-5, atol=1e-5
  )
  # A student whose logits are an affine map of the teacher's has zero loss.
  affine = 0.3 * t + 5.0
  np.testing.assert_allclose(np.asarray(JL.standardized_kd_loss(affine, t)), 0.0, atol=1e-5)
  with jax.enable_x64(True):
    check_grads(
      jax.jit(lambda a, b: L.standardized_kd_loss(a, b, temperature=2.0)),
      (jnp.asarray(s), jnp.asarray(t)),
      order=1,
      modes=("rev",),
      atol=1e-6,
      rtol=1e-6,
    )


def test_standardize_treats_neg_inf_as_absent_class():
  s, t = random_logits(5, (3, 6))
  s_inf = s.copy()
  s_inf[:, 0] = -np.inf
  t_inf = t.copy()
  t_inf[:, 0] = -np.inf
  z = np.asarray(JL.standardize_logits(s_inf))
  assert np.all(np.isneginf(z[:, 0]))
  np.testing.assert_allclose(z[:, 1:], np_standardize(s[:, 1:]), rtol=1e-5, atol=1e-5)
  fn = lambda a, b: jnp.sum(JL.standardized_kd_loss(a, b, where=jnp.array([1, 0, 1], bool)))
  np.testing.assert_allclose(
    float(fn(s_inf, t_inf)), ref_standardized_kd(s[[0, 2], 1:], t[[0, 2], 1:]).sum(), rtol=1e-4
  )
  grads = jax.grad(fn, argnums=(0, 1))(
    jnp.asarray(s_inf, jnp.float32), jnp.asarray(t_inf, jnp.float32)
  )
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  assert np.all(np.asarray(grads[0])[1] == 0)
  # Constant rows (zero spread) standardise to zeros without NaN.
  assert np.all(np.asarray(JL.standardize_logits(jnp.full((2, 4), 3.0))) == 0)
  g = jax.grad(lambda a: jnp.sum(JL.standardized_kd_loss(a, jnp.asarray(t[:2, :4]))))(
    jnp.full((2, 4), 3.0)
  )
  assert np.all(np.isfinite(np.asarray(g)))


# ----------------------------------------------------------------------------------------
# DIST.


def test_dist_matches_reference():
  s, t = random_logits(6, (8, 5))
  for kwargs in [{}, {"beta": 2.0, "gamma": 0.5, "temperature": 4.0}]:
    inter, intra, total = ref_dist(s, t, **kwargs)
    temperature = kwargs.get("temperature", 1.0)
    np.testing.assert_allclose(
      np.asarray(JL.dist_inter_class_loss(s, t, temperature=temperature)),
      inter,
      rtol=1e-4,
      atol=1e-6,
    )
    np.testing.assert_allclose(
      np.asarray(JL.dist_intra_class_loss(s, t, temperature=temperature)),
      intra,
      rtol=1e-4,
      atol=1e-6,
    )
    np.testing.assert_allclose(float(JL.dist_loss(s, t, **kwargs)), total, rtol=1e-4)
  with jax.enable_x64(True):
    check_grads(
      jax.jit(lambda a, b: L.dist_loss(a, b, temperature=2.0)),
      (jnp.asarray(s), jnp.asarray(t)),
      order=1,
      modes=("rev",),
      atol=1e-6,
      rtol=1e-6,
    )


def test_dist_where_leading_axes_and_neg_inf():
  s, t = random_logits(7, (2, 4, 5))
  mask = np.array([[True, True, False, True], [False, True, True, True]])
  s_bad = np.where(mask[..., None], s, np.nan)
  value, (g,) = values_and_grads(
    lambda a: L.dist_loss(a, t, where=mask), jnp.asarray(s_bad, jnp.float32)
  )
  _, _, expected = ref_dist(s[mask], t[mask])
  np.testing.assert_allclose(value, expected, rtol=1e-4)
  assert np.all(np.isfinite(g)) and np.all(g[~mask] == 0)
  # -inf logits and one-hot teachers: finite values and gradients.
  one_hot = np.where(np.eye(5)[[0, 1, 2, 3]] > 0, 0.0, -np.inf)
  s2 = s[0].copy()
  s2[:, 4] = -np.inf
  value, grads = values_and_grads(
    L.dist_loss, jnp.asarray(s2, jnp.float32), jnp.asarray(one_hot, jnp.float32)
  )
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
  _, _, expected = ref_dist(s2, one_hot)
  np.testing.assert_allclose(value, expected, rtol=1e-4)
  np.testing.assert_allclose(float(JL.dist_loss(t[0], t[0])), 0.0, atol=1e-5)


def test_dist_bad_input():
  s = jnp.zeros((3, 4))
  with pytest.raises(ValueError, match="gamma"):
    L.dist_loss(s, s, gamma=-1.0)
  with pytest.raises(ValueError, match="beta"):
    L.dist_loss(s, s, beta=-1.0)
  with pytest.raises(ValueError, match="teacher_logits"):
    L.dist_loss(s, jnp.zeros((4, 4)))


# ----------------------------------------------------------------------------------------
# TAID.


def test_taid_target_and_loss_match_reference():
  s, t = random_logits(8, (4, 6))

  @jax.jit  # one compile for every time and temperature (eager dispatch compiles each op)
  def taid(time, temperature):
    return (
      JL.taid_target_log_probs(s, t, t=time, temperature=temperature),
      JL.taid_loss(s, t, t=time, temperature=temperature),
    )

  for time in [0.0, 0.4, 1.0]:
    expected, target = ref_taid(s, t, time, temperature=1.5)
    log_target, loss = taid(time, 1.5)
    np.testing.assert_allclose(np.exp(np.asarray(log_target)), target, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-4, atol=1e-6)
  # t = 1 is the forward KL; t = 0 is zero.
  kl = jax.jit(L.kl_divergence)(s, t)
  np.testing.assert_allclose(np.asarray(taid(1.0, 1.0)[1]), np.asarray(kl), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(taid(0.0, 1.0)[1]), 0.0, atol=1e-6)


def test_taid_gradient_treats_target_as_constant():
  s, t = random_logits(9, (3, 5))
  time, temperature = 0.6, 2.0
  _, target = ref_taid(s, t, time, temperature)
  # d/ds KL(p_t || softmax(s / T)) with p_t fixed = (q - p_t) / T.
  expected = (np_softmax(s, temperature) - target) / temperature
  with jax.enable_x64(True):
    got = jax.grad(
      lambda a: jnp.sum(JL.taid_loss(a, jnp.asarray(t), t=time, temperature=temperature))
    )(jnp.asarray(s))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-9, atol=1e-12)
    # The gradient to the teacher flows through the target; check it numerically.
    check_grads(
      jax.jit(lambda b: L.taid_loss(jnp.asarray(s), b, t=time)),
      (jnp.asarray(t),),
      order=1,
      modes=("rev",),
      atol=1e-6,
      rtol=1e-6,
    )


def test_taid_neg_inf_where_and_bad_input():
  s, t = random_logits(10, (3, 5))
  s[:, 0] = t[:, 0] = -np.inf
  one_hot = np.where(np.eye(5)[[1, 2, 3]] > 0, 0.0, -np.inf)
  for teacher, time in [(t, 0.5), (one_hot, 1.0), (one_hot, 0.0), (one_hot, 0.3)]:
    fn = lambda a, b: jnp.sum(JL.taid_loss(a, b, t=time))
    value = fn(jnp.asarray(s, jnp.float32), jnp.asarray(teacher, jnp.float32))
    grads = jax.grad(fn, argnums=(0, 1))(
      jnp.asarray(s, jnp.float32), jnp.asarray(teacher, jnp.float32)
    )
    assert np.isfinite(float(value)) and float(value) >= 0
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  mask = np.array([True, False, True])
  got = JL.taid_loss(np.where(mask[:, None], s, np.nan), t, t=0.5, where=mask)
  assert np.asarray(got)[1] == 0 and np.all(np.isfinite(np.asarray(got)))
  for bad in [-0.1, 1.1]:
    with pytest.raises(ValueError, match="t must"):
      L.taid_loss(s, t, t=bad)
    with pytest.raises(ValueError, match="t must"):
      L.taid_target_log_probs(s, t, t=bad)


def test_taid_schedule_matches_reference_loop():
  rng = np.random.default_rng(11)
  losses = 3.0 * np.exp(-np.arange(40) / 10) * (1 + 0.1 * rng.random(40))
  kwargs = dict(num_steps=40, t_start=0.2, t_end=0.9, alpha=0.05, beta=0.9)
  # Reference loop from the paper's Algorithm 1.
  t, m, prev, expected = 0.2, 0.0, None, []
  for n, loss in enumerate(losses):
    if prev is not None:
      m = 0.9 * m + 0.1 * (prev - loss) / (prev + 1e-15)
      linear = 0.2 + 0.7 * n / 40
      t = min(0.9, max(linear, t + 0.05 / (1 + np.exp(-m)) * (1 - t)))
    prev = loss
    expected.append(t)
  update = jax.jit(lambda state, loss, n: L.taid_schedule_update(state, loss, step=n, **kwargs))
  state, got = L.taid_schedule_init(0.2), []
  for n, loss in enumerate(losses):
    state = update(state, loss, n)
    got.append(float(state.t))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert got[-1] <= 0.9 and np.all(np.diff(got) >= 0)
  with pytest.raises(ValueError, match="num_steps"):
    L.taid_schedule_update(state, 1.0, step=0, num_steps=0)
  with pytest.raises(ValueError, match="t_start"):
    L.taid_schedule_init(1.5)


# ----------------------------------------------------------------------------------------
# Born-again networks: CWTM and DKPP.


def test_cwtm_weights():
  s, t = random_logits(12, (6, 5), scale=3.0)
  confidence = np_softmax(t).max(-1)
  np.testing.assert_allclose(
    np.asarray(JL.cwtm_weights(t)), confidence / confidence.mean(), rtol=1e-5
  )
  mask = np.array([True, True, False, True, False, True])
  got = np.asarray(JL.cwtm_weights(np.where(mask[:, None], t, np.nan), where=mask))
  np.testing.assert_allclose(got[mask], confidence[mask] / confidence[mask].mean(), rtol=1e-5)
  assert np.all(got[~mask] == 0)
  np.testing.assert_allclose(
    np.asarray(JL.cwtm_weights(t.T, axis=0, temperature=2.0)),
    np_softmax(t, 2.0).max(-1) / np_softmax(t, 2.0).max(-1).mean(),
    rtol=1e-5,
  )
  # Constants: no gradient flows to the teacher.
  g = jax.grad(lambda b: jnp.sum(JL.cwtm_weights(b) * jnp.arange(6.0)))(jnp.asarray(t))
  assert np.all(np.asarray(g) == 0)


def test_dkpp_targets_permute_only_non_argmax_probabilities():
  _, t = random_logits(13, (200, 6))
  probs = np_softmax(t)
  targets = np.asarray(JL.dkpp_targets(jax.random.key(0), t))
  top = probs.argmax(-1)
  rows = np.arange(200)
  np.testing.assert_allclose(targets[rows, top], probs[rows, top], rtol=1e-6)
  np.testing.assert_allclose(np.sort(targets, -1), np.sort(probs, -1), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-5)
  # The non-argmax classes are shuffled: each non-argmax position keeps its own
  # probability about 1/5 of the time (uniform over 5 positions), not always.
  kept = np.isclose(targets, probs, rtol=0, atol=1e-7)
  kept_rate = kept[np.arange(6)[None, :] != top[:, None]].mean()
  assert 0.1 < kept_rate < 0.35, kept_rate
  # Same key, same targets; another key, other targets; class axis first works.
  np.testing.assert_array_equal(np.asarray(JL.dkpp_targets(jax.random.key(0), t)), targets)
  assert not np.allclose(np.asarray(JL.dkpp_targets(jax.random.key(1), t)), targets)
  np.testing.assert_array_equal(
    np.asarray(JL.dkpp_targets(jax.random.key(0), t.T, axis=0)).T, targets
  )


# ----------------------------------------------------------------------------------------
# Ground-truth-weighted targets and soft cross-entropy.


def test_ground_truth_weighted_targets_and_soft_cross_entropy():
  s, t = random_logits(14, (6, 7))
  for alpha in [0.0, 0.3, 1.0]:
    expected = (1 - alpha) * np.eye(7)[LABELS] + alpha * np_softmax(t, 2.0)
    got = JL.ground_truth_weighted_targets(t, LABELS, alpha=alpha, temperature=2.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)
  targets = np.asarray(JL.ground_truth_weighted_targets(t, LABELS, alpha=0.3))
  log_q = np.log(np_softmax(s))
  np.testing.assert_allclose(
    np.asarray(JL.soft_cross_entropy(s, targets)), -(targets * log_q).sum(-1), rtol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(JL.soft_cross_entropy(s, np.eye(7)[LABELS], temperature=3.0)),
    -np.log(np_softmax(s, 3.0))[np.arange(6), LABELS],
    rtol=1e-5,
  )
  with jax.enable_x64(True):
    check_grads(
      jax.jit(
        lambda a, b: L.soft_cross_entropy(
          a, L.ground_truth_weighted_targets(b, jnp.asarray(LABELS), alpha=0.4)
        )
      ),
      (jnp.asarray(s), jnp.asarray(t)),
      order=1,
      modes=("rev",),
      atol=1e-6,
      rtol=1e-6,
    )
  # Zero targets at -inf student logits give no NaN; masked rows give 0.
  s_inf = s.copy()
  s_inf[:, 6] = -np.inf
  one_hot = np.eye(7)[LABELS]
  mask = LABELS != 5
  fn = lambda a: jnp.sum(JL.soft_cross_entropy(a, one_hot, where=mask))
  assert np.isfinite(float(fn(jnp.asarray(s_inf, jnp.float32))))
  assert np.all(np.isfinite(np.asarray(jax.grad(fn)(jnp.asarray(s_inf, jnp.float32)))))
  with pytest.raises(ValueError, match="alpha"):
    L.ground_truth_weighted_targets(t, LABELS, alpha=1.2)
  with pytest.raises(ValueError, match="labels"):
    L.ground_truth_weighted_targets(t, LABELS + 2, alpha=0.5)
  with pytest.raises(ValueError, match="target_probs"):
    L.soft_cross_entropy(s, targets[:, :6])
