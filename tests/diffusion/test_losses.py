"""The students' losses against float64 NumPy references written from the papers.

progressive: Salimans & Ho (2022), Algorithm 2 (DDIM teacher steps, x-tilde target,
truncated-SNR weight); consistency: Song et al. (2023) / Song & Dhariwal (2024) (EDM Heun
step with the Gaussian-data denoiser, pseudo-Huber, 1/(sigma_{n+1} - sigma_n)); DMD: Yin et
al. (2024) eq. (7)-(8) with explicit scores; flow maps: Boffi et al. (2025) LSD/ESD with
central finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from kdjax.diffusion import consistency, dmd, flow, flow_map, progressive

RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 3)) * 0.5
B = RNG.normal(size=3)


def _teacher_np(z, t):
  return np.tanh(z @ W) * (1 + t[:, None]) + B


def _teacher_jnp(z, t):
  return jnp.tanh(z @ W) * (1 + t[:, None]) + B


def test_progressive_target_and_loss_match_salimans_ho_algorithm_2():
  steps = 4
  h = 1 / (2 * steps)
  z = RNG.normal(size=(6, 3))
  t = np.array([0, 1, 2, 3, 0, 3]) / steps
  v_student = RNG.normal(size=(6, 3))

  def ddim(z_t, t, s):  # DDIM from t to s with the teacher's x-prediction; alpha=t, sigma=1-t
    x_hat = z_t + (1 - t[:, None]) * _teacher_np(z_t, t)
    eps_hat = (z_t - t[:, None] * x_hat) / (1 - t[:, None])
    return s[:, None] * x_hat + (1 - s[:, None]) * eps_hat

  t1, t2 = t + h, t + 2 * h
  z2 = ddim(ddim(z, t, t1), t1, t2)
  ratio = ((1 - t2) / (1 - t))[:, None]
  x_tilde = (z2 - ratio * z) / (t2[:, None] - ratio * t[:, None])
  x_hat = z + (1 - t[:, None]) * v_student
  snr = t**2 / (1 - t) ** 2
  ref = np.maximum(snr, 1) * np.mean((x_hat - x_tilde) ** 2, axis=1)
  with jax.enable_x64(True):
    target = progressive.progressive_target(_teacher_jnp, jnp.asarray(z), jnp.asarray(t), h=h)
    loss = progressive.progressive_loss(jnp.asarray(v_student), target, jnp.asarray(t))
  np.testing.assert_allclose(loss, ref, rtol=1e-9)


def test_progressive_rounds_must_divide_the_teacher_steps():
  assert progressive.round_steps(64, 6) == [32, 16, 8, 4, 2, 1]
  assert progressive.round_steps(48, 4) == [24, 12, 6, 3]
  for steps, rounds in ((64, 7), (48, 5), (6, 2)):
    with pytest.raises(ValueError, match="must divide teacher_steps"):
      progressive.round_steps(steps, rounds)
  with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
    progressive.round_steps(64, 0)


MU, S2 = np.array([0.5, -1.0, 2.0]), 0.3


def _gaussian_denoiser_np(x, sigma):  # EDM: D(x, sigma) = E[x1 | x1 + sigma z = x]
  s = sigma[:, None] ** 2
  return (S2 * x + s * MU) / (S2 + s)


def _gaussian_velocity_jnp(x, t):  # the exact flow velocity of the same data
  t = t[:, None]
  var = (1 - t) ** 2 + t**2 * S2
  x1_hat = MU + t * S2 / var * (x - t * MU)
  return (x1_hat - x) / (1 - t)


def test_teacher_denoiser_of_a_flow_velocity_is_the_edm_denoiser():
  x = RNG.normal(size=(5, 3)) * 3
  sigma = np.array([0.01, 0.3, 1.0, 7.0, 80.0])
  with jax.enable_x64(True):
    d = consistency.teacher_denoiser(_gaussian_velocity_jnp)(jnp.asarray(x), jnp.asarray(sigma))
  np.testing.assert_allclose(d, _gaussian_denoiser_np(x, sigma), rtol=1e-9)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_teacher_ode_step_is_karras_algorithm_1(method):
  x = RNG.normal(size=(4, 3)) * 2
  s_from, s_to = np.array([2.0, 1.0, 0.5, 80.0]), np.array([1.5, 0.7, 0.2, 60.0])
  d = (x - _gaussian_denoiser_np(x, s_from)) / s_from[:, None]
  ref = x + (s_to - s_from)[:, None] * d
  if method == "heun":
    d2 = (ref - _gaussian_denoiser_np(ref, s_to)) / s_to[:, None]
    ref = x + (s_to - s_from)[:, None] * (d + d2) / 2
  den = consistency.teacher_denoiser(_gaussian_velocity_jnp)
  with jax.enable_x64(True):
    out = consistency.teacher_ode_step(
      den, jnp.asarray(x), jnp.asarray(s_from), jnp.asarray(s_to), method=method
    )
  np.testing.assert_allclose(out, ref, rtol=1e-9)


def test_consistency_function_loss_and_schedule():
  x = RNG.normal(size=(4, 3))
  sigma = np.array([0.002, 0.5, 3.0, 80.0])
  net = lambda xin, c_noise: jnp.sin(xin) + c_noise[:, None]  # noqa: E731
  sd, smin = 0.7, 0.002
  with jax.enable_x64(True):
    f = np.asarray(
      consistency.consistency_function(
        net, jnp.asarray(x), jnp.asarray(sigma), sigma_data=sd, sigma_min=smin
      )
    )
  c_skip = sd**2 / ((sigma - smin) ** 2 + sd**2)
  c_out = sd * (sigma - smin) / np.sqrt(sigma**2 + sd**2)
  c_in = 1 / np.sqrt(sigma**2 + sd**2)
  ref = c_skip[:, None] * x + c_out[:, None] * (
    np.sin(c_in[:, None] * x) + np.log(sigma)[:, None] / 4
  )
  np.testing.assert_allclose(f, ref, rtol=1e-9)
  np.testing.assert_allclose(f[0], x[0], rtol=1e-12)  # f(x, sigma_min) = x
  a, b = RNG.normal(size=(2, 4, 3))
  sn, sn1 = np.array([0.1, 1.0, 2.0, 5.0]), np.array([0.2, 1.5, 4.0, 9.0])
  c = 0.00054 * np.sqrt(3)
  ref = (np.sqrt(np.sum((a - b) ** 2, 1) + c**2) - c) / (sn1 - sn)
  with jax.enable_x64(True):
    loss = consistency.consistency_loss(jnp.asarray(a), jnp.asarray(b), sn, sn1, c=c)
    g = jax.grad(lambda bb: consistency.consistency_loss(a, bb, sn, sn1, c=c).sum())(b)
  np.testing.assert_allclose(loss, ref, rtol=1e-9)
  assert np.all(np.asarray(g) == 0)  # the target is stop-gradient
  # iCT curriculum: N(k) = min(s0 2^floor(k/K'), s1) + 1, K' = floor(K / (log2(s1/s0) + 1))
  k_prime = 1000 // 8
  for k in (0, 124, 125, 400, 999):
    assert consistency.ict_num_scales(k, 1000) == min(10 * 2 ** (k // k_prime), 1280) + 1
  sig = np.asarray(flow.karras_sigmas(11, sigma_min=0.002, sigma_max=80.0), np.float64)
  e = erf((np.log(sig) + 1.1) / (np.sqrt(2) * 2.0))
  np.testing.assert_allclose(
    consistency.lognormal_index_weights(sig), (e[1:] - e[:-1]) / (e[-1] - e[0]), rtol=1e-5
  )
  np.testing.assert_allclose(
    consistency.karras_sigma(jnp.arange(11), 11, sigma_min=0.002, sigma_max=80.0), sig, rtol=1e-5
  )


def test_flow_consistency_function_is_the_teacher_denoiser_with_the_exact_boundary():
  x = RNG.normal(size=(4, 3))
  sigma = np.array([0.002, 0.5, 3.0, 80.0])
  vel = lambda xt, t: jnp.sin(3 * xt) + t[:, None] ** 2  # noqa: E731
  smin = 0.002
  with jax.enable_x64(True):
    f = np.asarray(
      consistency.flow_consistency_function(vel, jnp.asarray(x), jnp.asarray(sigma), sigma_min=smin)
    )
    den = consistency.teacher_denoiser(vel)(jnp.asarray(x), jnp.asarray(sigma))
  # float64 reference: t = 1/(1+sigma), x_t = t x, v = v(x_t, t), D = x_t + (1-t) v, and
  # f = x + (sigma - sigma_min)/(1 + sigma) (v - x) (sigma - sigma_min in place of sigma)
  t = 1 / (1 + sigma)
  v = np.sin(3 * t[:, None] * x) + t[:, None] ** 2
  ref = x + ((sigma - smin) / (1 + sigma))[:, None] * (v - x)
  np.testing.assert_allclose(f, ref, rtol=1e-12)
  np.testing.assert_allclose(f[0], x[0], rtol=1e-12)  # f(x, sigma_min) = x exactly
  d_ref = t[:, None] * x + (1 - t)[:, None] * v  # the teacher's denoiser at sigma_min = 0
  np.testing.assert_allclose(den, d_ref, rtol=1e-12)
  np.testing.assert_allclose(f[1:], d_ref[1:], atol=3 * smin)


def test_consistency_sampler_calls_f_nfe_times_at_the_right_levels():
  levels = []

  def f(x, sigma):
    levels.append(float(sigma[0]))
    return x * 0.0 + 1.0

  z = jnp.ones((2, 3))
  for nfe in (1, 2, 4):
    levels.clear()
    consistency.sample(f, z, jax.random.PRNGKey(0), nfe=nfe, sigma_min=0.002, sigma_max=80.0)
    assert len(levels) == nfe and levels[0] == pytest.approx(80.0)
    assert all(a > b for a, b in zip(levels, levels[1:]))


def test_dmd_gradient_is_the_score_difference_of_yin_et_al():
  x = RNG.normal(size=(5, 3))
  mu_real, mu_fake = RNG.normal(size=(2, 5, 3))
  t = RNG.uniform(0.02, 0.98, size=5)
  x_t = RNG.normal(size=(5, 3))
  # the paper's EDM (variance-exploding, alpha = 1) view of x_t = (1-t) z + t x:
  # y = x_t / t = x + sig z with sig = (1-t)/t, scores s(y) = -(y - mu)/sig^2
  y, sig = x_t / t[:, None], ((1 - t) / t)[:, None]
  s_real = -(y - mu_real) / sig**2
  s_fake = -(y - mu_fake) / sig**2
  w = sig**2 * 3 / np.sum(np.abs(mu_real - x), axis=1, keepdims=True)  # eq. (8), alpha = 1
  grad_ref = w * (s_fake - s_real)  # per-sample dL/dx of eq. (7)
  with jax.enable_x64(True):
    g = dmd.distribution_matching_grad(jnp.asarray(x), mu_real, mu_fake)
    dl_dx = jax.grad(lambda xx: dmd.distribution_matching_loss(xx, mu_real, mu_fake).sum())(x)
    value = dmd.distribution_matching_loss(jnp.asarray(x), mu_real, mu_fake)
  np.testing.assert_allclose(g, grad_ref, rtol=1e-9)
  np.testing.assert_allclose(dl_dx, grad_ref / 3, rtol=1e-9)
  np.testing.assert_allclose(value, 0.5 * np.mean(grad_ref**2, axis=1), rtol=1e-9)
  y = RNG.normal(size=(5, 3))
  np.testing.assert_allclose(dmd.regression_loss(x, y), np.mean((x - y) ** 2, 1), rtol=1e-6)


A = RNG.normal(size=(3, 3)) * 0.7


def _v_np(x, s, t):
  return np.tanh(x @ A) * (1 + s[:, None] * t[:, None]) + np.cos(3 * t)[:, None] - s[:, None]


def _v_jnp(x, s, t):
  return jnp.tanh(x @ A) * (1 + s[:, None] * t[:, None]) + jnp.cos(3 * t)[:, None] - s[:, None]


def _X_np(x, s, t):
  return x + (t - s)[:, None] * _v_np(x, s, t)


def test_flow_map_lagrangian_and_eulerian_losses_match_finite_differences():
  x = RNG.normal(size=(4, 3))
  s, t = np.array([0.0, 0.2, 0.5, 0.3]), np.array([0.1, 0.9, 0.5, 1.0])
  e = 1e-5
  dx_dt = (_X_np(x, s, t + e) - _X_np(x, s, t - e)) / (2 * e)
  lsd = np.mean((dx_dt - _v_np(_X_np(x, s, t), t, t)) ** 2, axis=1)
  dx_ds = (_X_np(x, s + e, t) - _X_np(x, s - e, t)) / (2 * e)
  b = _v_np(x, s, s)
  transport = (_X_np(x + e * b, s, t) - _X_np(x - e * b, s, t)) / (2 * e)
  esd = np.mean((dx_ds + transport) ** 2, axis=1)
  with jax.enable_x64(True):
    args = (jnp.asarray(x), jnp.asarray(s), jnp.asarray(t))
    np.testing.assert_allclose(flow_map.lagrangian_loss(_v_jnp, *args), lsd, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(flow_map.eulerian_loss(_v_jnp, *args), esd, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(flow_map.flow_map(_v_jnp, *args[:2], args[1]), x)  # X_{s,s} = x
    x0, x1 = RNG.normal(size=(2, 4, 3))
    diag = flow_map.diagonal_loss(_v_jnp, jnp.asarray(x0), jnp.asarray(x1), jnp.asarray(t))
  x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
  np.testing.assert_allclose(diag, np.mean((_v_np(x_t, t, t) - (x1 - x0)) ** 2, 1), rtol=1e-9)


def test_flow_map_sampler_counts_nfe():
  calls = []

  def v(x, s, t):
    calls.append(1)
    return jnp.ones_like(x)

  for nfe in (1, 2, 4):
    calls.clear()
    out = flow_map.sample(v, jnp.zeros((2, 2)), nfe=nfe)
    assert len(calls) == nfe
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)  # the jumps add up to t = 1
  with pytest.raises(ValueError, match="nfe"):
    flow_map.sample(v, jnp.zeros((2, 2)), nfe=0)


def _b_np(x, t):  # a stand-in teacher velocity b(x, t), one time
  return np.sin(x @ A.T) * (1 - t[:, None]) + t[:, None] ** 2


def _b_jnp(x, t):
  return jnp.sin(x @ A.T) * (1 - t[:, None]) + t[:, None] ** 2


def test_flow_map_teacher_targets_match_map_distillation_of_boffi_et_al():
  # Flow map matching (Boffi, Albergo & Vanden-Eijnden 2024): the diagonal regresses onto the
  # teacher's velocity b(I_t, t); LMD's target is b(X_{s,t}(x), t), EMD's transport b(x, s)
  x = RNG.normal(size=(4, 3))
  s, t = np.array([0.0, 0.2, 0.5, 0.3]), np.array([0.1, 0.9, 0.5, 1.0])
  e = 1e-5
  dx_dt = (_X_np(x, s, t + e) - _X_np(x, s, t - e)) / (2 * e)
  lmd = np.mean((dx_dt - _b_np(_X_np(x, s, t), t)) ** 2, axis=1)
  dx_ds = (_X_np(x, s + e, t) - _X_np(x, s - e, t)) / (2 * e)
  b = _b_np(x, s)
  transport = (_X_np(x + e * b, s, t) - _X_np(x - e * b, s, t)) / (2 * e)
  emd = np.mean((dx_ds + transport) ** 2, axis=1)
  x0, x1 = RNG.normal(size=(2, 4, 3))
  x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
  diag_ref = np.mean((_v_np(x_t, t, t) - _b_np(x_t, t)) ** 2, 1)
  with jax.enable_x64(True):
    args = (jnp.asarray(x), jnp.asarray(s), jnp.asarray(t))
    lag = flow_map.lagrangian_loss(_v_jnp, *args, target=_b_jnp)
    eul = flow_map.eulerian_loss(_v_jnp, *args, target=_b_jnp)
    xs = (jnp.asarray(x0), jnp.asarray(x1), jnp.asarray(t))
    diag = flow_map.diagonal_loss(_v_jnp, *xs, target=_b_jnp)
    # the teacher's target carries no gradient: d/dc of |v - c b|^2 is only through v
    grad_c = jax.grad(
      lambda c: flow_map.diagonal_loss(_v_jnp, *xs, target=lambda y, tt: c * _b_jnp(y, tt)).sum()
    )(1.0)
  np.testing.assert_allclose(lag, lmd, rtol=1e-7, atol=1e-12)
  np.testing.assert_allclose(eul, emd, rtol=1e-7, atol=1e-12)
  np.testing.assert_allclose(diag, diag_ref, rtol=1e-9)
  assert float(grad_c) == 0.0
