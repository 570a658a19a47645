"""Deep linear JEPA / MAE feature dynamics against quadrature, the unreduced per-layer ODE
and gradient descent on the actual networks."""

import numpy as np
import pytest
import scipy.integrate

from kdjax.theory import jepa

LAMBDAS = np.array([1.0, 0.45, 0.25])  # covariance order: feature 0 first
RHOS = np.array([0.3, 0.6, 0.95])  # regression-coefficient order: feature 2 first


@pytest.mark.parametrize("objective", jepa.OBJECTIVES)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_critical_time_against_quadrature_and_the_ode(objective, depth):
  eps = 1e-3 if depth < 3 else 3e-3
  times = jepa.critical_time(LAMBDAS, RHOS, depth=depth, objective=objective, init_scale=eps)
  limit = jepa.fixed_point(RHOS, depth=depth, objective=objective) ** depth
  a0 = eps ** (1 / depth)
  for lam, rho, t, top in zip(LAMBDAS, RHOS, times, limit):
    field = (
      (lambda u: lam * u ** (2 * depth) * (rho - u))
      if objective == "jepa"
      else (lambda u: lam * u**depth * (rho - u ** (depth + 1)))
    )
    a1 = (0.5 * top) ** (1 / depth)
    reference, _ = scipy.integrate.quad(
      lambda u: 1 / field(u), a0, a1, epsabs=0, epsrel=1e-13, limit=500, points=[a0 * 2]
    )
    assert abs(t - reference) < 1e-9 * reference
  # The ODE solution is at half its limit exactly at the critical times.
  flow = jepa.feature_flow(
    LAMBDAS, RHOS, np.sort(times), depth=depth, objective=objective, init_scale=eps
  )
  order = np.argsort(times)
  np.testing.assert_allclose(flow[np.arange(3), order], 0.5 * limit[order], rtol=1e-8)


@pytest.mark.parametrize("objective", jepa.OBJECTIVES)
def test_reduced_ode_equals_the_unreduced_per_layer_ode(objective):
  depth, eps = 3, 1e-2
  a0 = eps ** (1 / depth)
  times = np.array([50.0, 400.0, 3000.0])
  reduced = jepa.feature_flow(
    LAMBDAS, RHOS, times, depth=depth, objective=objective, init_scale=eps
  )
  for i, (lam, rho) in enumerate(zip(LAMBDAS, RHOS)):
    sol = scipy.integrate.solve_ivp(
      lambda _, th: jepa._layer_field(th, lam, rho, objective),
      (0, times[-1]),
      np.full(depth + 1, a0),
      method="LSODA",
      t_eval=times,
      rtol=1e-12,
      atol=1e-15,
    )
    np.testing.assert_allclose(np.prod(sol.y[:-1], axis=0), reduced[:, i], rtol=1e-7)


def test_gradient_descent_on_the_networks_converges_to_the_ode_at_order_one():
  depth, eps, horizon = 2, 0.01, 1800.0
  views = jepa.synthetic_views(LAMBDAS, RHOS, n=64, seed=1)
  np.testing.assert_allclose(
    views.x.T @ views.x / 64, views.basis @ np.diag(LAMBDAS) @ views.basis.T, atol=1e-12
  )
  flow = jepa.feature_flow(LAMBDAS, RHOS, [horizon], depth=depth, objective="jepa", init_scale=eps)[
    0
  ]
  errors = []
  for eta in (0.5, 0.25):
    steps = round(horizon / eta)
    out = jepa.gradient_descent(
      views,
      LAMBDAS,
      RHOS,
      depth=depth,
      objective="jepa",
      init_scale=eps,
      learning_rate=eta,
      num_steps=steps,
      record_every=steps,
    )
    errors.append(np.max(np.abs(out[-1] - flow)))
  assert errors[1] < 1e-4 and 1.8 < errors[0] / errors[1] < 2.2, errors


