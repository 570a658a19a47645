"""Linear / deep linear distillation flows against matrix exponentials, a second ODE
integrator, closed forms and discrete gradient descent (kdjax's MLP + train step)."""

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.special

from kdjax.theory import linear_distillation as ld


def problem(seed, n=5, d=8):
  """Fewer examples than features: the data span is a proper subspace."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32).astype(np.float64)
  return rng, x, rng.normal(size=d), 0.3 * rng.normal(size=d)


def test_mse_flow_is_the_matrix_exponential_and_ends_at_projection_plus_initial_part():
  _, x, w_teacher, w0 = problem(0)
  times = np.array([0.0, 0.3, 1.0, 4.0, 500.0])
  flow = ld.linear_student_flow(x, x @ w_teacher, w0, times)
  s = x.T @ x / len(x)
  projection = np.linalg.pinv(x) @ x
  expected_limit = projection @ w_teacher + (np.eye(8) - projection) @ w0
  np.testing.assert_allclose(flow.limit, expected_limit, rtol=0, atol=1e-12)
  for t, w in zip(times, flow.weights):
    reference = expected_limit + scipy.linalg.expm(-t * s) @ (w0 - expected_limit)
    np.testing.assert_allclose(w, reference, rtol=0, atol=1e-10)
  # The student never leaves w0 + span(x): the orthogonal part stays its initial part.
  orth = np.eye(8) - projection
  np.testing.assert_allclose(flow.weights @ orth.T, np.tile(orth @ w0, (5, 1)), atol=1e-12)
  assert flow.distance[0] > flow.distance[2] > flow.distance[-1] and flow.distance[-1] < 1e-6


def test_sigmoid_ce_flow_against_a_second_integrator_and_its_limit():
  _, x, w_teacher, w0 = problem(1)
  w_teacher = 0.3 * w_teacher  # moderate logits: fast convergence
  soft = scipy.special.expit(x @ w_teacher)
  times = np.array([0.5, 2.0, 10.0])
  flow = ld.linear_student_flow(x, soft, w0, times, loss="sigmoid_ce")
  ref = scipy.integrate.solve_ivp(
    lambda _, w: -x.T @ (scipy.special.expit(x @ w) - soft) / len(x),
    (0, 10.0),
    w0,
    method="LSODA",
    t_eval=times,
    rtol=1e-12,
    atol=1e-14,
  )
  np.testing.assert_allclose(flow.weights, ref.y.T, rtol=0, atol=1e-8)
  # Same limit as MSE on the logits: P w_T + (I - P) w0.
  projection = np.linalg.pinv(x) @ x
  np.testing.assert_allclose(flow.limit, projection @ w_teacher + w0 - projection @ w0, atol=1e-10)
  long = ld.linear_student_flow(x, soft, w0, [1000.0], loss="sigmoid_ce")
  assert long.distance[0] < 1e-6 < flow.distance[-1]


@pytest.mark.parametrize("depth", [1, 2])
def test_deep_linear_flow_equals_the_aligned_closed_form_on_whitened_data(depth):
  rng = np.random.default_rng(2)
  n, d = 12, 4
  q, _ = np.linalg.qr(rng.normal(size=(n, d)))
  x = np.sqrt(n) * q  # X^T X / n = I
  w_ls = rng.normal(size=d)
  layers = ld.balanced_init(0.01 * w_ls, (3,) * (depth - 1))
  times = np.array([0.5, 2.0, 5.0, 9.0])
  flow = ld.deep_linear_flow(x, x @ w_ls, layers, times)
  strength = ld.aligned_strength(
    0.01 * np.linalg.norm(w_ls), np.linalg.norm(w_ls), times, depth=depth
  )
  np.testing.assert_allclose(
    flow.weights, np.outer(strength, w_ls / np.linalg.norm(w_ls)), rtol=0, atol=1e-8
  )


def test_balanced_reduced_ode_equals_the_full_layer_ode():
  _, x, w_teacher, w0 = problem(3)
  layers = ld.balanced_init(w0, (4, 3))
  np.testing.assert_allclose(ld._product(layers)[0], w0, atol=1e-14)
  times = np.array([0.5, 2.0, 6.0])
  full = ld.deep_linear_flow(x, x @ w_teacher, layers, times)
  reduced = ld.balanced_end_to_end_flow(x, x @ w_teacher, w0, times, depth=3)
  np.testing.assert_allclose(full.weights, reduced, rtol=0, atol=1e-8)
  # Deep student: matches the teacher on the span; the orthogonal part is w0's, rescaled.
  projection = np.linalg.pinv(x) @ x
  np.testing.assert_allclose(projection @ full.limit, projection @ w_teacher, atol=1e-8)
  orth, orth0 = full.limit - projection @ full.limit, w0 - projection @ w0
  scale = orth @ orth0 / (orth0 @ orth0)
  np.testing.assert_allclose(orth, scale * orth0, atol=1e-8)
  assert abs(scale - 1) > 1e-3  # unlike depth 1, the initial part does not survive as is


def test_gradient_descent_with_kdjax_model_converges_to_the_flow_at_order_one():
  _, x, w_teacher, w0 = problem(4)
  x_bias = np.hstack([x, np.ones((len(x), 1))])  # the MLP's Dense has a bias
  flow = ld.linear_student_flow(x_bias, x @ w_teacher + 0.5, np.append(w0, 0.1), [2.0])
  errors = []
  for eta in (0.02, 0.01):
    weights, biases = ld.gradient_descent(
      x, w_teacher, 0.5, w0, 0.1, learning_rate=eta, num_steps=round(2.0 / eta)
    )
    errors.append(np.linalg.norm(np.append(weights[-1], biases[-1]) - flow.weights[0]))
  assert 1.8 < errors[0] / errors[1] < 2.2, errors
  assert errors[1] < 1e-2


def test_deep_gradient_descent_converges_to_the_flow_at_order_one():
  _, x, w_teacher, w0 = problem(5)
  layers = ld.balanced_init(0.3 * w0, (3,))
  flow = ld.deep_linear_flow(x, x @ w_teacher, layers, [2.0])
  errors = []
  for eta in (0.02, 0.01):
    ends = ld.deep_linear_gradient_descent(
      x, x @ w_teacher, layers, learning_rate=eta, num_steps=round(2.0 / eta)
    )
    errors.append(np.linalg.norm(ends[-1] - flow.weights[0]))
  assert 1.8 < errors[0] / errors[1] < 2.2, errors


def test_bad_input_names_the_argument():
  _, x, w_teacher, w0 = problem(6)
  t = x @ w_teacher
  with pytest.raises(ValueError, match=r"targets must have shape \[5\]"):
    ld.linear_student_flow(x, t[:4], w0, [1.0])
  with pytest.raises(ValueError, match=r"w0 must have shape \[8\]"):
    ld.linear_student_flow(x, t, w0[:3], [1.0])
  with pytest.raises(ValueError, match="times must be"):
    ld.linear_student_flow(x, t, w0, [2.0, 1.0])
  with pytest.raises(ValueError, match=r"targets must lie in \(0, 1\)"):
    ld.linear_student_flow(x, t, w0, [1.0], loss="sigmoid_ce")
  with pytest.raises(ValueError, match="depth must be an integer >= 1"):
    ld.balanced_end_to_end_flow(x, t, w0, [1.0], depth=0)
  with pytest.raises(ValueError, match=r"layers\[1\] must have shape \[width, 4\]"):
    ld.deep_linear_flow(x, t, [np.ones((4, 8)), np.ones((1, 3))], [1.0])
  limit = ld.max_stable_step(np.hstack([x, np.ones((5, 1))]))
  with pytest.raises(ValueError, match="learning_rate must be in"):
    ld.gradient_descent(x, w_teacher, 0.0, w0, 0.0, learning_rate=limit, num_steps=3)
  with pytest.raises(ValueError, match="learning_rate must be in"):
    ld.deep_linear_gradient_descent(
      x, t, ld.balanced_init(w0, (2,)), learning_rate=10.0, num_steps=3
    )
  with pytest.raises(ValueError, match="layers must hold at least one matrix"):
    ld.deep_linear_flow(x, t, [], [1.0])
  for widths in ([0], (3, -1), [2.5]):  # [0] raised IndexError, [2.5] TypeError
    with pytest.raises(ValueError, match=r"widths must be positive integers .*, got \["):
      ld.balanced_init(w0, widths)
  with pytest.raises(ValueError, match="w0 must be non-zero and finite"):
    ld.balanced_init(np.full(8, np.inf), (2,))
  with pytest.raises(ValueError, match="depth must be an integer >= 1"):
    ld.max_stable_step(x, depth=float("nan"))
  with pytest.raises(ValueError, match="num_steps must be an integer >= 0"):
    ld.gradient_descent(x, w_teacher, 0.0, w0, 0.0, learning_rate=limit / 2, num_steps=-1)
  with pytest.raises(ValueError, match="num_steps must be an integer >= 0"):
    ld.deep_linear_gradient_descent(
      x, t, ld.balanced_init(w0, (2,)), learning_rate=1e-3, num_steps=2.5
    )
