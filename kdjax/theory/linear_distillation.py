r"""Gradient-flow dynamics of linear and deep linear students distilled from a teacher.

Phuong & Lampert (2019), "Towards Understanding Knowledge Distillation", study a linear
(and a deep linear) student ``f(x) = w^T x`` trained by gradient descent on the outputs of
a teacher at ``n`` training inputs ``X`` (``[n, d]``, rows ``x_i``). Gradient descent keeps
``w(t) - w(0)`` in the row span of ``X`` (every gradient is ``X^T (...)``), so the student
can only change its weights inside the data span: the limit it reaches is the teacher's
part in the span plus the student's own initial part orthogonal to it.

**Losses solved here** (``targets`` are the teacher's outputs ``t_i`` at ``x_i``):

* ``loss='mse'``: :math:`L(w) = \frac{1}{2n} \|X w - t\|^2`. With
  :math:`S = X^\top X / n = V \operatorname{diag}(s) V^\top` the flow
  :math:`\dot w = -S (w - w_{ls})`, :math:`w_{ls} = X^+ t`, is solved exactly:

  .. math::

     w(t) = w_\infty + V \operatorname{diag}(e^{-s t})\, \mathbb 1[s > 0]\, V^\top (w_0 - w_{ls}),
     \qquad w_\infty = w_{ls} + (I - P) w_0,

  with ``P = X^+ X`` the projection onto the data span. For a linear teacher ``t = X w_T``,
  ``w_ls = P w_T``: the student ends at ``P w_T + (I - P) w_0``.
* ``loss='sigmoid_ce'`` (the binary soft-target cross-entropy of Phuong & Lampert):
  :math:`L(w) = \frac1n \sum_i -t_i \log\sigma(w^\top x_i) - (1 - t_i)\log(1 - \sigma(w^\top x_i))`
  for soft targets ``t_i in (0, 1)``; :math:`\dot w = -X^\top (\sigma(X w) - t) / n` has no
  closed form and is integrated (SciPy ``solve_ivp``, Radau with the exact Jacobian,
  rtol 1e-12). When ``logit(t)`` lies in the column span of ``X`` (always for full-row-rank
  ``X``, ``n <= d``) the student interpolates the teacher and the limit is
  ``X^+ logit(t) + (I - P) w_0``.
* Deep linear students ``w^T = W_L \cdots W_1`` (``W_1: [h, d]``, ..., ``W_L: [1, h]``) on
  the MSE loss: every layer follows :math:`\dot W_l = -\partial L / \partial W_l`; this
  ODE in all parameters is integrated (:func:`deep_linear_flow`). From a *balanced*
  initialisation (:math:`W_{l+1}^\top W_{l+1} = W_l W_l^\top`, :func:`balanced_init`) the
  end-to-end vector obeys (Arora, Cohen & Hazan 2018, "On the optimization of deep
  networks: implicit acceleration by overparameterization", for a single output)

  .. math::

     \dot w = -\|w\|^{2 - 2/L} \big(g + (L - 1) (\hat w^\top g)\, \hat w\big),
     \qquad g = \nabla L(w) = S (w - w_{ls}),

  (:func:`balanced_end_to_end_flow`). The orthogonal part ``(I - P) w`` then only changes
  by the scalar factor along ``\hat w``, so the deep student's limit is
  ``P w_ls + c (I - P) w_0`` with a ``c`` set by the trajectory (not ``c = 1`` as for
  ``L = 1``). For whitened data (``S = I``) and ``w_0`` parallel to ``w_ls`` the strength
  ``u = \|w\|`` solves ``\dot u = L u^{2 - 2/L} (u^* - u)``: ``u^* + (u_0 - u^*) e^{-t}`` for
  ``L = 1`` and the logistic ``u^* / (1 + (u^*/u_0 - 1) e^{-2 u^* t})`` for ``L = 2``
  (Saxe, McClelland & Ganguli 2014) (:func:`aligned_strength`).

All functions compute in NumPy/SciPy float64 (whatever jax's x64 flag) and return NumPy
arrays; :func:`gradient_descent` runs kdjax's own ``MLP`` / train step in JAX (x64 scoped)
to check the flows against discrete gradient descent, whose error is ``O(eta)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
import scipy.integrate
import scipy.special

from kdjax.theory.arguments import check_steps

__all__ = [
  "StudentFlow",
  "linear_student_flow",
  "linear_student_limit",
  "balanced_init",
  "deep_linear_flow",
  "balanced_end_to_end_flow",
  "aligned_strength",
  "max_stable_step",
  "gradient_descent",
  "deep_linear_gradient_descent",
]

_RTOL, _ATOL = 1e-12, 1e-14  # ODE tolerances (float64)


class StudentFlow(NamedTuple):
  """A student's trajectory.

  Attributes:
    weights: ``[T, d]`` end-to-end weights ``w(t)`` at the requested times.
    limit: ``[d]`` the weights as ``t -> inf`` (for deep students: the ODE's value at a
      time long enough that the remaining loss gradient is below 1e-10).
    distance: ``[T]`` ``||w(t) - limit||``.
  """

  weights: np.ndarray
  limit: np.ndarray
  distance: np.ndarray


# ----------------------------------------------------------------------------------------
# Argument checks.


def _matrix(x, name):
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2 or not x.size:
    raise ValueError(f"{name} must be a non-empty [n, d] matrix, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} must be finite")
  return x


def _vector(x, size, name, what):
  x = np.asarray(x, dtype=np.float64)
  if x.shape != (size,):
    raise ValueError(f"{name} must have shape [{size}] ({what}), got {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} must be finite")
  return x


def _times(times):
  times = np.asarray(times, dtype=np.float64).reshape(-1)
  if (
    not times.size or np.any(~np.isfinite(times)) or np.any(times < 0) or np.any(np.diff(times) < 0)
  ):
    raise ValueError("times must be a non-empty, finite, non-negative, non-decreasing sequence")
  return times


def _loss_name(loss):
  if loss not in ("mse", "sigmoid_ce"):
    raise ValueError(f"loss must be 'mse' or 'sigmoid_ce', got {loss!r}")
  return loss


def _setup(x, targets, w0, loss="mse"):
  x = _matrix(x, "x")
  n, d = x.shape
  targets = _vector(targets, n, "targets", "the teacher's output at each row of x")
  w0 = _vector(w0, d, "w0", "the student's initial weights, one per column of x")
  if _loss_name(loss) == "sigmoid_ce" and not np.all((targets > 0) & (targets < 1)):
    raise ValueError("targets must lie in (0, 1) for loss='sigmoid_ce' (soft labels)")
  return x, targets, w0


def _spectrum(x):
  """``S = X^T X / n = V diag(s) V^T`` with round-off eigenvalues set to 0."""
  s, v = np.linalg.eigh(x.T @ x / x.shape[0])
  return np.where(s > x.shape[1] * np.finfo(np.float64).eps * max(s.max(), 0.0), s, 0.0), v


# ----------------------------------------------------------------------------------------
# Linear student.


def linear_student_limit(x, targets, w0, *, loss="mse") -> np.ndarray:
  r"""The weights a linear student reaches under gradient flow from ``w0``.

  ``X^+ b + (I - X^+ X) w_0`` with ``b = targets`` (MSE) or ``b = logit(targets)``
  (sigmoid cross-entropy, which needs ``b`` in the column span of ``X``; else the student
  cannot match the teacher and the limit has no closed form: ValueError).

  Args:
    x: ``[n, d]`` training inputs. targets: ``[n]`` teacher outputs. w0: ``[d]``.
    loss: ``'mse'`` or ``'sigmoid_ce'``.

  Returns:
    ``[d]`` float64 limit.
  """
  x, targets, w0 = _setup(x, targets, w0, loss)
  pinv = np.linalg.pinv(x, rcond=x.shape[1] * np.finfo(np.float64).eps)
  b = targets if loss == "mse" else scipy.special.logit(targets)
  w = pinv @ b
  if loss == "sigmoid_ce":
    residual = np.linalg.norm(x @ w - b)
    if residual > 1e-8 * max(np.linalg.norm(b), 1.0):
      raise ValueError(
        f"logit(targets) is not in the span of x's columns (residual "
        f"{residual:.3g}): a linear student cannot match these soft targets"
      )
  return w + w0 - pinv @ (x @ w0)


def linear_student_flow(x, targets, w0, times, *, loss="mse") -> StudentFlow:
  r"""Gradient flow of a linear student on the teacher's outputs (see the module doc).

  ``loss='mse'`` is the exact closed form; ``loss='sigmoid_ce'`` is integrated with
  ``solve_ivp`` (Radau, exact Jacobian, rtol 1e-12, atol 1e-14).

  Args:
    x: ``[n, d]`` training inputs. targets: ``[n]`` teacher outputs (in ``(0, 1)`` for
      ``sigmoid_ce``). w0: ``[d]`` initial weights.
    times: ``[T]`` non-decreasing times ``>= 0`` (gradient-flow time = learning rate x steps).
    loss: ``'mse'`` or ``'sigmoid_ce'``.

  Returns:
    A :class:`StudentFlow`.
  """
  x, targets, w0 = _setup(x, targets, w0, loss)
  times = _times(times)
  limit = linear_student_limit(x, targets, w0, loss=loss)
  if loss == "mse":
    s, v = _spectrum(x)
    decay = np.where(s > 0, np.exp(-np.outer(times, s)), 0.0)  # [T, d]
    weights = limit + (decay * (v.T @ (w0 - limit))) @ v.T
  else:
    n = x.shape[0]

    def field(_, w):
      return -x.T @ (scipy.special.expit(x @ w) - targets) / n

    def jacobian(_, w):
      p = scipy.special.expit(x @ w)
      return -(x.T * (p * (1 - p))) @ x / n

    sol = scipy.integrate.solve_ivp(
      field,
      (0.0, times[-1]),
      w0,
      method="Radau",
      t_eval=times,
      jac=jacobian,
      rtol=_RTOL,
      atol=_ATOL,
    )
    weights = sol.y.T
  return StudentFlow(weights, limit, np.linalg.norm(weights - limit, axis=1))


# ----------------------------------------------------------------------------------------
# Deep linear student (MSE).


def balanced_init(w0, widths) -> list[np.ndarray]:
  r"""Rank-one balanced layers ``[W_1, ..., W_L]`` whose product ``W_L ... W_1`` is ``w0^T``.

  ``W_1 = r u_1 \hat w_0^T``, ``W_l = r u_l u_{l-1}^T``, ``W_L = r u_{L-1}^T`` with
  ``r = ||w0||^{1/L}`` and ``u_l`` the first unit vector of width ``widths[l-1]``; then
  ``W_{l+1}^T W_{l+1} = W_l W_l^T = r^2 u_l u_l^T`` (balanced).

  Args:
    w0: ``[d]`` non-zero end-to-end weights. widths: hidden widths ``(h_1, ..., h_{L-1})``
      (empty for ``L = 1``).

  Raises:
    ValueError: ``w0`` is zero or not finite, or a width is not a positive integer.
  """
  w0 = np.asarray(w0, dtype=np.float64).reshape(-1)
  norm = np.linalg.norm(w0)
  if not (norm > 0 and np.isfinite(norm)):
    raise ValueError(f"w0 must be non-zero and finite for a balanced initialisation, got {w0}")
  widths = list(widths)
  if not all(
    isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in widths
  ):
    raise ValueError(f"widths must be positive integers (h_1, ..., h_(L-1)), got {widths}")
  depth = len(widths) + 1
  r = norm ** (1.0 / depth)
  units = [np.eye(h)[0] for h in widths]
  layers, previous = [], w0 / norm
  for u in units:
    layers.append(r * np.outer(u, previous))
    previous = u
  layers.append(r * previous[None, :])
  return layers


def _check_layers(layers, d):
  layers = [np.asarray(w, dtype=np.float64) for w in layers]
  if not layers:
    raise ValueError("layers must hold at least one matrix (depth >= 1)")
  expected = d
  for i, w in enumerate(layers):
    if w.ndim != 2 or w.shape[1] != expected:
      raise ValueError(f"layers[{i}] must have shape [width, {expected}], got {w.shape}")
    expected = w.shape[0]
  if expected != 1:
    raise ValueError(f"the last layer must have one output row, got {expected}")
  return layers


def _product(layers):
  out = layers[0]
  for w in layers[1:]:
    out = w @ out
  return out


def _layer_grads(layers, g):
  """``dL/dW_l = (W_L..W_{l+1})^T g^T (W_{l-1}..W_1)^T`` for ``dL/d(W_L..W_1) = g^T``."""
  grads = []
  for l in range(len(layers)):
    below = _product(layers[:l]) if l else np.eye(layers[0].shape[1])
    above = _product(layers[l + 1 :]).reshape(1, -1) if l + 1 < len(layers) else np.eye(1)
    grads.append(above.T @ g[None, :] @ below.T)
  return grads


def deep_linear_flow(x, targets, layers, times, *, settle_time=None) -> StudentFlow:
  r"""Gradient flow of a deep linear student ``W_L ... W_1`` on the MSE loss (all layers).

  Integrates :math:`\dot W_l = -\partial L / \partial W_l` with ``solve_ivp`` (DOP853,
  rtol 1e-12, atol 1e-14). The limit is the solution at ``settle_time``; by default at 20x
  the last requested time, extended tenfold until the end-to-end gradient is below 1e-10
  (at most to t = 1e7: from a saddle such as an all-zero initialisation it never settles).

  Args:
    x: ``[n, d]`` inputs. targets: ``[n]`` teacher outputs.
    layers: ``[W_1 [h_1, d], ..., W_L [1, h_{L-1}]]`` initial layers.
    times: ``[T]`` times. settle_time: optional time for the limit.

  Returns:
    A :class:`StudentFlow` of the end-to-end weights.
  """
  x = _matrix(x, "x")
  n, d = x.shape
  targets = _vector(targets, n, "targets", "the teacher's output at each row of x")
  layers = _check_layers(layers, d)
  times = _times(times)
  shapes = [w.shape for w in layers]
  sizes = np.cumsum([0] + [w.size for w in layers])
  s_matrix, w_ls = x.T @ x / n, np.linalg.pinv(x) @ targets

  def unpack(theta):
    return [theta[a:b].reshape(shape) for a, b, shape in zip(sizes[:-1], sizes[1:], shapes)]

  def field(_, theta):
    ws = unpack(theta)
    g = s_matrix @ (_product(ws)[0] - w_ls)
    return -np.concatenate([gw.ravel() for gw in _layer_grads(ws, g)])

  theta0 = np.concatenate([w.ravel() for w in layers])
  end = settle_time or 20.0 * max(times[-1], 1.0)
  while True:
    sol = scipy.integrate.solve_ivp(
      field,
      (0.0, end),
      theta0,
      method="DOP853",
      t_eval=np.append(times, end),
      rtol=_RTOL,
      atol=_ATOL,
    )
    ends = [_product(unpack(th))[0] for th in sol.y.T]
    weights, limit = np.array(ends[:-1]), ends[-1]
    settled = np.linalg.norm(s_matrix @ (limit - w_ls)) <= 1e-10
    if settle_time is not None or settled or end >= 1e7:
      return StudentFlow(weights, limit, np.linalg.norm(weights - limit, axis=1))
    end *= 10.0


def balanced_end_to_end_flow(x, targets, w0, times, *, depth) -> np.ndarray:
  r"""End-to-end weights of a balanced-initialised depth-``L`` linear student (MSE).

  Integrates the reduced ODE :math:`\dot w = -\|w\|^{2-2/L}(g + (L-1)(\hat w^\top g)\hat w)`
  (module doc) in ``d`` variables instead of all layers; equal to :func:`deep_linear_flow`
  from :func:`balanced_init` up to the ODE tolerance.

  Returns:
    ``[T, d]`` weights at ``times``.
  """
  x = _matrix(x, "x")
  n, d = x.shape
  targets = _vector(targets, n, "targets", "the teacher's output at each row of x")
  w0 = _vector(w0, d, "w0", "the student's initial end-to-end weights")
  depth, times = check_steps(depth, "depth"), _times(times)
  s_matrix, w_ls = x.T @ x / n, np.linalg.pinv(x) @ targets

  def field(_, w):
    g = s_matrix @ (w - w_ls)
    norm = np.linalg.norm(w)
    unit = w / norm if norm > 0 else w
    return -(norm ** (2.0 - 2.0 / depth)) * (g + (depth - 1) * (unit @ g) * unit)

  sol = scipy.integrate.solve_ivp(
    field, (0.0, times[-1]), w0, method="DOP853", t_eval=times, rtol=_RTOL, atol=_ATOL
  )
  return sol.y.T


def aligned_strength(u0, target, times, *, depth) -> np.ndarray:
  r"""Closed-form strength ``u(t) = ||w(t)||`` for whitened data and ``w_0 || w_ls``.

  Solves :math:`\dot u = L u^{2-2/L}(u^* - u)` for ``L = 1`` (exponential) and ``L = 2``
  (logistic, Saxe et al. 2014); other depths have no elementary solution (ValueError).

  Args:
    u0: initial strength ``> 0``. target: ``u^* = ||w_ls|| > 0``. times: ``[T]``.
    depth: 1 or 2.
  """
  depth, times = check_steps(depth, "depth"), _times(times)
  if not (u0 > 0 and target > 0):
    raise ValueError(f"u0 and target must be > 0, got {u0!r}, {target!r}")
  if depth == 1:
    return target + (u0 - target) * np.exp(-times)
  if depth == 2:
    return target / (1.0 + (target / u0 - 1.0) * np.exp(-2.0 * target * times))
  raise ValueError(
    f"aligned_strength has a closed form for depth 1 or 2, got {depth}; "
    "use balanced_end_to_end_flow"
  )


# ----------------------------------------------------------------------------------------
# Discrete gradient descent with kdjax's own model and train step.


def max_stable_step(x, *, depth=1, scale=None) -> float:
  r"""The step size at which gradient descent stops converging to the flow's limit.

  Linear student (``depth = 1``): ``2 / s_max`` with ``s_max`` the largest eigenvalue of
  ``X^T X / n`` (the loss Hessian); exact. Deep linear (``depth = L``): ``2 / (L
  scale^{2-2/L} s_max)``, the inverse sharpness at a balanced minimum of end-to-end norm
  ``scale`` (exact for whitened data; an estimate otherwise).
  """
  x, depth = _matrix(x, "x"), check_steps(depth, "depth")
  s_max = float(_spectrum(x)[0].max())
  if not s_max > 0:
    raise ValueError("x must not be all zeros")
  factor = 1.0 if depth == 1 else depth * float(scale) ** (2.0 - 2.0 / depth)
  return 2.0 / (factor * s_max)


def _check_step(learning_rate, limit):
  if not 0 < learning_rate < limit:
    raise ValueError(
      f"learning_rate must be in (0, {limit:.6g}) (gradient descent is "
      f"unstable at or beyond 2 / sharpness), got {learning_rate!r}"
    )


def gradient_descent(
  x, teacher_weights, teacher_bias, w0, b0, *, learning_rate, num_steps
) -> tuple[np.ndarray, np.ndarray]:
  r"""Full-batch gradient descent of a linear student on a linear teacher, with kdjax parts.

  Student and teacher are ``kdjax.models.MLP(hidden=(), num_classes=1)`` (one Dense layer,
  ``w^T x + b``), the loss is ``kdjax.losses.fitnets_loss`` (``||s - t||^2 / 2`` per
  example, averaged: the MSE loss of the module doc on the inputs ``[x, 1]``), and the
  update is ``kdjax.train.steps.make_train_step`` with ``optax.sgd``, in float64. The MLP
  casts its inputs to float32, so ``x`` should be float32-representable.

  Returns:
    ``(weights [num_steps + 1, d], biases [num_steps + 1])`` after 0..num_steps updates.
  """
  import optax

  from kdjax.losses import fitnets_loss
  from kdjax.models import MLP
  from kdjax.train.state import TrainState
  from kdjax.train.steps import make_train_step

  x = _matrix(x, "x")
  d = x.shape[1]
  _check_step(learning_rate, max_stable_step(np.hstack([x, np.ones((len(x), 1))])))
  num_steps = check_steps(num_steps, "num_steps", minimum=0)
  with jax.enable_x64(True):
    import jax.numpy as jnp

    model = MLP(num_classes=1, hidden=())
    params = lambda w, b: {
      "Dense_0": {
        "kernel": jnp.asarray(w, jnp.float64).reshape(d, 1),
        "bias": jnp.asarray([b], jnp.float64),
      }
    }
    tx = optax.sgd(learning_rate)
    student = params(w0, b0)
    state = TrainState(
      step=jnp.zeros((), jnp.int32), params=student, opt_state=tx.init(student), model_state={}
    )
    objective = lambda s, t, labels, rng: fitnets_loss(s, t)
    step = jax.jit(make_train_step(model, tx, objective, seed=0, teacher=model))
    teacher = {"params": params(teacher_weights, teacher_bias)}
    batch = {"inputs": jnp.asarray(x), "labels": jnp.zeros(len(x), jnp.int32)}
    weights, biases = [np.asarray(w0, np.float64)], [float(b0)]
    for _ in range(num_steps):
      state, _ = step(state, batch, teacher)
      weights.append(np.asarray(state.params["Dense_0"]["kernel"])[:, 0])
      biases.append(float(state.params["Dense_0"]["bias"][0]))
  return np.array(weights), np.array(biases)


def deep_linear_gradient_descent(x, targets, layers, *, learning_rate, num_steps) -> np.ndarray:
  r"""Full-batch gradient descent on all layers of a deep linear student (MSE), in JAX.

  Returns:
    ``[num_steps + 1, d]`` end-to-end weights after 0..num_steps updates.
  """
  x = _matrix(x, "x")
  targets = _vector(targets, x.shape[0], "targets", "the teacher's output at each row of x")
  layers = _check_layers(layers, x.shape[1])
  scale = max(np.linalg.norm(np.linalg.pinv(x) @ targets), np.linalg.norm(_product(layers)))
  _check_step(learning_rate, max_stable_step(x, depth=len(layers), scale=scale))
  num_steps = check_steps(num_steps, "num_steps", minimum=0)
  with jax.enable_x64(True):
    import jax.numpy as jnp

    xs, ts = jnp.asarray(x), jnp.asarray(targets)

    def loss(ws):
      out = xs.T
      for w in ws:
        out = w @ out
      return 0.5 * jnp.mean((out[0] - ts) ** 2)

    def update(ws, _):
      grads = jax.grad(loss)(ws)
      ws = [w - learning_rate * g for w, g in zip(ws, grads)]
      end = ws[0]
      for w in ws[1:]:
        end = w @ end
      return ws, end[0]

    _, ends = jax.lax.scan(update, [jnp.asarray(w) for w in layers], None, length=num_steps)
    return np.vstack([_product(layers), np.asarray(ends)])
