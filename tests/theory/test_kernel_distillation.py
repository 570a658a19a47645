"""Closed forms of kdjax.theory.kernel_distillation against explicit rounds of KRR (a fresh solve
each)."""

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from kdjax.theory import kernel_distillation


def random_psd(rng, n, rank=None, scale=1.0):
  """A random PSD kernel with a spread-out spectrum (rank-deficient if rank < n)."""
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  d = scale * np.exp(rng.uniform(-4, 2, size=n))
  if rank is not None:
    d[rank:] = 0.0
  K = (q * d) @ q.T
  return (K + K.T) / 2


def iterate(K, y, reg, steps, alpha, k_test=None):
  """Round 1 fits y, round t fits alpha y + (1 - alpha) p_{t-1}; one solve per round."""
  n = K.shape[0]
  targets, train, test = y, [], []
  for _ in range(steps):
    coef = (
      np.linalg.lstsq(K + reg * np.eye(n), targets, rcond=None)[0]
      if reg == 0
      else scipy.linalg.solve(K + reg * np.eye(n), targets, assume_a="pos")
    )
    train.append(K @ coef)
    if k_test is not None:
      test.append(k_test @ coef)
    targets = alpha * y + (1 - alpha) * train[-1]
  return np.array(train), (np.array(test) if k_test is not None else None)


def rel_err(a, b):
  return np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("reg", [1e-3, 0.1, 3.0])
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.7, 1.0])
def test_closed_form_equals_explicit_rounds(reg, alpha):
  rng = np.random.default_rng(int(reg * 1000) + int(alpha * 10))
  n, steps = 25, 50
  K = random_psd(rng, n)
  y = rng.normal(size=n)
  k_test = rng.normal(size=(7, n))
  train, test = iterate(K, y, reg, steps, alpha, k_test)
  with jax.enable_x64(True):
    closed = kernel_distillation.krr_self_distillation(K, y, reg=reg, steps=steps, alpha=alpha)
    closed_test = kernel_distillation.krr_self_distillation(
      K, y, reg=reg, steps=steps, alpha=alpha, k_test=k_test
    )
  assert closed.shape == (steps, n) and closed_test.shape == (steps, 7)
  for t in range(steps):  # per round: late Mobahi rounds are tiny, compare each relatively
    assert rel_err(closed[t], train[t]) < 1e-8, t
    assert rel_err(closed_test[t], test[t]) < 1e-8, t


def test_batch_of_target_columns_equals_each_column():
  rng = np.random.default_rng(1)
  K = random_psd(rng, 20)
  Y = rng.normal(size=(20, 3))
  with jax.enable_x64(True):
    batch = kernel_distillation.krr_self_distillation(K, Y, reg=0.3, steps=6, alpha=0.4)
    cols = [
      kernel_distillation.krr_self_distillation(K, Y[:, j], reg=0.3, steps=6, alpha=0.4)
      for j in range(3)
    ]
  assert batch.shape == (6, 20, 3)
  for j in range(3):
    np.testing.assert_allclose(batch[:, :, j], cols[j], rtol=1e-12, atol=1e-14)
  train, _ = iterate(K, Y, 0.3, 6, 0.4)
  assert rel_err(batch, train) < 1e-8


def test_rank_deficient_kernel_with_zero_reg_is_the_pseudo_inverse():
  rng = np.random.default_rng(2)
  K = random_psd(rng, 15, rank=6)
  y = rng.normal(size=15)
  with jax.enable_x64(True):
    closed = kernel_distillation.krr_self_distillation(K, y, reg=0.0, steps=5, alpha=0.0)
    limit = kernel_distillation.krr_self_distillation_limit(K, y, reg=0.0, alpha=0.0)
  projection = K @ np.linalg.pinv(K) @ y
  for t in range(5):
    assert rel_err(closed[t], projection) < 1e-8
  assert rel_err(limit, projection) < 1e-8


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.9])
def test_limit_is_krr_with_amplified_reg_and_equals_many_rounds(alpha):
  rng = np.random.default_rng(3)
  n, reg = 20, 0.5
  K = random_psd(rng, n)
  y = rng.normal(size=n)
  k_test = rng.normal(size=(4, n))
  steps = int(np.ceil(np.log(1e-14) / np.log(1 - alpha)))  # (1 - alpha)^steps < 1e-14
  train, test = iterate(K, y, reg, steps, alpha, k_test)
  with jax.enable_x64(True):
    limit = kernel_distillation.krr_self_distillation_limit(K, y, reg=reg, alpha=alpha)
    limit_test = kernel_distillation.krr_self_distillation_limit(
      K, y, reg=reg, alpha=alpha, k_test=k_test
    )
  assert rel_err(limit, train[-1]) < 1e-8
  assert rel_err(limit_test, test[-1]) < 1e-8
  amplified = scipy.linalg.solve(K + reg / alpha * np.eye(n), y)
  assert rel_err(limit, K @ amplified) < 1e-8