def test_mae_gradient_descent_matches_its_ode():
  views = jepa.synthetic_views(LAMBDAS, RHOS, n=64, seed=2)
  out = jepa.gradient_descent(
    views,
    LAMBDAS,
    RHOS,
    depth=2,
    objective="mae",
    init_scale=0.01,
    learning_rate=0.05,
    num_steps=2000,
    record_every=500,
  )
  flow = jepa.feature_flow(
    LAMBDAS, RHOS, 0.05 * np.arange(0, 2001, 500), depth=2, objective="mae", init_scale=0.01
  )
  np.testing.assert_allclose(out, flow, atol=2e-3)
  assert np.max(np.abs(out - flow)) > 0  # it is a different computation


def test_depth_turns_jepa_towards_rho_while_mae_keeps_covariance_order():
  eps = 1e-4
  for depth in range(1, 6):
    mae = jepa.critical_time(LAMBDAS, RHOS, depth=depth, objective="mae", init_scale=eps)
    assert np.all(np.diff(mae) > 0)  # covariance (lambda rho) order at any depth
  shallow = jepa.critical_time(LAMBDAS, RHOS, depth=1, objective="jepa", init_scale=eps)
  deep = jepa.critical_time(LAMBDAS, RHOS, depth=5, objective="jepa", init_scale=eps)
  assert np.argmin(shallow) == 0 and np.argmin(deep) == 2
  # The small-initialisation expansion is the leading part of the exact time.
  for small in (1e-8, 1e-12):
    exact = jepa.critical_time(LAMBDAS, RHOS, depth=2, objective="jepa", init_scale=small)
    approx = jepa.critical_time_expansion(
      LAMBDAS, RHOS, depth=2, objective="jepa", init_scale=small
    )
    assert np.all(np.abs(approx / exact - 1) < 30 * small**0.5)


def test_bad_input_names_the_argument():
  with pytest.raises(ValueError, match="input covariance must be positive definite"):
    jepa.critical_time([1.0, -0.1], [0.5, 0.5], depth=2, objective="jepa", init_scale=1e-3)
  with pytest.raises(ValueError, match="depth must be an integer >= 1"):
    jepa.feature_flow(LAMBDAS, RHOS, [1.0], depth=0, objective="jepa", init_scale=1e-3)
  with pytest.raises(ValueError, match="lambdas and rhos must be vectors of one shape"):
    jepa.feature_flow(LAMBDAS, RHOS[:2], [1.0], depth=1, objective="mae", init_scale=1e-3)
  with pytest.raises(ValueError, match="objective must be one of"):
    jepa.feature_flow(LAMBDAS, RHOS, [1.0], depth=1, objective="byol", init_scale=1e-3)
  with pytest.raises(ValueError, match="init_scale must be in"):
    jepa.feature_flow(LAMBDAS, RHOS, [1.0], depth=1, objective="jepa", init_scale=0.5)
  views = jepa.synthetic_views(LAMBDAS, RHOS, n=8)
  limit = jepa.max_stable_step(LAMBDAS, RHOS, depth=2, objective="jepa")
  good = dict(depth=2, objective="jepa", init_scale=1e-2, learning_rate=limit / 2, num_steps=4)
  for k, bad, match in (
    (3, dict(learning_rate=limit), "learning_rate must be in"),
    (2, {}, r"views must hold x, y of shape \[n, 2\]"),  # views of 3 features
    (3, dict(num_steps=-2), "num_steps must be an integer >= 0"),
    (3, dict(record_every=0), "record_every must be an integer >= 1"),
    (3, dict(record_every=3), "record_every must divide num_steps = 4"),
  ):
    with pytest.raises(ValueError, match=match):
      jepa.gradient_descent(views, LAMBDAS[:k], RHOS[:k], **{**good, **bad})
  with pytest.raises(ValueError, match="depth must be an integer >= 1"):
    jepa.max_stable_step(LAMBDAS, RHOS, depth=None, objective="mae")
  with pytest.raises(ValueError, match=r"n must be >= 2 \* len\(lambdas\) = 6"):
    jepa.synthetic_views(LAMBDAS, RHOS, n=5)
