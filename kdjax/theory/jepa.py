r"""Per-feature training dynamics of deep linear JEPA (self-distillation) and MAE.

Littwin et al. (2024), "How JEPA Avoids Noisy Features: The Implicit Bias of Deep Linear
Self Distillation Networks" (arXiv 2407.03475). Two views ``x, y`` in ``R^d``, a deep
linear encoder ``\bar W = W_L \cdots W_1`` (``d x d`` layers) and a linear predictor ``V``:

.. math::

   L_{\rm JEPA} = \tfrac12 \mathbb E \|V \bar W x - \operatorname{sg}(\bar W y)\|^2, \qquad
   L_{\rm MAE} = \tfrac12 \mathbb E \|V \bar W x - y\|^2,

(``sg`` = stop-gradient: the target encoder is the online encoder, no gradient). When
``Sigma_xx = E[x x^T]`` and ``Sigma_yx = E[y x^T]`` are diagonal in one orthonormal basis,
``Sigma_xx = diag(lambda)``, ``Sigma_yx = diag(lambda * rho)`` (``rho_i`` is feature i's
regression coefficient of ``y`` on ``x``), and every layer starts at ``a_0 I`` (small and
balanced, ``V(0) = a_0 I`` too), gradient flow keeps every matrix diagonal in that basis
and all ``L + 1`` factors of feature i equal to one scalar ``a`` (``a_l^2 - v^2`` is
conserved and starts at 0). **These ODEs and critical times are kdjax's own derivation from
the losses above** (the paper's equations could not be read offline, so they have not been
compared line by line); they are checked against gradient descent on the actual networks.
Per feature:

.. math::

   \text{JEPA:}\quad \dot a = \lambda\, a^{2L} (\rho - a), \qquad
   \text{MAE:}\quad \dot a = \lambda\, a^{L} (\rho - a^{L+1}),

with encoder weight ``\bar w = a^L``: JEPA ends at ``a = rho`` (``\bar w = rho^L``), MAE at
``a = rho^{1/(L+1)}`` (``\bar w = rho^{L/(L+1)}``). In terms of ``\bar w`` the JEPA flow is
``d\bar w/dt = L \lambda \bar w^{3-1/L} (\rho - \bar w^{1/L})``.

**Critical times.** The time to go from ``a_0`` to ``a_1`` is
``t = (1/lambda) int du / (u^m (rho - u))`` (JEPA, ``m = 2L``), in closed form by partial
fractions:

.. math::

   \lambda t = \sum_{k=0}^{m-2} \frac{a_0^{k+1-m} - a_1^{k+1-m}}{(m-1-k)\,\rho^{k+1}}
   + \frac{1}{\rho^m} \log\frac{a_1 (\rho - a_0)}{a_0 (\rho - a_1)} .

For small ``a_0`` the ``a_0`` terms dominate, ``\lambda t^* \approx \sum_{n=1}^{2L-1}
a_0^{-n} / (n \rho^{2L-n})`` (:func:`critical_time_expansion`). At ``L = 1`` this is
``1 / (lambda rho a_0)``: the order of ``lambda rho`` (the covariance between the views),
as MAE's ``lambda t^* \approx a_0^{1-L} / ((L-1) \rho)`` (``L >= 2``) is at every depth;
deeper JEPA encoders add terms up to ``\rho^{-(2L-1)}``, so features with a large
regression coefficient ``rho`` are learned first even when their covariance is small. MAE's
time ``(1/lambda) int du / (u^L (rho - u^{L+1}))`` is closed form for ``L = 1``
(``log(u^2 / (rho - u^2)) / (2 rho)``) and integrated by adaptive quadrature otherwise.

All functions are NumPy/SciPy float64 and return NumPy arrays; :func:`gradient_descent`
trains the actual deep linear networks in JAX (x64 scoped) on samples from
:func:`synthetic_views`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
import scipy.integrate
import scipy.optimize

from kdjax.theory.arguments import check_steps

__all__ = [
  "OBJECTIVES",
  "fixed_point",
  "feature_flow",
  "time_to_reach",
  "critical_time",
  "critical_time_expansion",
  "Views",
  "synthetic_views",
  "max_stable_step",
  "gradient_descent",
]

OBJECTIVES = ("jepa", "mae")


def _objective(objective):
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  return objective


def _features(lambdas, rhos):
  lambdas = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
  rhos = np.atleast_1d(np.asarray(rhos, dtype=np.float64))
  if lambdas.ndim != 1 or lambdas.shape != rhos.shape:
    raise ValueError(
      f"lambdas and rhos must be vectors of one shape [k], got {lambdas.shape} and {rhos.shape}"
    )
  if not np.all(np.isfinite(lambdas)) or np.any(lambdas <= 0):
    raise ValueError(
      "lambdas (the eigenvalues of Sigma_xx) must be finite and > 0: the "
      "input covariance must be positive definite"
    )
  if not np.all(np.isfinite(rhos)) or np.any(rhos <= 0):
    raise ValueError("rhos (the regression coefficients of y on x) must be finite and > 0")
  return lambdas, rhos


def _init(init_scale, rhos, objective, depth):
  """Per-layer initial value ``a_0 = init_scale^(1/L)``, checked to be below every fixed point."""
  eps = float(init_scale)
  a0 = eps ** (1.0 / depth) if eps > 0 else eps
  top = rhos if objective == "jepa" else rhos ** (1.0 / (depth + 1))
  if not 0 < a0 < float(np.min(top)):
    raise ValueError(
      f"init_scale must be in (0, {float(np.min(top)) ** depth:.6g}) (every "
      f"layer starts at init_scale^(1/L), below every feature's fixed point), "
      f"got {init_scale!r}"
    )
  return a0


def fixed_point(rhos, *, depth, objective) -> np.ndarray:
  """The per-layer value ``a`` feature i converges to: ``rho`` (JEPA), ``rho^(1/(L+1))`` (MAE)."""
  rhos, depth = np.asarray(rhos, dtype=np.float64), check_steps(depth, "depth")
  return rhos if _objective(objective) == "jepa" else rhos ** (1.0 / (depth + 1))


def _field(a, lambdas, rhos, depth, objective):
  if objective == "jepa":
    return lambdas * a ** (2 * depth) * (rhos - a)
  return lambdas * a**depth * (rhos - a ** (depth + 1))


def feature_flow(lambdas, rhos, times, *, depth, objective, init_scale) -> np.ndarray:
  r"""Encoder weight ``\bar w_i(t) = a_i(t)^L`` of every feature under gradient flow.

  Integrates the per-feature ODE of the module doc (``solve_ivp`` DOP853, rtol 1e-12) up
  to 1e-13 of the fixed point, then holds the value.

  Args:
    lambdas: ``[k]`` eigenvalues of ``Sigma_xx`` (> 0). rhos: ``[k]`` regression
      coefficients (> 0). times: ``[T]`` non-decreasing times >= 0.
    depth: encoder depth ``L >= 1``. objective: ``'jepa'`` or ``'mae'``.
    init_scale: ``a_0``, every layer's initial value (the encoder starts at ``a_0^L``).

  Returns:
    ``[T, k]`` encoder weights per feature.
  """
  lambdas, rhos = _features(lambdas, rhos)
  depth, objective = check_steps(depth, "depth"), _objective(objective)
  a0 = _init(init_scale, rhos, objective, depth)
  times = np.asarray(times, dtype=np.float64).reshape(-1)
  if not times.size or np.any(times < 0) or np.any(np.diff(times) < 0):
    raise ValueError("times must be a non-empty, non-negative, non-decreasing sequence")
  columns = []
  for lam, rho, top in zip(lambdas, rhos, fixed_point(rhos, depth=depth, objective=objective)):
    # Each feature on its own (DOP853); once within 1e-13 of its fixed point the flow is
    # stiff and flat: stop there and hold the value (closer than the solver's tolerance).
    settled = lambda _, a, top=top: top - a[0] - 1e-13 * top
    settled.terminal = True
    sol = scipy.integrate.solve_ivp(
      lambda _, a, lam=lam, rho=rho: _field(a, lam, rho, depth, objective),
      (0.0, times[-1]),
      [a0],
      method="DOP853",
      t_eval=times,
      rtol=1e-12,
      atol=1e-15,
      events=settled,
    )
    held = sol.y_events[0][0, 0] if sol.status == 1 else np.nan  # status 1: settled
    columns.append(np.concatenate([sol.y[0], np.full(times.size - sol.y.shape[1], held)]))
  return np.stack(columns, axis=1) ** depth


def time_to_reach(a1, lam, rho, *, depth, objective, init_scale) -> float:
  """Exact gradient-flow time for one feature's per-layer value to go from ``a_0`` to ``a1``.

  JEPA: the partial-fraction closed form of the module doc (any depth). MAE: closed form
  for ``L = 1``, adaptive quadrature (``quad``, relative tolerance 1e-12) for ``L >= 2``.
  """
  (lam,), (rho,) = _features(lam, rho)
  depth, objective = check_steps(depth, "depth"), _objective(objective)
  a0 = _init(init_scale, np.array([rho]), objective, depth)
  top = float(fixed_point(rho, depth=depth, objective=objective))
  if not a0 <= a1 < top:
    raise ValueError(
      f"a1 must be in [a_0, a_inf) = [{a0:.6g}, {top:.6g}) (a_0 = "
      f"init_scale^(1/L), a_inf the fixed point), got {a1!r}"
    )
  if objective == "jepa":
    m = 2 * depth
    k = np.arange(m - 1)
    powers = (a0 ** (k + 1.0 - m) - a1 ** (k + 1.0 - m)) / ((m - 1 - k) * rho ** (k + 1.0))
    return float((powers.sum() + np.log(a1 * (rho - a0) / (a0 * (rho - a1))) / rho**m) / lam)
  if depth == 1:
    return float(np.log(a1**2 * (rho - a0**2) / (a0**2 * (rho - a1**2))) / (2 * rho * lam))
  # In s = log u the integrand u^(1-L) / (rho - u^(L+1)) is smooth and bounded.
  value, _ = scipy.integrate.quad(
    lambda s: np.exp((1 - depth) * s) / (rho - np.exp((depth + 1) * s)),
    np.log(a0),
    np.log(a1),
    epsabs=0.0,
    epsrel=1e-12,
    limit=200,
  )
  return float(value / lam)


def critical_time(lambdas, rhos, *, depth, objective, init_scale, fraction=0.5) -> np.ndarray:
  r"""Time at which each feature's encoder weight reaches ``fraction`` of its limit.

  ``\bar w_i(t^*) = fraction \cdot \bar w_i(\infty)``, i.e. ``a = fraction^{1/L} a_\infty``,
  from :func:`time_to_reach` (exact; ``fraction`` in ``(0, 1)``, above the initial value).

  Returns:
    ``[k]`` critical times.
  """
  lambdas, rhos = _features(lambdas, rhos)
  depth, objective = check_steps(depth, "depth"), _objective(objective)
  if not 0 < fraction < 1:
    raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
  targets = fraction ** (1.0 / depth) * fixed_point(rhos, depth=depth, objective=objective)
  start = _init(init_scale, rhos, objective, depth) ** depth
  if np.any(targets**depth <= start):
    raise ValueError(
      f"init_scale = {init_scale!r} already exceeds fraction = {fraction!r} "
      "of a feature's limit: pick a smaller init_scale or a larger fraction"
    )
  return np.array(
    [
      time_to_reach(a1, lam, rho, depth=depth, objective=objective, init_scale=init_scale)
      for a1, lam, rho in zip(targets, lambdas, rhos)
    ]
  )


def critical_time_expansion(lambdas, rhos, *, depth, objective, init_scale) -> np.ndarray:
  r"""Leading small-initialisation terms of the critical time (kdjax's derivation).

  JEPA: :math:`\lambda t^* \approx \sum_{n=1}^{2L-1} a_0^{-n} / (n \rho^{2L-n})`;
  MAE: :math:`\lambda t^* \approx a_0^{1-L} / ((L-1)\rho)` for ``L >= 2`` and
  ``log(1/a_0) / rho`` for ``L = 1``. Both omit terms that stay bounded as ``a_0 -> 0``
  (JEPA: up to a ``log a_0`` term).
  """
  lambdas, rhos = _features(lambdas, rhos)
  depth, objective = check_steps(depth, "depth"), _objective(objective)
  a0 = _init(init_scale, rhos, objective, depth)
  if objective == "jepa":
    n = np.arange(1, 2 * depth)[:, None]
    return np.sum(a0 ** (-n) / (n * rhos ** (2 * depth - n)), axis=0) / lambdas
  if depth == 1:
    return np.log(1 / a0) / (rhos * lambdas)
  return a0 ** (1 - depth) / ((depth - 1) * rhos * lambdas)


# ----------------------------------------------------------------------------------------
# The actual networks, trained by gradient descent.


class Views(NamedTuple):
  """Paired samples with exactly diagonal empirical covariances in a rotated basis.

  Attributes:
    x, y: ``[n, d]`` views. basis: ``[d, d]`` orthogonal; feature i is column i, with
    ``x^T x / n = basis diag(lambdas) basis^T`` and ``y^T x / n = basis diag(lambdas rhos)
    basis^T``.
  """

  x: np.ndarray
  y: np.ndarray
  basis: np.ndarray


def synthetic_views(lambdas, rhos, *, n, noise=0.5, seed=0) -> Views:
  r"""Samples ``y = rho x + noise`` feature-wise, whitened so the covariances are exact.

  Feature i of ``x`` is ``sqrt(n lambda_i) q_i`` and of ``y`` is ``rho_i x_i + noise
  sqrt(n lambda_i) q_{d+i}`` for orthonormal ``q_1..q_{2d}`` in ``R^n`` (needs ``n >= 2d``),
  then both views are rotated by a random orthogonal ``basis``.
  """
  lambdas, rhos = _features(lambdas, rhos)
  d = lambdas.size
  if int(n) < 2 * d:
    raise ValueError(f"n must be >= 2 * len(lambdas) = {2 * d}, got {n!r}")
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(int(n), 2 * d)))
  scale = np.sqrt(n * lambdas)
  x_feat = q[:, :d] * scale
  y_feat = x_feat * rhos + noise * q[:, d:] * scale
  basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return Views(x_feat @ basis.T, y_feat @ basis.T, basis)


def _layer_field(theta, lam, rho, objective):
  """Per-feature gradient field of all factors ``(a_1..a_L, v)`` (the unreduced ODE)."""
  a, v = theta[:-1], theta[-1]
  enc = np.prod(a)
  others = np.array([np.prod(np.delete(a, l)) for l in range(a.size)])
  if objective == "jepa":
    residual = lam * enc * (v - rho)  # d/d(v enc) of the loss, target enc fixed
  else:
    residual = lam * (v * enc - rho)
  return -np.append(residual * v * others, residual * enc)


def max_stable_step(lambdas, rhos, *, depth, objective) -> float:
  r"""Largest step size for which gradient descent converges to the balanced fixed point.

  The Jacobian ``J`` of the per-feature field of all ``L + 1`` factors at the fixed point
  (central differences) must satisfy ``|1 + eta mu| < 1`` for each non-zero eigenvalue
  ``mu``: ``eta < min 2 |Re mu| / |mu|^2`` over features.
  """
  lambdas, rhos = _features(lambdas, rhos)
  depth, objective = check_steps(depth, "depth"), _objective(objective)
  limit = np.inf
  for lam, rho, top in zip(lambdas, rhos, fixed_point(rhos, depth=depth, objective=objective)):
    theta = np.full(depth + 1, top)
    h = 1e-6 * top
    jac = np.stack(
      [
        (
          _layer_field(theta + h * e, lam, rho, objective)
          - _layer_field(theta - h * e, lam, rho, objective)
        )
        / (2 * h)
        for e in np.eye(depth + 1)
      ],
      axis=1,
    )
    mu = np.linalg.eigvals(jac)
    mu = mu[np.abs(mu) > 1e-6 * np.max(np.abs(mu))]
    limit = min(limit, float(np.min(2 * np.abs(mu.real) / np.abs(mu) ** 2)))
  return limit


def gradient_descent(
  views: Views,
  lambdas,
  rhos,
  *,
  depth,
  objective,
  init_scale,
  learning_rate,
  num_steps,
  record_every=1,
) -> np.ndarray:
  r"""Full-batch gradient descent on the deep linear encoder + predictor (JAX, float64).

  Every layer and the predictor start at ``init_scale^(1/L) I``; the JEPA target
  ``\bar W y`` goes through ``jax.lax.stop_gradient``. Feature i's encoder weight is read
  as ``basis[:, i]^T \bar W basis[:, i]``.

  Args:
    views: from :func:`synthetic_views` with the same ``lambdas``, ``rhos``.
    learning_rate: in ``(0, max_stable_step)``. num_steps: updates.
    record_every: keep every this many steps (always including step 0).

  Returns:
    ``[num_steps // record_every + 1, k]`` encoder weights after 0, r, 2r, ... steps.
  """
  lambdas, rhos = _features(lambdas, rhos)
  depth, objective = check_steps(depth, "depth"), _objective(objective)
  a0 = _init(init_scale, rhos, objective, depth)
  x, y, basis = (np.asarray(a, dtype=np.float64) for a in (views.x, views.y, views.basis))
  d = lambdas.size
  if x.shape != y.shape or x.ndim != 2 or x.shape[1] != d or basis.shape != (d, d):
    raise ValueError(
      f"views must hold x, y of shape [n, {d}] and basis [{d}, {d}] "
      f"(one column per feature), got {x.shape}, {y.shape}, {basis.shape}"
    )
  limit = max_stable_step(lambdas, rhos, depth=depth, objective=objective)
  if not 0 < learning_rate < limit:
    raise ValueError(
      f"learning_rate must be in (0, {limit:.6g}) (beyond it gradient "
      f"descent does not converge to the fixed point), got {learning_rate!r}"
    )
  num_steps = check_steps(num_steps, "num_steps", minimum=0)
  record_every = check_steps(record_every, "record_every")
  if num_steps % record_every:
    raise ValueError(f"record_every must divide num_steps = {num_steps}, got {record_every}")
  with jax.enable_x64(True):
    import jax.numpy as jnp

    xs, ys, b = jnp.asarray(x), jnp.asarray(y), jnp.asarray(basis)

    def encoder(layers):
      out = layers[0]
      for w in layers[1:]:
        out = w @ out
      return out

    def loss(params):
      layers, predictor = params
      enc = encoder(layers)
      target = jax.lax.stop_gradient(ys @ enc.T) if objective == "jepa" else ys
      return 0.5 * jnp.mean(jnp.sum((xs @ enc.T @ predictor.T - target) ** 2, axis=1))

    def steps(params, _):
      def one(p, _):
        grads = jax.grad(loss)(p)
        return jax.tree_util.tree_map(lambda w, g: w - learning_rate * g, p, grads), None

      params, _ = jax.lax.scan(one, params, None, length=record_every)
      return params, jnp.diag(b.T @ encoder(params[0]) @ b)

    eye = a0 * jnp.eye(d, dtype=jnp.float64)
    params = ([eye] * depth, eye)
    _, record = jax.jit(lambda p: jax.lax.scan(steps, p, None, length=num_steps // record_every))(
      params
    )
    return np.vstack([np.full((1, d), a0**depth), np.asarray(record)])
