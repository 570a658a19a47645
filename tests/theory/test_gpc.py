"""Continuous-Bernoulli GP classification: likelihood pieces, Laplace mode, self-distillation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

from kdjax.theory import gpc


def log_normalizer_reference(f):
  """log of the integral of exp(f y) over y in [0, 1], by quadrature."""
  return np.log(scipy.integrate.quad(lambda y: np.exp(f * y), 0, 1, epsabs=0, epsrel=1e-13)[0])


@pytest.mark.parametrize(
  "f", [-30.0, -3.0, -0.5, -0.099, -1e-3, 0.0, 2e-4, 0.07, 0.1, 0.101, 1.0, 4.0, 25.0]
)
def test_log_normalizer_mean_variance_match_quadrature(f):
  with jax.enable_x64(True):
    a = float(gpc.continuous_bernoulli_log_normalizer(f))
    mean = float(gpc.continuous_bernoulli_mean(f))
    var = float(gpc.continuous_bernoulli_variance(f))
  z = np.exp(log_normalizer_reference(f))
  density = lambda y: np.exp(f * y) / z
  ref_mean = scipy.integrate.quad(lambda y: y * density(y), 0, 1, epsabs=0, epsrel=1e-13)[0]
  ref_var = scipy.integrate.quad(
    lambda y: (y - ref_mean) ** 2 * density(y), 0, 1, epsabs=0, epsrel=1e-12
  )[0]
  assert abs(a - log_normalizer_reference(f)) < 1e-12 * max(1, abs(a))
  assert abs(mean - ref_mean) < 1e-12
  assert abs(var - ref_var) < 1e-10 * ref_var
  # The normaliser C(lambda) of Loaiza-Ganem & Cunningham with lambda = sigmoid(f).
  lam = 1 / (1 + np.exp(-f))
  if 1e-3 < abs(f) < 10:  # the reference form cancels badly for lambda near 0 or 1
    c = 2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam)
    for y in (0.0, 0.3, 1.0):
      with jax.enable_x64(True):
        ll = float(gpc.continuous_bernoulli_log_likelihood(y, f))
      assert abs(ll - np.log(c * lam**y * (1 - lam) ** (1 - y))) < 1e-9 * max(1, abs(ll))


def test_derivatives_are_consistent_under_autodiff():
  f = jnp.asarray([-7.0, -0.3, -0.09, 0.0, 0.05, 0.11, 2.0, 40.0])
  with jax.enable_x64(True):
    f = f.astype(jnp.float64)
    grad = jax.vmap(jax.grad(gpc.continuous_bernoulli_log_normalizer))(f)
    hess = jax.vmap(jax.grad(gpc.continuous_bernoulli_mean))(f)
    np.testing.assert_allclose(grad, gpc.continuous_bernoulli_mean(f), rtol=1e-10)
    np.testing.assert_allclose(hess, gpc.continuous_bernoulli_variance(f), rtol=1e-8)
  assert np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))


def make_problem(seed, n=30):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 2))
  K = 4.0 * np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1)) + 1e-6 * np.eye(n)
  labels = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
  return rng, x, K, labels


def cb_mean(f):
  """E[y | f] = 1 / (1 - e^-f) - 1 / f, written independently (f away from 0)."""
  return 1 / (-np.expm1(-f)) - 1 / f


def cb_variance(f):
  return 1 / f**2 - 1 / (4 * np.sinh(f / 2) ** 2)


def negative_objective_whitened(u, chol, y):
  """With f = L u (K = L L^T): |u|^2 / 2 - sum_i (y_i f_i - log((e^f_i - 1) / f_i))."""
  f = chol @ u
  af = np.abs(f)  # (e^f - 1) / f = e^max(f, 0) (1 - e^-|f|) / |f|
  log_normalizer = np.maximum(f, 0) + np.log(-np.expm1(-af)) - np.log(af)
  value = 0.5 * u @ u - np.sum(y * f - log_normalizer)
  return value, u - chol.T @ (y - cb_mean(f))


@pytest.mark.parametrize("soft", [False, True])
def test_laplace_mode_is_stationary_and_matches_scipy(soft):
  rng, _, K, labels = make_problem(0)
  y = rng.uniform(size=len(labels)) if soft else labels
  with jax.enable_x64(True):
    post = gpc.laplace_mode(K, y)
  f = np.asarray(post.mode)
  assert np.max(np.abs(f - K @ (y - cb_mean(f)))) < 1e-9 * np.max(np.abs(f))  # K^-1 f = grad
  np.testing.assert_allclose(post.gradient, y - cb_mean(f), rtol=1e-9, atol=1e-12)
  chol = np.linalg.cholesky(K)
  res = scipy.optimize.minimize(
    negative_objective_whitened,
    np.full(len(y), 0.1),
    args=(chol, y),
    jac=True,
    method="BFGS",
    options=dict(maxiter=20000, gtol=1e-10),
  )
  assert np.max(np.abs(chol @ res.x - f)) < 1e-5 * np.max(np.abs(f))
  mine = negative_objective_whitened(np.linalg.solve(chol, f), chol, y)[0]
  assert mine <= res.fun + 1e-9 * abs(res.fun)
  assert abs(-float(post.objective) - mine) < 1e-9 * abs(mine)


def test_laplace_predictions_match_dense_formulas():
  rng, x, K, labels = make_problem(1)
  xt = rng.normal(size=(5, 2))
  k_test = 4.0 * np.exp(-0.5 * ((xt[:, None] - x[None]) ** 2).sum(-1))
  with jax.enable_x64(True):
    post = gpc.laplace_mode(K, labels)
    mean, var = gpc.laplace_predict(post, k_test, np.full(5, 4.0))
    train_mean, train_var = gpc.laplace_predict(post, K, np.diag(K))
  f = np.asarray(post.mode)
  w_inv = np.diag(1 / cb_variance(f))
  np.testing.assert_allclose(mean, k_test @ (labels - cb_mean(f)), rtol=1e-9)
  # Var f* = k** - k*^T (K + W^-1)^-1 k* (R&W eq. 3.24).
  ref_var = 4.0 - np.einsum("ij,jk,ik->i", k_test, np.linalg.inv(K + w_inv), k_test)
  np.testing.assert_allclose(var, ref_var, rtol=1e-9)
  ref_train_cov = K - K @ np.linalg.solve(K + w_inv, K)
  np.testing.assert_allclose(train_var, np.diag(ref_train_cov), rtol=1e-7)
  np.testing.assert_allclose(train_mean, f, rtol=1e-9)


def test_predictive_mean_matches_monte_carlo():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    value = float(gpc.predictive_mean(jnp.asarray(0.8), jnp.asarray(2.0)))
  samples = 0.8 + np.sqrt(2.0) * rng.normal(size=400_000)
  ref = np.mean(1 / (1 - np.exp(-samples)) - 1 / samples)
  assert abs(value - ref) < 3e-3


def test_data_centric_rounds_refit_the_previous_soft_predictions():
  _, _, K, labels = make_problem(3, n=20)
  alpha, steps = 0.3, 3
  with jax.enable_x64(True):
    out = gpc.gpc_data_centric(K, labels, steps=steps, alpha=alpha)
    np.testing.assert_allclose(out.targets[0], labels)
    for t in range(steps):
      post = gpc.laplace_mode(K, out.targets[t])
      mean, var = gpc.laplace_predict(post, K, np.diag(K))
      soft = gpc.predictive_mean(mean, var)
      np.testing.assert_allclose(out.latent_mean[t], mean, rtol=1e-10)
      np.testing.assert_allclose(out.mean[t], soft, rtol=1e-10)
      if t + 1 < steps:
        np.testing.assert_allclose(
          out.targets[t + 1], alpha * labels + (1 - alpha) * soft, rtol=1e-12
        )
  # Soft targets are less extreme than the labels: the fit is pulled towards 1/2.
  assert np.all(np.abs(np.asarray(out.targets[1]) - 0.5) < 0.5)


def test_bad_input():
  _, _, K, labels = make_problem(4, n=6)
  with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
    gpc.laplace_mode(K, labels * 2)
  with pytest.raises(ValueError, match="y must have shape"):
    gpc.gpc_data_centric(K, labels[:-1], steps=2)
  with pytest.raises(ValueError, match="k_test and k_test_diag"):
    gpc.gpc_data_centric(K, labels, steps=2, k_test=K)
  with pytest.raises(ValueError, match="K is not symmetric"):
    gpc.laplace_mode(K + np.triu(np.ones_like(K), 1), labels)


def test_test_variance_below_what_the_training_points_explain_is_an_error_not_zero():
  """k(x*, x*) below what the training points explain (joint prior not PSD): an error, or NaN
  under jit, never a variance clipped to 0."""
  _, _, K, labels = make_problem(4, n=6)
  with jax.enable_x64(True):
    post = gpc.laplace_mode(K, labels)
    _, var = gpc.laplace_predict(post, K, np.diag(K))  # consistent: accepted, >= 0
    assert np.all(np.asarray(var) >= 0)
    bad_diag = np.diag(K) * np.r_[1.0, 1.0, 0.01, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"k_test_diag\[2\] = .* not positive semi-definite"):
      gpc.laplace_predict(post, K, bad_diag)
    with pytest.raises(ValueError, match="not positive semi-definite"):
      gpc.gpc_data_centric(K, labels, steps=2, k_test=K, k_test_diag=np.zeros(6))
    traced = jax.jit(gpc.laplace_predict)(post, K, bad_diag)[1]
    assert np.isnan(traced[2]) and np.all(np.isfinite(np.delete(np.asarray(traced), 2)))


def test_distribution_centric_is_duplicated_data_and_a_scaled_covariance():
  """Round t = one Laplace GPC on the labels repeated t times (a singular nt x nt kernel),
  which is the GPC with covariance t K, latent variance divided by t."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(12, 2))
  x_test = rng.normal(size=(5, 2))
  kern = lambda a, b: 3.0 * np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 2)
  K, k_test = kern(x, x), kern(x_test, x)
  y = (x[:, 0] + 0.3 * rng.normal(size=12) > 0).astype(float)
  with jax.enable_x64(True):
    out = gpc.gpc_distribution_centric(K, y, steps=3, k_test=k_test, k_test_diag=np.full(5, 3.0))
    round1 = gpc.gpc_data_centric(K, y, steps=1, k_test=k_test, k_test_diag=np.full(5, 3.0))
    np.testing.assert_allclose(out.latent_mean[0], round1.latent_mean[0], rtol=1e-12)
    for t in (3,):
      dup = gpc.laplace_mode(np.tile(K, (t, t)), np.tile(y, t), tol=1e-15)
      mean, var = gpc.laplace_predict(dup, np.tile(k_test, (1, t)), np.full(5, 3.0))
      np.testing.assert_allclose(out.latent_mean[t - 1], mean, rtol=1e-8, atol=1e-10)
      np.testing.assert_allclose(out.latent_var[t - 1], var, rtol=1e-8, atol=1e-12)
      # The mode is stationary for t * loglik - f^T K^{-1} f / 2: f = t K (y - A'(f)).
      f = np.asarray(dup.mode[:12])
      np.testing.assert_allclose(
        f, t * K @ (y - np.asarray(gpc.continuous_bernoulli_mean(f))), atol=1e-9
      )
  # More conditioning on the same labels: sharper (smaller latent variance) every round.
  assert np.all(np.diff(np.asarray(out.latent_var), axis=0) < 0)