def test_limit_without_labels_collapses_to_zero():
  rng = np.random.default_rng(4)
  K = random_psd(rng, 12, scale=0.01)  # a = d / (d + reg) <= ~0.07
  y = rng.normal(size=12)
  train, _ = iterate(K, y, 1.0, 20, 0.0)
  with jax.enable_x64(True):
    limit = kernel_distillation.krr_self_distillation_limit(K, y, reg=1.0, alpha=0.0)
  assert np.all(np.asarray(limit) == 0.0)
  assert np.max(np.abs(train[-1])) < 1e-15 * np.max(np.abs(y)) + 1e-20


def brute_force_constrained(K, y, eps, steps, k_test):
  """Explicit rounds: brentq on log c of the explicit fit error, collapse when ||y||^2/n <= eps."""
  n = len(y)
  target, preds, tests, regs, collapse = y, [], [], [], None
  for t in range(1, steps + 1):
    if collapse is None and target @ target / n <= eps:
      collapse = t
    if collapse is not None:
      preds.append(np.zeros(n))
      tests.append(np.zeros(len(k_test)))
      regs.append(np.inf)
      continue

    def excess(log_c):
      c = np.exp(log_c)
      residual = c * scipy.linalg.solve(K + c * np.eye(n), target, assume_a="pos")
      return residual @ residual / n - eps

    log_c = scipy.optimize.brentq(excess, -60, 60, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    c = np.exp(log_c)
    coef = scipy.linalg.solve(K + c * np.eye(n), target, assume_a="pos")
    target = K @ coef
    preds.append(target)
    tests.append(k_test @ coef)
    regs.append(c)
  return np.array(preds), np.array(tests), np.array(regs), collapse


@pytest.mark.parametrize("eps_fraction", [0.05, 0.2, 0.6])
def test_constrained_rounds_and_collapse_match_brute_force(eps_fraction):
  rng = np.random.default_rng(5)
  n = 20
  K = random_psd(rng, n)
  y = rng.normal(size=n)
  k_test = rng.normal(size=(5, n))
  eps = eps_fraction * (y @ y) / n
  preds, tests, regs, collapse = brute_force_constrained(K, y, eps, 40, k_test)
  with jax.enable_x64(True):
    out = kernel_distillation.krr_self_distillation_constrained(
      K, y, eps=eps, steps=40, k_test=k_test
    )
  assert collapse is not None and out.collapse_round == collapse
  assert collapse >= 2
  live = slice(0, collapse - 1)
  assert rel_err(out.regs[live], regs[live]) < 1e-8
  assert np.all(np.isinf(np.asarray(out.regs[collapse - 1 :])))
  for t in range(collapse - 1):
    assert rel_err(out.predictions[t], preds[t]) < 1e-8
    assert rel_err(out.test_predictions[t], tests[t]) < 1e-8
    fit = np.mean((np.asarray(out.predictions[t]) - (y if t == 0 else preds[t - 1])) ** 2)
    assert abs(fit - eps) < 1e-9 * eps  # the budget is active
  assert np.all(np.asarray(out.predictions[collapse - 1 :]) == 0)
  assert np.all(np.asarray(out.test_predictions[collapse - 1 :]) == 0)
  assert np.all(np.diff(regs[live]) > 0)  # c_t increases (Mobahi et al.)


def test_optimal_alpha_closed_form_at_step_two_matches_grid():
  rng = np.random.default_rng(6)
  n, reg = 30, 0.05
  K = random_psd(rng, n)
  clean = K @ rng.normal(size=n) / 10
  y = clean + 0.5 * rng.normal(size=n)
  grid = np.linspace(0, 1, 2001)
  losses = [np.sum((iterate(K, y, reg, 2, a)[0][-1] - clean) ** 2) for a in grid]
  with jax.enable_x64(True):
    best = kernel_distillation.optimal_alpha(K, y, clean, reg=reg, steps=2)
  brute = grid[int(np.argmin(losses))]
  assert abs(best - brute) <= 1e-3
  mine = np.sum((iterate(K, y, reg, 2, best)[0][-1] - clean) ** 2)
  assert mine <= min(losses) * (1 + 1e-10)


@pytest.mark.parametrize("use_test", [False, True])
def test_optimal_alpha_at_later_rounds_matches_grid(use_test):
  rng = np.random.default_rng(7)
  n, reg, steps = 30, 0.02, 6
  K = random_psd(rng, n)
  weights = rng.normal(size=n) / 10
  k_test = rng.normal(size=(10, n)) * 0.3
  clean = K @ weights
  y = clean + 0.5 * rng.normal(size=n)
  reference = k_test @ weights if use_test else clean
  kt = k_test if use_test else None

  def loss(a):
    train, test = iterate(K, y, reg, steps, a, kt)
    return np.sum(((test if use_test else train)[-1] - reference) ** 2)

  grid = np.linspace(0, 1, 1001)
  losses = np.array([loss(a) for a in grid])
  with jax.enable_x64(True):
    best = kernel_distillation.optimal_alpha(K, y, reference, reg=reg, steps=steps, k_test=kt)
  assert abs(best - grid[int(np.argmin(losses))]) <= 2e-3
  assert loss(best) <= losses.min() * (1 + 1e-9)


def test_stepwise_optimal_alphas_match_per_round_grid():
  rng = np.random.default_rng(8)
  n, reg, steps = 25, 0.05, 5
  K = random_psd(rng, n)
  clean = K @ rng.normal(size=n) / 10
  y = clean + 0.5 * rng.normal(size=n)
  with jax.enable_x64(True):
    alphas, preds = kernel_distillation.stepwise_optimal_alphas(K, y, clean, reg=reg, steps=steps)
  grid = np.linspace(0, 1, 2001)
  previous = K @ scipy.linalg.solve(K + reg * np.eye(n), y)
  np.testing.assert_allclose(preds[0], previous, rtol=1e-10)
  for t in range(steps - 1):

    def fit(a):
      return K @ scipy.linalg.solve(K + reg * np.eye(n), a * y + (1 - a) * previous)

    losses = [np.sum((fit(a) - clean) ** 2) for a in grid]
    assert abs(float(alphas[t]) - grid[int(np.argmin(losses))]) <= 1e-3
    assert np.sum((fit(float(alphas[t])) - clean) ** 2) <= min(losses) * (1 + 1e-10)
    previous = fit(float(alphas[t]))
    assert rel_err(preds[t + 1], previous) < 1e-8
  with jax.enable_x64(True):
    replay = kernel_distillation.krr_self_distillation_schedule(K, y, reg=reg, alphas=alphas)
  assert rel_err(replay, np.asarray(preds)) < 1e-8


def test_schedule_equals_explicit_rounds_with_per_round_weights():
  rng = np.random.default_rng(10)
  n, reg = 20, 0.2
  K = random_psd(rng, n)
  y = rng.normal(size=(n, 2))
  k_test = rng.normal(size=(3, n))
  alphas = rng.uniform(size=7)
  targets, train, test = y, [], []
  for t in range(8):
    coef = scipy.linalg.solve(K + reg * np.eye(n), targets, assume_a="pos")
    train.append(K @ coef)
    test.append(k_test @ coef)
    if t < 7:
      targets = alphas[t] * y + (1 - alphas[t]) * train[-1]
  with jax.enable_x64(True):
    out = kernel_distillation.krr_self_distillation_schedule(K, y, reg=reg, alphas=alphas)
    out_test = kernel_distillation.krr_self_distillation_schedule(
      K, y, reg=reg, alphas=alphas, k_test=k_test
    )
  assert rel_err(out, np.array(train)) < 1e-8 and rel_err(out_test, np.array(test)) < 1e-8
  with pytest.raises(ValueError, match=r"alphas\[1\]"):
    kernel_distillation.krr_self_distillation_schedule(K, y, reg=reg, alphas=[0.1, 1.2])


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(K=np.ones((3, 4))), "K must be a square"),
    (dict(K=np.array([[1.0, 0.5], [0.0, 1.0]])), "K is not symmetric"),
    (dict(reg=-1.0), "reg must be"),
    (dict(alpha=-0.1), "alpha"),
    (dict(alpha=1.5), "alpha"),
    (dict(steps=0), "steps must be"),
    (dict(steps=2.5), "steps must be"),
    (dict(y=np.ones(3)), "y must have shape"),
    (dict(k_test=np.ones((2, 3))), "k_test must have shape"),
  ],
)
def test_bad_input_names_the_argument(kwargs, match):
  args = dict(K=np.eye(2), y=np.ones(2), reg=0.1, steps=2, alpha=0.0)
  args.update(kwargs)
  K, y = args.pop("K"), args.pop("y")
  with pytest.raises(ValueError, match=match):
    kernel_distillation.krr_self_distillation(K, y, **args)


