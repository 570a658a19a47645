"""Token-level sequence KD: per-token values, masked means, exact gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from kdjax import losses as L
from kdjax.losses import sequence as S

B, T, V = 4, 6, 11
HYPERPARAMS = {"jsd": {"beta": 0.2}, "skew_kl": {"alpha": 0.3}, "skew_reverse_kl": {"alpha": 0.3}}


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  student = rng.normal(size=(B, T, V)) * 2
  teacher = rng.normal(size=(B, T, V)) * 2
  lengths = np.array([6, 1, 4, 2])  # unbalanced: the halves hold 7 and 6 real tokens
  where = np.arange(T)[None, :] < lengths[:, None]
  return student, teacher, where


def ref_kl(student, teacher, temperature):
  log_q = log_softmax(student / temperature, axis=-1)
  log_p = log_softmax(teacher / temperature, axis=-1)
  return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def test_kl_per_token_matches_float64_reference_and_is_zero_at_padding():
  student, teacher, where = _batch()
  got = S.token_kd_loss(jnp.float32(student), jnp.float32(teacher), where=where, temperature=2.0)
  assert got.shape == (B, T)
  np.testing.assert_allclose(
    got, np.where(where, ref_kl(student, teacher, 2.0), 0.0), rtol=1e-5, atol=1e-7
  )


@pytest.mark.parametrize("name", sorted(S.DIVERGENCES))
def test_every_divergence_by_name_is_the_logits_function(name):
  student, teacher, where = _batch(1)
  hyperparams = HYPERPARAMS.get(name, {})
  got = S.token_kd_loss(
    student, teacher, where=where, divergence=name, temperature=1.5, **hyperparams
  )
  want = S.DIVERGENCES[name](
    student.reshape(-1, V), teacher.reshape(-1, V), temperature=1.5, **hyperparams
  ).reshape(B, T)
  np.testing.assert_allclose(got, np.where(where, want, 0.0), rtol=1e-6)
  assert np.all(np.asarray(got) >= 0)


def test_names_map_to_the_documented_divergences():
  assert S.DIVERGENCES["kl"] is L.kl_divergence
  assert S.DIVERGENCES["reverse_kl"] is L.reverse_kl
  assert S.DIVERGENCES["jsd"] is L.generalized_jsd
  assert S.DIVERGENCES["tv"] is L.total_variation
  assert S.DIVERGENCES["skew_kl"] is L.skew_kl
  assert S.DIVERGENCES["skew_reverse_kl"] is L.skew_reverse_kl


def test_sequence_loss_is_mean_over_real_tokens():
  student, teacher, where = _batch(2)
  per_token = np.asarray(
    S.token_kd_loss(student, teacher, where=where, divergence="jsd", beta=0.2), np.float64
  )
  real = [per_token[b, t] for b in range(B) for t in range(T) if where[b, t]]
  got = S.sequence_kd_loss(student, teacher, where=where, divergence="jsd", beta=0.2)
  np.testing.assert_allclose(got, np.mean(real), rtol=1e-6)
  total, count = S.sequence_kd_sum_and_count(
    student, teacher, where=where, divergence="jsd", beta=0.2
  )
  assert count.dtype == jnp.int32 and int(count) == where.sum()
  np.testing.assert_allclose(total, np.sum(real), rtol=1e-6)


def test_two_half_batches_accumulate_to_the_full_batch_loss_and_gradient():
  student, teacher, where = _batch(3)
  student, teacher = jnp.float32(student), jnp.float32(teacher)
  halves = (slice(0, B // 2), slice(B // 2, B))

  # What a gradient-accumulation loop adds up: the sum, its gradient, the count.
  sum_and_grad = jax.jit(
    jax.value_and_grad(
      lambda s, t, w: S.sequence_kd_sum_and_count(s, t, where=w, temperature=2.0)[0]
    )
  )
  count_of = jax.jit(lambda s, t, w: S.sequence_kd_sum_and_count(s, t, where=w)[1])
  full_loss, full_grad = jax.jit(
    jax.value_and_grad(lambda s: S.sequence_kd_loss(s, teacher, where=where, temperature=2.0))
  )(student)
  total = count = 0
  grad = jnp.zeros_like(student)
  for half in halves:
    s_sum, s_grad = sum_and_grad(student[half], teacher[half], where[half])
    total, count = total + s_sum, count + count_of(student[half], teacher[half], where[half])
    grad = grad.at[half].add(s_grad)
  np.testing.assert_allclose(S.mean_from_sum_and_count(total, count), full_loss, rtol=1e-6)
  np.testing.assert_allclose(grad / count, full_grad, rtol=1e-6, atol=1e-9)
  # The naive mean of micro-batch means weights the halves, not the tokens: it differs.
  half_loss = jax.jit(lambda s, t, w: S.sequence_kd_loss(s, t, where=w, temperature=2.0))
  mean_of_means = np.mean([half_loss(student[h], teacher[h], where[h]) for h in halves])
  assert count == where.sum()
  assert abs(mean_of_means - full_loss) > 1e-3 * abs(full_loss)


def test_all_padding_gives_zero():
  student, teacher, _ = _batch(4)
  where = np.zeros((B, T), bool)
  assert float(S.sequence_kd_loss(student, teacher, where=where)) == 0.0
  assert float(S.mean_from_sum_and_count(0.0, 0)) == 0.0


@pytest.mark.parametrize("name", sorted(S.DIVERGENCES))
def test_masked_vocabulary_and_padding_garbage_give_finite_values_and_gradients(name):
  student, teacher, where = _batch(5)
  masked_vocab = np.arange(V) >= V - 3
  student = np.where(masked_vocab, -np.inf, student)
  teacher = np.where(masked_vocab, -np.inf, teacher)
  student[~where] = np.nan  # whatever sits at padded positions must not leak
  hyperparams = HYPERPARAMS.get(name, {})
  for dtype in (jnp.float32, jnp.bfloat16):
    loss_fn = lambda s: S.sequence_kd_loss(
      s, jnp.asarray(teacher, dtype), where=where, divergence=name, **hyperparams
    )
    value, grad = jax.jit(jax.value_and_grad(loss_fn))(jnp.asarray(student, dtype))
    assert np.isfinite(float(value)), (name, dtype)
    grad = np.asarray(grad, np.float32)
    assert np.all(np.isfinite(grad)), (name, dtype)
    np.testing.assert_array_equal(grad[~where], 0.0)
    np.testing.assert_array_equal(grad[..., masked_vocab], 0.0)


def test_bfloat16_close_to_float32():
  student, teacher, where = _batch(6)
  want = S.sequence_kd_loss(jnp.float32(student), jnp.float32(teacher), where=where)
  got = S.sequence_kd_loss(jnp.bfloat16(student), jnp.bfloat16(teacher), where=where)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=0.03)


def test_bad_inputs_raise():
  student, teacher, where = _batch()
  with pytest.raises(ValueError, match="divergence"):
    S.token_kd_loss(student, teacher, divergence="hellinger")
  with pytest.raises(ValueError, match="alpha"):
    S.token_kd_loss(student, teacher, divergence="jsd", alpha=0.1)
  with pytest.raises(ValueError, match="where"):
    S.token_kd_loss(student, teacher, where=where[:, :-1])
  with pytest.raises(ValueError, match="where"):
    S.token_kd_loss(student, teacher, where=where.astype(np.float32))
  with pytest.raises(ValueError, match="batch, time, vocab"):
    S.token_kd_loss(student[0], teacher[0])


def _adaspec_reference(student, reference, teacher, where, fraction):
  """AdaSPEC in float64 NumPy, from the paper: forward KL of draft and reference against
  the target, excess = draft - reference, the ceil(fraction * real) largest trained on."""
  draft, ref = ref_kl(student, teacher, 1.0), ref_kl(reference, teacher, 1.0)
  real = np.flatnonzero(where.reshape(-1))
  excess = (draft - ref).reshape(-1)[real]
  keep = int(np.ceil(fraction * len(real)))
  chosen = real[np.argsort(-excess, kind="stable")[:keep]]
  selected = np.zeros(where.size, bool)
  selected[chosen] = True
  return selected.reshape(where.shape), draft.reshape(-1)[chosen].sum()


@pytest.mark.parametrize("fraction", [0.05, 0.4, 0.77, 1.0])
def test_adaspec_selects_the_largest_excess_losses_like_the_float64_reference(fraction):
  student, teacher, where = _batch()
  reference = _batch(seed=1)[0]
  want_mask, want_sum = _adaspec_reference(student, reference, teacher, where, fraction)
  args = [jnp.float32(a) for a in (student, reference, teacher)]
  total, count = L.adaspec_sum_and_count(*args, fraction=fraction, where=where)
  assert int(count) == want_mask.sum() == np.ceil(fraction * where.sum())
  np.testing.assert_allclose(total, want_sum, rtol=1e-5)
  draft_losses = S.token_kd_loss(args[0], args[2], where=where)
  reference_losses = S.token_kd_loss(args[1], args[2], where=where)
  got = L.selective_token_mask(draft_losses, reference_losses, fraction=fraction, where=where)
  np.testing.assert_array_equal(got, want_mask)


def test_adaspec_trains_only_the_selected_tokens_and_equals_token_kd_at_fraction_one():
  student, teacher, where = _batch()
  reference = jnp.float32(_batch(seed=1)[0])
  student, teacher = jnp.float32(student), jnp.float32(teacher)
  full = S.sequence_kd_sum_and_count(student, teacher, where=where)
  np.testing.assert_allclose(
    L.adaspec_sum_and_count(student, reference, teacher, fraction=1.0, where=where), full
  )
  grads = jax.grad(
    lambda s: L.adaspec_sum_and_count(s, reference, teacher, fraction=0.4, where=where)[0]
  )(student)
  selected = L.selective_token_mask(
    S.token_kd_loss(student, teacher, where=where),
    S.token_kd_loss(reference, teacher, where=where),
    fraction=0.4,
    where=where,
  )
  touched = np.abs(np.asarray(grads)).sum(-1) > 0
  np.testing.assert_array_equal(touched, np.asarray(selected))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_adaspec_fraction_outside_the_unit_interval_raises(fraction):
  losses = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="fraction must be in"):
    L.selective_token_mask(losses, losses, fraction=fraction)
