"""A NaN or +inf logit never turns into a plausible loss (issue: silent KD no-op).

A NaN input gives a NaN loss; a +inf logit gives NaN or the one-hot limit (here: NaN);
-inf logits ("impossible class") and masked-out examples keep their finite results.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses as L

LABELS = jnp.array([0, 3, 1, 2, 4, 0])
# One example per defect, plus a clean last row.
DEFECTS = [
  ("teacher", np.nan),
  ("student", np.nan),
  ("teacher", np.inf),
  ("student", np.inf),
  ("teacher", "all-nan"),
]


def _batch(seed=0):
  """Logits [6, 5]: row i has defect i of DEFECTS, the last row is clean."""
  rng = np.random.default_rng(seed)
  s, t = (rng.normal(size=(2, len(DEFECTS) + 1, 5)) * 2).astype(np.float32)
  for row, (side, bad) in enumerate(DEFECTS):
    x = t if side == "teacher" else s
    if bad == "all-nan":
      x[row] = np.nan
    else:
      x[row, 1] = bad
  return jnp.asarray(s), jnp.asarray(t)


# (name, loss(s, t) -> per-example or scalar loss). Every public loss of two logit arrays.
LOSSES = [
  ("kd_loss", lambda s, t: L.kd_loss(s, t, temperature=2.0)),
  ("kl_divergence", lambda s, t: L.kl_divergence(s, t)),
  ("reverse_kl", lambda s, t: L.reverse_kl(s, t)),
  ("jsd", lambda s, t: L.generalized_jsd(s, t, beta=0.3)),
  ("jsd_beta0", lambda s, t: L.generalized_jsd(s, t, beta=0.0)),
  ("jsd_beta1", lambda s, t: L.generalized_jsd(s, t, beta=1.0)),
  ("total_variation", lambda s, t: L.total_variation(s, t)),
  ("skew_kl", lambda s, t: L.skew_kl(s, t, alpha=0.2)),
  ("skew_kl_alpha1", lambda s, t: L.skew_kl(s, t, alpha=1.0)),
  ("skew_reverse_kl", lambda s, t: L.skew_reverse_kl(s, t, alpha=0.2)),
  ("skew_reverse_kl_alpha1", lambda s, t: L.skew_reverse_kl(s, t, alpha=1.0)),
  ("dkd_loss", lambda s, t: L.dkd_loss(s, t, LABELS[: len(s)])),
  ("dkd_loss_nckd_only", lambda s, t: L.dkd_loss(s, t, LABELS[: len(s)], alpha=0.0)),
  ("standardized_kd_loss", lambda s, t: L.standardized_kd_loss(s, t, temperature=2.0)),
  ("dist_inter_class_loss", lambda s, t: L.dist_inter_class_loss(s, t)),
  ("taid_loss", lambda s, t: L.taid_loss(s, t, t=0.5)),
  ("soft_cross_entropy", lambda s, t: L.soft_cross_entropy(s, jax.nn.softmax(t))),
  ("token_kd_loss", lambda s, t: L.token_kd_loss(s[None], t[None])[0]),
  ("token_kd_loss_jsd", lambda s, t: L.token_kd_loss(s[None], t[None], divergence="jsd")[0]),
]
IDS = [name for name, _ in LOSSES]


@pytest.mark.parametrize("name,loss", LOSSES, ids=IDS)
def test_nan_or_inf_logit_gives_nan(name, loss):
  s, t = _batch()
  value = np.asarray(jax.jit(loss)(s, t))
  for row, (side, bad) in enumerate(DEFECTS):
    assert np.isnan(value[row]), f"{name}: {bad} {side} logit gave {value[row]}, not NaN"
  assert np.isfinite(value[-1]), name  # the clean example is untouched


@pytest.mark.parametrize("side", ["teacher", "student"])
def test_dist_loss_nan_gives_nan(side):
  s, t = _batch()
  s, t = (s[1:2], t[1:2]) if side == "student" else (s[:1], t[:1])
  assert np.isnan(float(L.dist_loss(s, t)))


def test_masked_nan_examples_stay_zero_with_zero_gradient():
  s, t = _batch()
  s, t = jnp.repeat(s[-1:], 2, axis=0), jnp.repeat(t[-1:], 2, axis=0)
  t = t.at[1].set(jnp.nan)
  s = s.at[1, 0].set(jnp.inf)
  where = jnp.array([True, False])
  for fn in (L.kd_loss, L.kl_divergence, L.reverse_kl, L.skew_reverse_kl, L.total_variation):
    # Under one jit per loss: op by op, these five gradients took ~150 XLA compiles.
    value, grad = jax.jit(jax.value_and_grad(lambda s: jnp.sum(fn(s, t, where=where))))(s)
    assert np.isfinite(float(value)), fn.__name__
    assert np.all(np.isfinite(np.asarray(grad))), fn.__name__
    np.testing.assert_array_equal(np.asarray(grad)[1], 0.0)


def test_total_variation_student_gradient_is_nan_for_a_nan_teacher():
  """The loss was NaN but its student gradient a finite ~1e-8 (jnp.abs's gradient at NaN is
  -1). A clean row keeps the float64 gradient -1/2 (diag(q) - q q^T) sign(p - q)."""
  s, t = _batch()
  grad = np.asarray(jax.jit(jax.grad(lambda s: jnp.sum(L.total_variation(s, t))))(s))
  for row, (side, bad) in enumerate(DEFECTS):
    assert np.all(np.isnan(grad[row])), f"{bad} {side} logit gave the gradient {grad[row]}"
  s64, t64 = np.asarray(s[-1], np.float64), np.asarray(t[-1], np.float64)
  p, q = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in (t64, s64))
  expected = -0.5 * (np.diag(q) - np.outer(q, q)) @ np.sign(p - q)
  np.testing.assert_allclose(grad[-1], expected, rtol=1e-5, atol=1e-7)


def test_chunked_kd_loss_nan_teacher_gives_nan():
  rng = np.random.default_rng(0)
  hs, ht = rng.normal(size=(2, 6, 4)).astype(np.float32)
  ws, wt = rng.normal(size=(2, 4, 7)).astype(np.float32)
  ht[2] = np.nan
  for divergence in ("kl", "kd", "reverse_kl", "jsd", "tv"):
    value = np.asarray(L.chunked_kd_loss(hs, ws, ht, wt, divergence=divergence, chunk_size=4))
    assert np.isnan(value[2]), divergence
    assert np.all(np.isfinite(np.delete(value, 2))), divergence
    total, _ = L.chunked_kd_sum_and_count(hs, ws, ht, wt, divergence=divergence, chunk_size=4)
    assert np.isnan(float(total)), divergence
