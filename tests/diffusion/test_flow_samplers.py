"""Tests of kdjax.diffusion.flow (interpolant, EDM view) and samplers (NFE counted exactly)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.diffusion import flow, samplers


def _gaussian_velocity(mu, s2):
  """The exact flow velocity E[x1 - x0 | x_t] for x1 ~ N(mu, s2 I), x0 ~ N(0, I) (float64)."""

  def v(x, t):
    t = t[:, None]
    var = (1 - t) ** 2 + t**2 * s2
    x1_hat = mu + t * s2 / var * (x - t * mu)
    x0_hat = (x - t * x1_hat) / (1 - t)
    return x1_hat - x0_hat

  return v


def test_interpolant_loss_and_denoiser():
  rng = np.random.default_rng(0)
  x0, x1 = rng.normal(size=(2, 5, 3))
  t = rng.uniform(size=5)
  x_t = np.asarray(flow.interpolate(x0, x1, t))
  np.testing.assert_allclose(x_t, (1 - t[:, None]) * x0 + t[:, None] * x1, rtol=1e-5, atol=1e-6)
  v = rng.normal(size=(5, 3))
  np.testing.assert_allclose(
    flow.flow_matching_loss(v, x0, x1), np.mean((v - (x1 - x0)) ** 2, axis=1), rtol=1e-6
  )
  masked = flow.flow_matching_loss(v, x0, x1, where=np.arange(5) < 2)
  assert np.all(np.asarray(masked)[2:] == 0)
  # the exact conditional velocity x1 - x0 denoises to x1
  np.testing.assert_allclose(flow.denoise(x_t, x1 - x0, t), x1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(flow.velocity_from_denoised(x_t, x1, t), x1 - x0, rtol=1e-4)
  # EDM view: x_t / t = x1 + sigma x0
  sigma = flow.sigma_from_t(t)
  np.testing.assert_allclose(x_t / t[:, None], x1 + sigma[:, None] * x0, rtol=1e-5)
  np.testing.assert_allclose(flow.t_from_sigma(sigma), t, rtol=1e-6)


def test_edm_preconditioning_formulas_and_boundary():
  sigma, sd, smin = np.array([0.002, 0.1, 1.0, 80.0]), 0.5, 0.002
  c_skip, c_out, c_in, c_noise = map(
    np.asarray, flow.edm_preconditioning(sigma, sigma_data=sd, sigma_min=smin)
  )
  np.testing.assert_allclose(c_skip, sd**2 / ((sigma - smin) ** 2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(c_out, (sigma - smin) * sd / np.sqrt(sd**2 + sigma**2), rtol=1e-5)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma**2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)
  assert c_skip[0] == 1.0 and c_out[0] == 0.0
  # EDM's own (sigma_min = 0): c_skip = sd^2/(sigma^2+sd^2), c_out = sigma sd / sqrt(...)
  e_skip, e_out, _, _ = flow.edm_preconditioning(sigma, sigma_data=sd)
  np.testing.assert_allclose(e_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(e_out, sigma * sd / np.sqrt(sd**2 + sigma**2), rtol=1e-6)


def test_karras_sigmas():
  s = np.asarray(flow.karras_sigmas(5, sigma_min=0.002, sigma_max=80.0))
  i = np.arange(5) / 4
  ref = (0.002 ** (1 / 7) + i * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
  np.testing.assert_allclose(s, ref, rtol=1e-5)
  with pytest.raises(ValueError, match="n >= 2"):
    flow.karras_sigmas(1, sigma_min=0.002, sigma_max=80.0)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_samplers_call_the_model_exactly_nfe_times(method):
  calls = []

  def v(x, t):
    calls.append(t[0] if isinstance(t, jax.core.Tracer) else float(t[0]))
    return -x + t[:, None]

  x0 = jnp.ones((2, 3))
  for nfe in range(1, 8):
    calls.clear()
    samplers.solve(v, x0, nfe=nfe, method=method)
    assert len(calls) == nfe, (method, nfe, calls)
    assert calls[0] == 0.0
  # under jit: counted at trace time, once per evaluation of the unrolled loop
  calls.clear()
  jax.jit(lambda x: samplers.heun(v, x, nfe=5))(x0)
  assert len(calls) == 5


def test_samplers_against_a_numpy_reference_and_the_exact_solution():
  # dx/dt = -x + t, x(0) = x0: x(1) = (x0 + 1) e^-1 + 0 (x(t) = t - 1 + (x0 + 1) e^-t)
  v = lambda x, t: -x + t[:, None]  # noqa: E731
  x0 = np.array([[0.3, -1.2]])
  exact = (x0 + 1) * np.exp(-1.0)
  for n in (1, 3, 8):
    ref = x0.copy()
    for k in range(n):
      ref = ref + (1 / n) * (-ref + k / n)
    np.testing.assert_allclose(samplers.euler(v, x0, nfe=n), ref, rtol=1e-5)
  # Heun, nfe = 2n (n full steps): numpy trapezoid reference; second order
  n = 4
  ref = x0.copy()
  for k in range(n):
    h, t = 1 / n, k / n
    d = -ref + t
    d2 = -(ref + h * d) + t + h
    ref = ref + h * (d + d2) / 2
  np.testing.assert_allclose(samplers.heun(v, x0, nfe=2 * n), ref, rtol=1e-5)
  err_euler = np.abs(samplers.euler(v, x0, nfe=16) - exact).max()
  err_heun = np.abs(samplers.heun(v, x0, nfe=16) - exact).max()
  assert err_heun < err_euler / 10


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_nfe_below_one_or_not_an_integer_is_a_value_error(bad):
  with pytest.raises((ValueError, TypeError)):
    samplers.euler(lambda x, t: x, jnp.ones((1, 2)), nfe=bad)
  with pytest.raises(ValueError, match="method"):
    samplers.solve(lambda x, t: x, jnp.ones((1, 2)), nfe=2, method="rk4")


def test_teacher_with_exact_velocity_transports_noise_to_the_gaussian():
  mu, s2 = np.array([1.0, -2.0]), 0.25
  v = _gaussian_velocity(mu, s2)
  with jax.enable_x64(True):
    x0 = np.random.default_rng(0).normal(size=(20000, 2))
    x1 = np.asarray(jax.jit(lambda x: samplers.heun(v, x, nfe=16, t1=1.0 - 1e-6))(x0))
  np.testing.assert_allclose(x1.mean(0), mu, atol=0.02)
  np.testing.assert_allclose(x1.var(0), s2, rtol=0.05)


def test_rolled_samplers_equal_the_unrolled_ones():
  v = lambda x, t: jnp.sin(x) * (1 + t[:, None])  # noqa: E731
  x0 = jnp.array([[0.3, -1.2], [2.0, 0.1]])
  for method in ("euler", "heun"):
    for nfe in (1, 2, 5, 6):
      rolled = jax.jit(lambda x: samplers.solve(v, x, nfe=nfe, method=method, unroll=False))(x0)
      np.testing.assert_allclose(rolled, samplers.solve(v, x0, nfe=nfe, method=method), rtol=1e-6)
