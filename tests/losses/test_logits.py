"""Tests for the divergences and reductions of kdjax.losses.logits.

References are float64 NumPy implementations written from the papers' formulas; they
do not import kdjax.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kdjax import losses as L
from tests._helpers import np_kl, np_kl_log, np_log_softmax, np_softmax, random_logits

# ----------------------------------------------------------------------------------------
# Independent float64 references.


def ref_kl(s, t, temperature=1.0, axis=-1):
  return np_kl_log(np_log_softmax(t, temperature, axis), np_log_softmax(s, temperature, axis), axis)


def ref_reverse_kl(s, t, temperature=1.0, axis=-1):
  return np_kl_log(np_log_softmax(s, temperature, axis), np_log_softmax(t, temperature, axis), axis)


def ref_kd(s, t, temperature=1.0, axis=-1):
  return temperature**2 * ref_kl(s, t, temperature, axis)


def ref_jsd(s, t, beta=0.5, temperature=1.0, axis=-1):
  p, q = np_softmax(t, temperature, axis), np_softmax(s, temperature, axis)
  m = beta * p + (1 - beta) * q
  return beta * np_kl(p, m, axis) + (1 - beta) * np_kl(q, m, axis)


def ref_tv(s, t, temperature=1.0, axis=-1):
  p, q = np_softmax(t, temperature, axis), np_softmax(s, temperature, axis)
  return 0.5 * np.abs(p - q).sum(axis=axis)


def ref_skew_kl(s, t, alpha=0.1, temperature=1.0, axis=-1):
  p, q = np_softmax(t, temperature, axis), np_softmax(s, temperature, axis)
  return np_kl(p, alpha * p + (1 - alpha) * q, axis)


def ref_skew_reverse_kl(s, t, alpha=0.1, temperature=1.0, axis=-1):
  p, q = np_softmax(t, temperature, axis), np_softmax(s, temperature, axis)
  return np_kl(q, (1 - alpha) * p + alpha * q, axis)


# (name, kdjax function, reference, extra keyword arguments)
CASES = [
  ("kd_loss", L.kd_loss, ref_kd, {}),
  ("kl_divergence", L.kl_divergence, ref_kl, {}),
  ("reverse_kl", L.reverse_kl, ref_reverse_kl, {}),
  ("jsd", L.generalized_jsd, ref_jsd, {"beta": 0.3}),
  ("total_variation", L.total_variation, ref_tv, {}),
  ("skew_kl", L.skew_kl, ref_skew_kl, {"alpha": 0.2}),
  ("skew_reverse_kl", L.skew_reverse_kl, ref_skew_reverse_kl, {"alpha": 0.2}),
]
# More hyper-parameter values, for the (cheap) reference comparisons.
REFERENCE_CASES = CASES + [
  ("jsd_default", L.generalized_jsd, ref_jsd, {}),
  ("jsd_0.9", L.generalized_jsd, ref_jsd, {"beta": 0.9}),
  ("skew_kl_default", L.skew_kl, ref_skew_kl, {}),
  ("skew_kl_0.7", L.skew_kl, ref_skew_kl, {"alpha": 0.7}),
  ("skew_reverse_kl_default", L.skew_reverse_kl, ref_skew_reverse_kl, {}),
]
REFERENCE_IDS = [c[0] for c in REFERENCE_CASES]
IDS = [c[0] for c in CASES]
# Divergences that stay finite when only the student / only the teacher has -inf logits.
FINITE_WITH_STUDENT_NEG_INF = {"jsd", "total_variation", "skew_kl", "skew_reverse_kl", "reverse_kl"}
FINITE_WITH_TEACHER_NEG_INF = {
  "jsd",
  "total_variation",
  "skew_kl",
  "skew_reverse_kl",
  "kd_loss",
  "kl_divergence",
}


@functools.cache
def compiled_values_and_grads(fn, **kwargs):
  """jit of (per-example values, gradients of their sum to (s, t)) for (s, t, where).

  Cached per (fn, kwargs) so that every test reuses one compilation per input shape:
  much cheaper than eager dispatch, which compiles every primitive at each new shape.
  """

  def total(s, t, where):
    values = fn(s, t, where=where, **kwargs)
    return jnp.sum(values), values

  return jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))


def values_and_grads(fn, s, t, where=None, **kwargs):
  (_, values), grads = compiled_values_and_grads(fn, **kwargs)(s, t, where)
  return np.asarray(values), tuple(np.asarray(g) for g in grads)


# ----------------------------------------------------------------------------------------
# Values against the references.


@pytest.mark.parametrize("name,fn,ref,kwargs", REFERENCE_CASES, ids=REFERENCE_IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_float64_reference(name, fn, ref, kwargs, temperature):
  s, t = random_logits(0, (3, 4, 7))
  expected = ref(s, t, temperature=temperature, **kwargs)
  with jax.enable_x64(True):
    got64 = fn(jnp.asarray(s), jnp.asarray(t), temperature=temperature, **kwargs)
    assert got64.dtype == jnp.float64 and got64.shape == (3, 4)
    np.testing.assert_allclose(np.asarray(got64), expected, rtol=1e-10, atol=1e-13)
  got32 = fn(
    jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temperature=temperature, **kwargs
  )
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got32), expected, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("name,fn,ref,kwargs", REFERENCE_CASES, ids=REFERENCE_IDS)
def test_class_axis_argument(name, fn, ref, kwargs):
  s, t = random_logits(1, (5, 3, 2))
  expected = ref(s, t, axis=0, **kwargs)
  got = fn(jnp.asarray(s), jnp.asarray(t), axis=0, **kwargs)
  assert got.shape == (3, 2)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-4, atol=2e-6)


# ----------------------------------------------------------------------------------------
# Gradients against finite differences (float64).


@pytest.mark.parametrize("name,fn,ref,kwargs", CASES, ids=IDS)
def test_gradients_match_finite_differences(name, fn, ref, kwargs):
  s, t = random_logits(3, (3, 5))
  with jax.enable_x64(True):
    f = lambda s, t: fn(s, t, temperature=1.7, **kwargs)
    check_grads(
      jax.jit(f), (jnp.asarray(s), jnp.asarray(t)), order=1, modes=("rev",), atol=1e-6, rtol=1e-6
    )


# ----------------------------------------------------------------------------------------
# Properties.


def property_batch(name, num_classes=7):
  """Rows that exercise the properties, in one batch (one compilation per loss).

  Returns float32 student and teacher logits, the example mask, and the row kinds.
  """
  rng = np.random.default_rng(10)
  normal = lambda n, scale=2.0: scale * rng.standard_normal((n, num_classes))
  groups = {}
  groups["random"] = normal(4), normal(4)
  equal = normal(3, 5.0)
  equal[0, :3] = -np.inf
  groups["equal"] = equal, equal
  groups["shifted"] = equal + 10.0 * np.arange(1, 4)[:, None], equal
  both_s, both_t = normal(2), normal(2)
  both_s[:, :2] = both_t[:, :2] = -np.inf
  groups["neg_inf_both"] = both_s, both_t
  one_hot = np.full((2, num_classes), -np.inf)
  one_hot[[0, 1], [0, 4]] = 0.0
  groups["peaked_teacher"] = normal(2), np.where(np.isfinite(one_hot), 1e4, 0.0)
  if name in FINITE_WITH_TEACHER_NEG_INF:
    groups["one_hot_teacher"] = normal(2), one_hot
  if name in FINITE_WITH_STUDENT_NEG_INF:
    only_s = normal(2)
    only_s[:, 1] = -np.inf
    groups["neg_inf_student"] = only_s, normal(2)
  near_t = normal(8, 8.0)
  groups["near_equal"] = near_t + 1e-4 * rng.standard_normal(near_t.shape), near_t
  masked_s, masked_t = normal(3), normal(3)
  masked_s[0] = np.nan  # masked rows may hold anything
  masked_t[1] = np.inf
  masked_s[2, 0] = -np.inf
  groups["masked"] = masked_s, masked_t
  kinds = np.concatenate([[k] * len(v[0]) for k, v in groups.items()])
  s = np.concatenate([v[0] for v in groups.values()]).astype(np.float32)
  t = np.concatenate([v[1] for v in groups.values()]).astype(np.float32)
  return s, t, kinds != "masked", kinds


@pytest.mark.parametrize("name,fn,ref,kwargs", CASES, ids=IDS)
def test_properties_neg_inf_one_hot_zero_nonnegative_where(name, fn, ref, kwargs):
  s, t, mask, kinds = property_batch(name)
  values, (gs, gt) = values_and_grads(
    fn, jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(mask), **kwargs
  )
  # No NaN or inf anywhere (values and both gradients), never negative.
  assert np.all(np.isfinite(values)), dict(zip(kinds, values))
  assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))
  assert np.all(values >= 0), values.min()
  # Agrees with the float64 reference on every valid row (the -inf rows included).
  expected = ref(s[mask].astype(np.float64), t[mask].astype(np.float64), **kwargs)
  np.testing.assert_allclose(values[mask], expected, rtol=2e-4, atol=2e-6)
  # Zero at equal distributions (equal logits, or logits differing by a constant).
  same = np.isin(kinds, ["equal", "shifted"])
  np.testing.assert_allclose(values[same], 0.0, atol=1e-5)
  # `where` masks exactly: value and gradient 0 on masked rows, not elsewhere.
  np.testing.assert_array_equal(values[~mask], 0.0)
  np.testing.assert_array_equal(gs[~mask], 0.0)
  np.testing.assert_array_equal(gt[~mask], 0.0)
  assert np.all(np.abs(gs[kinds == "random"]).sum(-1) > 0)
  # Eager and unmasked computations agree with the jitted, masked one.
  eager = np.asarray(fn(s, t, where=mask, **kwargs))
  np.testing.assert_allclose(eager, values, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,fn,ref,kwargs", CASES, ids=IDS)
def test_bfloat16_never_negative(name, fn, ref, kwargs):
  rng = np.random.default_rng(7)
  # Rows at several logit scales, students equal to or within rounding of the teacher.
  scale = np.repeat([1.0, 3.0, 10.0, 30.0], 64)[:, None]
  noise = np.tile(np.repeat([0.0, 1e-3, 1e-2, 0.1], 16), 4)[:, None]
  t = jnp.asarray(rng.standard_normal((256, 13)) * scale, jnp.bfloat16)
  s = (t.astype(jnp.float32) + noise * rng.standard_normal(t.shape)).astype(jnp.bfloat16)
  got, (grads, _) = values_and_grads(fn, s, t, temperature=0.7, **kwargs)
  assert got.dtype == np.float32
  assert np.all(np.isfinite(got)) and np.all(got >= 0), got.min()
  assert grads.dtype == jnp.bfloat16 and np.all(np.isfinite(grads.astype(np.float32)))
  # And the values still agree with the float64 reference of the rounded inputs.
  expected = ref(np.asarray(s, np.float64), np.asarray(t, np.float64), temperature=0.7, **kwargs)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name,fn,ref,kwargs", CASES, ids=IDS)
def test_jit_vmap_grad(name, fn, ref, kwargs):
  s, t = random_logits(9, (5, 2, 6))
  s, t = jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32)
  # vmap over the leading axis, with a traced temperature and (for the weighted
  # divergences) a traced weight, under jit.
  vmapped = jax.jit(
    jax.vmap(lambda s, t, temp, kw: fn(s, t, temperature=temp, **kw), in_axes=(0, 0, None, None))
  )(s, t, 1.5, {k: jnp.float32(v) for k, v in kwargs.items()})
  expected = ref(np.asarray(s), np.asarray(t), temperature=1.5, **kwargs)
  np.testing.assert_allclose(np.asarray(vmapped), expected, rtol=2e-4, atol=2e-6)
  # Per-example gradients with vmap(grad) agree with the gradient of the sum.
  s, t = s.reshape(10, 6), t.reshape(10, 6)
  per_example, of_sum = jax.jit(
    lambda s, t: (
      jax.vmap(jax.grad(lambda s, t: fn(s, t, **kwargs)))(s, t),
      jax.grad(lambda s, t: jnp.sum(fn(s, t, **kwargs)))(s, t),
    )
  )(s, t)
  np.testing.assert_allclose(np.asarray(per_example), np.asarray(of_sum), rtol=1e-5, atol=1e-7)


def test_kl_is_infinite_only_when_the_teacher_has_mass_the_student_lacks():
  s = jnp.array([[0.0, -jnp.inf, 1.0]])
  t = jnp.array([[0.0, 0.0, 1.0]])
  kl, reverse_kl = jax.jit(L.kl_divergence), jax.jit(L.reverse_kl)  # cheaper than op by op
  assert np.isinf(np.asarray(kl(s, t)))[0]
  assert np.isfinite(np.asarray(reverse_kl(s, t)))[0]
  assert np.isinf(np.asarray(reverse_kl(t, s)))[0]


def test_kd_loss_is_temperature_squared_times_kl():
  s, t = random_logits(11, (3, 8))
  # One compile for every temperature (eager dispatch compiles each op).
  kd_and_kl = jax.jit(
    lambda temperature: (
      L.kd_loss(s, t, temperature=temperature),
      L.kl_divergence(s, t, temperature=temperature),
    )
  )
  for temperature in [0.5, 1.0, 4.0]:
    kd, kl = kd_and_kl(temperature)
    np.testing.assert_allclose(np.asarray(kd), temperature**2 * np.asarray(kl), rtol=1e-6)


def test_jsd_endpoints_and_continuity():
  s, t = random_logits(12, (5, 6))
  forward, reverse = ref_kl(s, t), ref_reverse_kl(s, t)
  with jax.enable_x64(True):
    value_and_grad = jax.jit(
      lambda s, b: (
        L.generalized_jsd(s, jnp.asarray(t), beta=b),
        jax.grad(lambda s: jnp.sum(L.generalized_jsd(s, jnp.asarray(t), beta=b)))(s),
      )
    )
    s = jnp.asarray(s)
    # Exactly 0 (value and gradient) at both ends, static or traced beta.
    for beta in [0.0, 1.0]:
      np.testing.assert_array_equal(np.asarray(L.generalized_jsd(s, t, beta=beta)), 0.0)
      value, grad = value_and_grad(s, beta)
      np.testing.assert_array_equal(np.asarray(value), 0.0)
      np.testing.assert_array_equal(np.asarray(grad), 0.0)
    errors = []
    for eps in [1e-3, 1e-5]:
      near_zero = np.asarray(value_and_grad(s, eps)[0])
      near_one = np.asarray(value_and_grad(s, 1 - eps)[0])
      np.testing.assert_allclose(near_zero, ref_jsd(np.asarray(s), t, eps), rtol=1e-7)
      np.testing.assert_allclose(near_one, ref_jsd(np.asarray(s), t, 1 - eps), rtol=1e-6)
      # JSD(beta) = beta KL(p||q) + O(beta^2); JSD(1-e) = e KL(q||p) + O(e^2).
      error = max(
        np.max(np.abs(near_zero / eps - forward) / forward),
        np.max(np.abs(near_one / eps - reverse) / reverse),
      )
      assert error < 100 * eps
      errors.append(error)
    assert errors[1] < errors[0] / 30  # the first-order limit is approached linearly
    # Bounded by log 2 at beta = 1/2, reached for far-apart distributions.
    far_s, far_t = random_logits(13, (5, 6), scale=30.0)
    far = np.asarray(L.generalized_jsd(far_s, far_t))
    assert np.all(far <= np.log(2) + 1e-12) and far.max() > 0.5


def test_skew_endpoints():
  s, t = random_logits(14, (4, 7))
  s, t = jnp.asarray(s), jnp.asarray(t)
  # One compile per function for every alpha (eager dispatch compiles each op).
  skew_kl, skew_reverse_kl = jax.jit(L.skew_kl), jax.jit(L.skew_reverse_kl)
  kl, reverse_kl = jax.jit(L.kl_divergence)(s, t), jax.jit(L.reverse_kl)(s, t)
  np.testing.assert_allclose(np.asarray(skew_kl(s, t, alpha=0.0)), np.asarray(kl), rtol=1e-6)
  np.testing.assert_allclose(
    np.asarray(skew_reverse_kl(s, t, alpha=0.0)), np.asarray(reverse_kl), rtol=1e-6
  )
  np.testing.assert_array_equal(np.asarray(skew_kl(s, t, alpha=1.0)), 0.0)
  np.testing.assert_array_equal(np.asarray(skew_reverse_kl(s, t, alpha=1.0)), 0.0)
  # Bounded by -log(alpha) even against a student with -inf logits.
  s_inf = s.at[:, :3].set(-jnp.inf)
  assert np.all(np.asarray(skew_kl(s_inf, t, alpha=0.1)) <= -np.log(0.1) + 1e-5)


# ----------------------------------------------------------------------------------------
# Reductions.


def test_mean_over_examples_and_masked_mean():
  rng = np.random.default_rng(15)
  losses = rng.random((4, 6))
  mask = rng.random((4, 6)) > 0.4
  np.testing.assert_allclose(float(L.mean_over_examples(losses)), losses.mean(), rtol=1e-6)
  poisoned = np.where(mask, losses, np.nan)
  np.testing.assert_allclose(float(L.masked_mean(poisoned, mask)), losses[mask].mean(), rtol=1e-6)
  assert float(L.masked_mean(poisoned, np.zeros_like(mask))) == 0.0
  grad = jax.grad(lambda x: L.masked_mean(x, mask))(jnp.asarray(poisoned, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), mask / mask.sum(), rtol=1e-6)


def test_masked_mean_of_masked_losses_equals_mean_of_valid_rows():
  s, t = random_logits(16, (8, 5))
  mask = np.array([1, 0, 1, 1, 0, 0, 1, 1], bool)
  masked_mean = jax.jit(
    lambda s, t: L.masked_mean(L.kd_loss(s, t, temperature=2.0, where=mask), mask)
  )
  np.testing.assert_allclose(float(masked_mean(s, t)), ref_kd(s, t, 2.0)[mask].mean(), rtol=1e-5)


# ----------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("name,fn,ref,kwargs", CASES, ids=IDS)
def test_bad_input_raises(name, fn, ref, kwargs):
  s = jnp.zeros((3, 5))
  with pytest.raises(ValueError, match="teacher_logits"):
    fn(s, jnp.zeros((3, 4)), **kwargs)
  for temperature in [0.0, -1.0]:
    with pytest.raises(ValueError, match="temperature"):
      fn(s, s, temperature=temperature, **kwargs)
  with pytest.raises(ValueError, match="where"):
    fn(s, s, where=jnp.ones((5,), bool), **kwargs)
  with pytest.raises(ValueError, match="where"):
    fn(s, s, where=jnp.ones((3,), jnp.float32), **kwargs)
  with pytest.raises(ValueError, match="axis"):
    fn(s, s, axis=2, **kwargs)
  for key in kwargs:
    for bad in [-0.1, 1.5]:
      with pytest.raises(ValueError, match=key):
        fn(s, s, **{key: bad})
