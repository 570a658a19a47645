"""kdjax.krr against NumPy/SciPy float64 references."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import scipy.linalg

from kdjax import krr


def random_problem(n=12, m=5, d=4, c=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n + m, d))
  gram = np.exp(-0.5 * np.sum((x[:, None] - x[None]) ** 2, -1))
  return gram[:n, :n], gram[n:, :n], gram[n:, n:], rng.normal(size=(n, c))


def test_predict_matches_numpy_solve_with_trace_scaled_ridge():
  k_tt, k_st, _, y = random_problem()
  reg = 1e-3
  lam = reg * np.trace(k_tt) / len(k_tt)
  want = k_st @ np.linalg.solve(k_tt + lam * np.eye(len(k_tt)), y)
  with jax.enable_x64(True):
    got = krr.predict(k_st, k_tt, y, reg=reg)
    got_1d = krr.predict(k_st, k_tt, y[:, 0], reg=reg)
  np.testing.assert_allclose(got, want, rtol=1e-9)
  np.testing.assert_allclose(got_1d, want[:, 0], rtol=1e-9)


def test_predict_interpolates_training_points_as_reg_goes_to_zero():
  k_tt, _, _, y = random_problem(n=6)
  with jax.enable_x64(True):
    got = krr.predict(k_tt, k_tt, y, reg=1e-12)
  np.testing.assert_allclose(got, y, atol=1e-6)


def test_posterior_matches_gp_formulas():
  k_tt, k_st, k_ss, y = random_problem()
  reg = 1e-2
  a = k_tt + reg * np.trace(k_tt) / len(k_tt) * np.eye(len(k_tt))
  cov = k_ss - k_st @ scipy.linalg.solve(a, k_st.T, assume_a="pos")
  with jax.enable_x64(True):
    mean, got_cov = krr.posterior(k_st, k_tt, y, k_ss, reg=reg)
    _, got_var = krr.posterior(k_st, k_tt, y, np.diag(k_ss), reg=reg)
  np.testing.assert_allclose(mean, k_st @ np.linalg.solve(a, y), rtol=1e-9)
  np.testing.assert_allclose(got_cov, cov, rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(got_var, np.diag(cov), rtol=1e-8, atol=1e-12)
  assert np.all(np.asarray(got_var) >= -1e-12)


def test_gradient_through_predict_matches_finite_differences():
  k_tt, k_st, _, y = random_problem(n=5, m=2, c=1)
  with jax.enable_x64(True):
    f = lambda ys: jnp.sum(krr.predict(k_st, k_tt, ys, reg=1e-2) ** 2)
    jax.test_util.check_grads(f, (jnp.asarray(y),), order=1, modes=("rev",))
    g = jax.jit(jax.grad(lambda k: jnp.sum(krr.predict(k_st, k, y))))(k_tt)
  assert bool(jnp.all(jnp.isfinite(g)))


def test_not_positive_definite_raises():
  k = np.array([[1.0, 2.0], [2.0, 1.0]])
  with pytest.raises(ValueError, match="positive definite"):
    krr.predict(np.ones((1, 2)), k, np.ones(2), reg=0.0)
  with pytest.raises(ValueError, match="positive definite"):
    krr.posterior(np.ones((1, 2)), k, np.ones(2), np.ones(1), reg=0.0)


def test_bad_shapes_raise():
  k_tt, k_st, _, y = random_problem()
  with pytest.raises(ValueError, match="k_train_train"):
    krr.predict(k_st, k_tt[:, :3], y)
  with pytest.raises(ValueError, match="y_train"):
    krr.predict(k_st, k_tt, y[:3])
  with pytest.raises(ValueError, match="k_test_train"):
    krr.predict(k_st[:, :3], k_tt, y)
  with pytest.raises(ValueError, match="reg"):
    krr.predict(k_st, k_tt, y, reg=-1.0)


# Bad kernels (issue: linear algebra on bad kernels must fail loudly).

ISSUE_K = np.array([[2.0, 1.9], [-5.0, 2.0]])


@pytest.mark.parametrize(
  "call",
  [
    lambda k: krr.predict(np.ones((1, 2)), k, np.ones(2)),
    lambda k: krr.solve(k, np.ones(2)),
    lambda k: krr.posterior(np.ones((1, 2)), k, np.ones(2), np.ones(1)),
  ],
)
def test_non_symmetric_kernel_raises(call):
  with pytest.raises(ValueError, match="k_train_train is not symmetric"):
    call(ISSUE_K)


def test_asymmetry_within_rounding_tolerance_is_accepted():
  k_tt, k_st, _, y = random_problem()
  skew = np.triu(np.full_like(k_tt, 1e-10), 1)
  with jax.enable_x64(True):
    got = krr.predict(k_st, k_tt + skew, y, reg=1e-3)
    want = krr.predict(k_st, k_tt, y, reg=1e-3)
    with pytest.raises(ValueError, match="not symmetric"):
      krr.predict(k_st, k_tt + 1e4 * skew, y, reg=1e-3)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_nan_kernel_raises():
  k_tt, k_st, _, y = random_problem()
  k_tt = k_tt.copy()
  k_tt[0, 0] = np.nan
  with pytest.raises(ValueError, match="k_train_train has 1 NaN or infinite"):
    krr.predict(k_st, k_tt, y)


def test_not_positive_definite_message_suggests_a_reg_that_works():
  k = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
  with pytest.raises(ValueError, match="not positive definite") as info:
    krr.solve(k, np.ones(2), reg=0.0)
  message = str(info.value)
  assert "smallest eigenvalue of K: -1" in message
  suggested = float(message.split("try reg >= ")[1].split(",")[0])
  assert suggested == pytest.approx(2.0)  # 2 |lambda_min| n / tr(K)
  alpha = krr.solve(k, np.ones(2), reg=suggested)
  assert bool(jnp.all(jnp.isfinite(alpha)))


def test_under_jit_a_failed_cholesky_gives_nan_never_a_number():
  k = jnp.array([[1.0, 2.0], [2.0, 1.0]])
  pred = jax.jit(lambda k: krr.predict(jnp.ones((3, 2)), k, jnp.ones(2), reg=0.0))(k)
  mean, var = jax.jit(
    lambda k: krr.posterior(jnp.ones((3, 2)), k, jnp.ones(2), jnp.ones(3), reg=0.0)
  )(k)
  assert bool(jnp.all(jnp.isnan(pred)))
  assert bool(jnp.all(jnp.isnan(mean))) and bool(jnp.all(jnp.isnan(var)))


def test_under_jit_the_symmetric_part_is_used():
  sym = (ISSUE_K + ISSUE_K.T) / 2  # [[2, -1.55], [-1.55, 2]], then + 2 * tr/n * I
  with jax.enable_x64(True):
    got = jax.jit(lambda k: krr.solve(k, jnp.ones(2), reg=2.0))(ISSUE_K)
    want = np.linalg.solve(sym + 4.0 * np.eye(2), np.ones(2))
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_posterior_too_small_k_test_test_raises_eagerly_and_is_nan_under_jit():
  k_tt, k_st, k_ss, y = random_problem()
  small = 0.5 * np.diag(k_ss)  # each test point's own variance, halved: too small
  for k_test_test in (small, np.diag(k_ss) - np.diag(np.diag(k_ss)) + np.diag(small)):
    with pytest.raises(ValueError, match="posterior variance .* < 0 at test point"):
      krr.posterior(k_st, k_tt, y, k_test_test, reg=1e-2)
  a = k_tt + 1e-2 * np.trace(k_tt) / len(k_tt) * np.eye(len(k_tt))
  negative = small - np.diag(k_st @ np.linalg.solve(a, k_st.T)) < 0
  assert negative.any() and not negative.all()
  _, var = jax.jit(lambda s: krr.posterior(k_st, k_tt, y, s, reg=1e-2))(small)
  np.testing.assert_array_equal(np.isnan(var), negative)


def test_posterior_variance_within_rounding_is_clipped_to_zero_not_negative():
  k_tt, _, _, y = random_problem(n=6)
  reg = 1e-3
  a = k_tt + reg * np.trace(k_tt) / 6 * np.eye(6)
  explained = np.diag(k_tt @ np.linalg.solve(a, k_tt))
  with jax.enable_x64(True):
    _, var = krr.posterior(k_tt, k_tt, y, explained * (1 - 1e-15), reg=reg)
    _, cov = krr.posterior(k_tt, k_tt, y, np.diag(explained * (1 - 1e-15)), reg=reg)
  assert np.all(np.asarray(var) >= 0) and np.all(np.diag(cov) >= 0)
  np.testing.assert_allclose(var, 0.0, atol=1e-12)