def test_bad_budget_and_infeasible_budget():
  K = np.diag([1.0, 0.0])  # y[1] lies in the null space: best error 0.5
  with pytest.raises(ValueError, match="eps must be"):
    kernel_distillation.krr_self_distillation_constrained(np.eye(2), np.ones(2), eps=0.0, steps=3)
  with pytest.raises(ValueError, match="eps = 0.1 is not above"):
    kernel_distillation.krr_self_distillation_constrained(K, np.ones(2), eps=0.1, steps=3)
  with pytest.raises(ValueError, match="steps must be an integer >= 2"):
    kernel_distillation.optimal_alpha(np.eye(2), np.ones(2), np.ones(2), reg=0.1, steps=1)
  with pytest.raises(ValueError, match="reference must have shape"):
    kernel_distillation.optimal_alpha(np.eye(2), np.ones(2), np.ones(3), reg=0.1, steps=2)


def test_float32_runs_and_is_close():
  rng = np.random.default_rng(9)
  K = random_psd(rng, 10)
  y = rng.normal(size=10)
  out = kernel_distillation.krr_self_distillation(
    K.astype(np.float32), y.astype(np.float32), reg=0.5, steps=4
  )
  assert out.dtype == np.float32
  train, _ = iterate(K, y, 0.5, 4, 0.0)
  assert rel_err(out, train) < 1e-3


