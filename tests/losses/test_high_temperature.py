"""kd_loss (and the KLs sharing its computation) in float32 against a 50-digit reference,
for temperatures from 1e-2 to 1e4, and its T -> inf limit.

The reference is the textbook formula T^2 sum_k p_k (log p_k - log q_k) evaluated with
Python's decimal module at 50 significant digits, from the exact float32 inputs.
"""

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses as L

_CONTEXT = decimal.Context(prec=50)


def _log_softmax(z):
  top = max(z)
  lse = top + _CONTEXT.ln(sum(_CONTEXT.exp(v - top) for v in z))
  return [v - lse for v in z]


def reference(s, t, temperature):
  """(T^2 KL(softmax(t/T) || softmax(s/T)), its gradient T (q - p) in s), 50 digits."""
  T = decimal.Decimal(float(temperature))
  log_q = _log_softmax([decimal.Decimal(float(v)) / T for v in s])
  log_p = _log_softmax([decimal.Decimal(float(v)) / T for v in t])
  p = [_CONTEXT.exp(v) for v in log_p]
  q = [_CONTEXT.exp(v) for v in log_q]
  value = T * T * sum(pk * (lp - lq) for pk, lp, lq in zip(p, log_p, log_q))
  return float(value), [float(T * (qk - pk)) for pk, qk in zip(p, q)]


# Values below 1e-30 (a teacher and a student at this temperature whose distributions
# agree to about 30 digits, e.g. one-hot with the same argmax at T = 0.01) are compared in
# absolute terms: float32 logits cannot resolve such differences, and there even the
# 50-digit reference loses its relative accuracy.
ATOL = 1e-30


@pytest.mark.parametrize("num_classes", [2, 10, pytest.param(100, marks=pytest.mark.slow)])
@pytest.mark.parametrize("std", [1.0, 10.0])
def test_kd_loss_float32_is_accurate_for_temperatures_1e_2_to_1e4(num_classes, std):
  rng = np.random.default_rng(num_classes)
  s, t = (rng.normal(size=(2, 3, num_classes)) * std).astype(np.float32)
  kd = jax.jit(lambda s, t, T: L.kd_loss(s, t, temperature=T))
  kl = jax.jit(lambda s, t, T: L.kl_divergence(s, t, temperature=T) * T**2)
  reverse = jax.jit(lambda s, t, T: L.reverse_kl(t, s, temperature=T) * T**2)
  for temperature in np.logspace(-2, 4, 13).astype(np.float32):
    want = np.array([reference(a, b, temperature)[0] for a, b in zip(s, t)])
    for name, fn in (("kd_loss", kd), ("kl_divergence", kl), ("reverse_kl", reverse)):
      got = np.asarray(fn(s, t, temperature), np.float64)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=ATOL, err_msg=f"{name} T={temperature}")


@pytest.mark.parametrize("temperature", [pytest.param(1.0, marks=pytest.mark.slow), 1e2, 1e4])
def test_kd_loss_gradient_is_accurate_at_high_temperature(temperature):
  rng = np.random.default_rng(1)
  s, t = (rng.normal(size=(2, 2, 10)) * 5).astype(np.float32)
  grad = jax.grad(lambda s: jnp.sum(L.kd_loss(s, t, temperature=temperature)))(s)
  want = np.array([reference(a, b, temperature)[1] for a, b in zip(s, t)])
  np.testing.assert_allclose(np.asarray(grad), want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_kd_loss_tends_to_half_the_variance_of_the_logit_differences():
  rng = np.random.default_rng(2)
  s, t = (rng.normal(size=(2, 4, 7)) * 3).astype(np.float32)
  limit = 0.5 * np.var(s.astype(np.float64) - t, axis=-1)  # (1 / 2C) sum (delta - mean)^2
  for temperature in (1e6, 1e9, 1e15):
    np.testing.assert_allclose(L.kd_loss(s, t, temperature=temperature), limit, rtol=2e-5)
  with pytest.raises(ValueError, match="temperature must be finite"):
    L.kd_loss(s, t, temperature=np.inf)


@pytest.mark.parametrize("temperature", [0.5, 1e2])
def test_kd_loss_gradients_in_teacher_and_temperature_match_finite_differences(temperature):
  """The custom VJP's teacher and temperature gradients against central differences of the
  50-digit reference (steps 1e-3 relative, so the differences' own error is ~1e-7)."""
  rng = np.random.default_rng(3)
  s, t = (rng.normal(size=(2, 2, 6)) * 3).astype(np.float32)
  grad_t, grad_temp = jax.grad(
    lambda t, T: jnp.sum(L.kd_loss(s, t, temperature=T)), argnums=(0, 1)
  )(t, jnp.float32(temperature))

  def total(t, T):
    return sum(reference(a, b, T)[0] for a, b in zip(s.astype(np.float64), t))

  t64, h = t.astype(np.float64), 1e-3
  want_t = np.zeros_like(t64)
  for index in np.ndindex(t.shape):
    up, down = t64.copy(), t64.copy()
    up[index] += h
    down[index] -= h
    want_t[index] = (total(up, temperature) - total(down, temperature)) / (2 * h)
  step = h * temperature
  want_temp = (total(t64, temperature + step) - total(t64, temperature - step)) / (2 * step)
  np.testing.assert_allclose(np.asarray(grad_t), want_t, atol=1e-4 * np.abs(want_t).max())
  np.testing.assert_allclose(float(grad_temp), want_temp, rtol=1e-4)