def test_indefinite_kernel_is_an_error_not_a_clipped_answer():
  """K - 2I has negative eigenvalues: the formula gives -1.44 where clipping gave 0.234."""
  rng = np.random.default_rng(3)
  K = random_psd(rng, 6) - 2.0 * np.eye(6)
  y = rng.normal(size=6)
  for fn in (
    lambda k: kernel_distillation.krr_self_distillation(k, y, reg=0.1, steps=2),
    lambda k: kernel_distillation.krr_self_distillation_limit(k, y, reg=0.1, alpha=0.5),
    lambda k: kernel_distillation.krr_self_distillation_constrained(k, y, eps=0.01, steps=2),
  ):
    with pytest.raises(
      ValueError, match="K must be positive semi-definite: its smallest eigenvalue is -"
    ):
      fn(K)
  # Round-off negatives (a rank-deficient kernel) stay accepted and become exact zeros.
  low_rank = random_psd(rng, 6, rank=3)
  with jax.enable_x64(True):
    assert np.all(
      np.isfinite(kernel_distillation.krr_self_distillation(low_rank, y, reg=0.1, steps=2))
    )
    # Under jit the check cannot run: the eigenvalues below tolerance turn into NaN.
    traced = jax.jit(lambda k: kernel_distillation.kernel_eigensystem(k).values)
    assert np.isnan(traced(K)).any() and not np.isnan(traced(low_rank)).any()
    out = jax.jit(lambda k: kernel_distillation._rounds(k, y[:, None], 0.1, 0.0, None, steps=2))(K)
    assert np.isnan(out).all()
