"""The computations of the theory experiments: arrays and metric series, no plotting.

``compute(config) -> Result`` for ``config.method`` in :data:`EXPERIMENTS`. A
:class:`Result` holds the per-step metric series (one ``metrics.jsonl`` record per step),
the summary, and the arrays that :mod:`kdjax.theory_plots` draws and ``arrays.npz`` keeps.
Everything is float64 NumPy (call inside ``jax.enable_x64(True)``, as
:func:`kdjax.theory_job.run` does) and deterministic given ``config.seed``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from kdjax.theory import collapse, gp, gpc, jepa, kernel_distillation, linear_distillation as ld
from kdjax.theory.problems import load_problem, median_distance, rbf_kernel

__all__ = ["Result", "EXPERIMENTS", "compute"]


class Result(NamedTuple):
  """What an experiment computed.

  Attributes:
    steps: ``[S]`` the ``step`` of each metrics record (rounds 1..S, or ODE times).
    series: ``{key: [S] values}``; non-finite entries are left out of the records.
    summary: final scalar metrics (the job's return value).
    arrays: named arrays for the figures and ``arrays.npz``.
    saved: the keys of ``arrays`` written to ``arrays.npz``.
  """

  steps: np.ndarray
  series: dict
  summary: dict
  arrays: dict
  saved: tuple = ()


def _problem(dataset, seed):
  return load_problem(
    dataset.name,
    seed=seed,
    n_train=dataset.n_train,
    n_val=dataset.n_val,
    n_test=dataset.n_test,
    noise=dataset.noise,
    label_noise=dataset.label_noise,
  )


def _kernel_fn(kernel, x_train):
  """``k(a, b)`` with lengthscale = ``kernel.lengthscale_factor`` x median distance."""
  lengthscale = kernel.lengthscale_factor * median_distance(x_train)
  return lambda a, b: np.asarray(rbf_kernel(a, b, lengthscale=lengthscale, scale=kernel.scale))


def _kernels(config, problem):
  k = _kernel_fn(config.kernel, problem.x_train)
  K = k(problem.x_train, problem.x_train)
  return (K + K.T) / 2, k(problem.x_test, problem.x_train), k(problem.x_val, problem.x_train), k


def _mse(pred, target):
  """Mean squared error per round: ``[steps, n(, m)]`` vs ``[n(, m)]`` -> ``[steps]``."""
  err = (np.asarray(pred) - target) ** 2
  return err.reshape(err.shape[0], -1).sum(-1) / target.shape[0]


def _accuracy(pred, labels):
  return (np.asarray(pred).argmax(-1) == labels).mean(-1)


def alpha_key(alpha) -> str:
  """``'alpha=0.2'``: the label of a label weight in metric keys and legends."""
  return f"alpha={alpha:g}"


def _rounds(n):
  return np.arange(1, n + 1)


# ----------------------------------------------------------------------------------------
# Mobahi et al. 2020.


def _collapse_sweep(config, problem):
  """Numerical collapse round and its bounds over budgets and kernel lengthscales."""
  y = problem.y_train
  b = config.bounds
  rows = []
  for factor in b.lengthscale_factors:
    lengthscale = factor * median_distance(problem.x_train)
    K = rbf_kernel(
      problem.x_train, problem.x_train, lengthscale=lengthscale, scale=config.kernel.scale
    )
    K = (K + K.T) / 2
    for fraction in b.eps_fractions:
      eps = fraction * float(np.mean(y**2))
      try:
        bounds = collapse.collapse_round_bounds(K, y, eps=eps)
      except ValueError:  # eps below the null-space residual of y: no fit meets the budget
        rows.append((factor, fraction, np.nan, np.nan, np.nan, np.nan))
        continue
      found = kernel_distillation.krr_self_distillation_constrained(
        K, y, eps=eps, steps=int(min(bounds.upper, bounds.lower + b.max_extra_rounds))
      )
      found = found.collapse_round or np.nan
      rows.append((factor, fraction, found, bounds.lower, bounds.upper, bounds.condition))
  return np.array(rows, dtype=np.float64)


def collapse_round_entry(collapse_round: int | None) -> int | None:
  """The summary's ``collapse_round``: the first budget round whose solution is the zero
  function, or ``None`` (``null`` in ``summary.json``) when the iterates did not collapse
  within ``num_steps`` rounds; never a number outside Mobahi et al.'s bounds."""
  return None if collapse_round is None else int(collapse_round)


def _mobahi(config):
  """Mobahi et al.'s budget and fixed-regularisation rounds.

  Summary: ``collapse_round`` (:func:`collapse_round_entry`: ``None`` when not reached in
  ``num_steps`` rounds), its ``collapse_round_lower_bound`` / ``_upper_bound``, ``eps``
  (the fit-error budget), ``test_mse_round1``, and the best round and test MSE of each
  schedule.
  """
  problem = _problem(config.dataset, config.seed)
  K, k_test, _, _ = _kernels(config, problem)
  y, steps = problem.y_train, config.num_steps
  fixed_test = kernel_distillation.krr_self_distillation(
    K, y, reg=config.reg, steps=steps, k_test=k_test
  )
  fixed_train = kernel_distillation.krr_self_distillation(K, y, reg=config.reg, steps=steps)
  eps = config.eps_fraction * float(np.mean(y**2))
  budget = kernel_distillation.krr_self_distillation_constrained(
    K, y, eps=eps, steps=steps, k_test=k_test
  )
  bounds = collapse.collapse_round_bounds(K, y, eps=eps)
  d = np.asarray(budget.eigvals)
  order = np.argsort(-d)
  regs = np.asarray(budget.regs)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_round = np.where(np.isfinite(regs)[:, None], d[None] / (d[None] + regs[:, None]), 0.0)
  diag_b = np.cumprod(per_round, axis=0)[:, order]  # B_t, eigenvalues sorted
  diag_fixed = (d / (d + config.reg))[None, order] ** _rounds(steps)[:, None]
  norms = np.sum(np.asarray(budget.predictions) ** 2, axis=1) / len(y)
  series = {
    "test_mse/fixed_reg": _mse(fixed_test, problem.clean_test),
    "train_mse/fixed_reg": _mse(fixed_train, y),
    "test_mse/budget": _mse(budget.test_predictions, problem.clean_test),
    "reg/budget": regs,
    "norm2/budget": norms,
    "basis_above_1e-2/budget": (diag_b > 1e-2).sum(1).astype(float),
    "basis_above_1e-2/fixed_reg": (diag_fixed > 1e-2).sum(1).astype(float),
  }
  collapse_round = budget.collapse_round
  live = steps if collapse_round is None else collapse_round - 1
  fixed = series["test_mse/fixed_reg"]
  budget_mse = series["test_mse/budget"][: max(live, 1)]
  summary = {
    "collapse_round": collapse_round_entry(collapse_round),
    "eps": eps,
    "collapse_round_lower_bound": int(bounds.lower),
    "collapse_round_upper_bound": float(bounds.upper),
    "test_mse_round1": float(fixed[0]),
    "best_round_fixed_reg": int(np.argmin(fixed) + 1),
    "best_test_mse_fixed_reg": float(fixed.min()),
    "best_round_budget": int(np.argmin(budget_mse) + 1),
    "best_test_mse_budget": float(budget_mse.min()),
  }
  arrays = dict(
    eigvals=d,
    diag_b=diag_b,
    regs=regs,
    test_fixed=np.asarray(fixed_test),
    test_budget=np.asarray(budget.test_predictions),
    diag_fixed=diag_fixed,
    norms=norms,
    x_train=problem.x_train,
    y_train=y,
    x_test=problem.x_test,
    clean_test=problem.clean_test,
    collapse_sweep=_collapse_sweep(config, problem),
  )
  return Result(
    _rounds(steps),
    series,
    summary,
    arrays,
    ("eigvals", "diag_b", "regs", "test_fixed", "test_budget", "collapse_sweep"),
  )


# ----------------------------------------------------------------------------------------
# Borup & Andersen 2021.


def _borup(config):
  problem = _problem(config.dataset, config.seed)
  K, k_test, k_val, _ = _kernels(config, problem)
  y, steps, reg = problem.y_train, config.num_steps, config.reg
  classification = problem.labels_test is not None
  if config.dataset.name == "synthetic":  # the clean function is known at the training points
    reference, k_ref = problem.clean_train, None
  else:  # otherwise: held-out validation labels
    reference, k_ref = problem.y_val, k_val
  curves = {}
  for alpha in config.alphas:
    curves[alpha_key(alpha)] = kernel_distillation.krr_self_distillation(
      K, y, reg=reg, steps=steps, alpha=alpha, k_test=k_test
    )
  alphas_t, _ = kernel_distillation.stepwise_optimal_alphas(
    K, y, reference, reg=reg, steps=steps, k_test=k_ref
  )
  alphas_t = np.asarray(alphas_t)
  curves["stepwise optimal"] = kernel_distillation.krr_self_distillation_schedule(
    K, y, reg=reg, alphas=alphas_t, k_test=k_test
  )
  fixed_opt = kernel_distillation.optimal_alpha(K, y, reference, reg=reg, steps=steps, k_test=k_ref)
  curves["fixed optimal"] = kernel_distillation.krr_self_distillation(
    K, y, reg=reg, steps=steps, alpha=fixed_opt, k_test=k_test
  )
  series, limits = {}, {}
  for key, pred in curves.items():
    series[f"test_mse/{key}"] = _mse(pred, problem.clean_test)
    if classification:
      series[f"test_acc/{key}"] = _accuracy(pred, problem.labels_test)
  for alpha in config.alphas:
    if alpha > 0:
      limit = kernel_distillation.krr_self_distillation_limit(
        K, y, reg=reg, alpha=alpha, k_test=k_test
      )
      limits[alpha_key(alpha)] = float(_mse(np.asarray(limit)[None], problem.clean_test)[0])
  series["alpha/stepwise optimal"] = np.concatenate([[np.nan], alphas_t])

  summary = {
    "fixed_optimal_alpha": fixed_opt,
    "test_mse_round1": float(series[f"test_mse/{alpha_key(config.alphas[0])}"][0]),
  }
  for key in curves:
    name = key.replace(" ", "_").replace("=", "")
    summary[f"final_test_mse_{name}"] = float(series[f"test_mse/{key}"][-1])
    summary[f"best_test_mse_{name}"] = float(np.min(series[f"test_mse/{key}"]))
    if classification:
      summary[f"final_test_acc_{name}"] = float(series[f"test_acc/{key}"][-1])
  for key, value in limits.items():
    summary[f"limit_test_mse_{key.replace('=', '')}"] = value
  arrays = {"stepwise_alphas": alphas_t, **{f"test_{k}": np.asarray(v) for k, v in curves.items()}}
  return Result(_rounds(steps), series, summary, arrays, tuple(arrays))


# ----------------------------------------------------------------------------------------
# Borup & Andersen 2023.


def _gaussian_nll(mean, var, target):
  return np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * (target - mean) ** 2 / var, axis=-1)


def _pad(values, length):
  values = np.asarray(values, dtype=np.float64)
  return np.concatenate([values, np.full(length - len(values), np.nan)])


def _gp(config):
  # Regression: data-centric (several label weights) and distribution-centric.
  problem = _problem(config.dataset, config.seed)
  K, k_test, _, k = _kernels(config, problem)
  k_tt = k(problem.x_test, problem.x_test)
  noise, steps = config.noise, config.num_steps
  posteriors = {}
  for alpha in config.alphas:
    posteriors[f"data-centric {alpha_key(alpha)}"] = gp.gpr_data_centric(
      K, problem.y_train, noise=noise, steps=steps, alpha=alpha, k_test=k_test, k_test_test=k_tt
    )
  posteriors["distribution-centric"] = gp.gpr_distribution_centric(
    K, problem.y_train, noise=noise, steps=steps, k_test=k_test, k_test_test=k_tt
  )
  series = {}
  for key, post in posteriors.items():
    var = np.diagonal(np.asarray(post.cov), axis1=1, axis2=2)
    series[f"gpr_test_mse/{key}"] = _mse(post.mean, problem.clean_test)
    series[f"gpr_test_nll/{key}"] = _gaussian_nll(
      np.asarray(post.mean), var + noise, problem.clean_test
    )

  # Classification: data-centric, continuous Bernoulli likelihood, Laplace approximation.
  c = config.gpc
  cls = _problem(c.dataset, config.seed)
  kc = _kernel_fn(c.kernel, cls.x_train)
  Kc = kc(cls.x_train, cls.x_train)
  Kc = (Kc + Kc.T) / 2
  soft = {}
  for i, alpha in enumerate(c.alphas):
    start = time.time()
    soft[alpha_key(alpha)] = out = gpc.gpc_data_centric(
      Kc,
      cls.y_train,
      steps=c.num_steps,
      alpha=alpha,
      k_test=kc(cls.x_test, cls.x_train),
      k_test_diag=np.full(len(cls.x_test), c.kernel.scale),
    )
    mean = np.asarray(out.mean)
    series[f"gpc_test_acc/{alpha_key(alpha)}"] = ((mean > 0.5) == cls.labels_test).mean(1)
    series[f"gpc_test_brier/{alpha_key(alpha)}"] = ((mean - cls.y_test) ** 2).mean(1)
    series[f"gpc_target_spread/{alpha_key(alpha)}"] = np.abs(np.asarray(out.targets) - 0.5).mean(1)
    print(
      f"[theory/gp] GPC alpha={alpha:g} ({i + 1}/{len(c.alphas)}): {c.num_steps} rounds in "
      f"{time.time() - start:.1f}s",
      flush=True,
    )
  # Distribution-centric: round t conditions on the labels t times (covariance t K).
  out = gpc.gpc_distribution_centric(
    Kc,
    cls.y_train,
    steps=c.num_steps,
    k_test=kc(cls.x_test, cls.x_train),
    k_test_diag=np.full(len(cls.x_test), c.kernel.scale),
  )
  mean = np.asarray(out.mean)
  series["gpc_test_acc/distribution-centric"] = ((mean > 0.5) == cls.labels_test).mean(1)
  series["gpc_test_brier/distribution-centric"] = ((mean - cls.y_test) ** 2).mean(1)
  length = max(steps, c.num_steps)
  series = {key: _pad(v, length) for key, v in series.items()}

  summary = {}
  for key in posteriors:
    name = key.replace(" ", "_").replace("=", "")
    summary[f"gpr_final_test_mse_{name}"] = float(series[f"gpr_test_mse/{key}"][steps - 1])
    summary[f"gpr_best_round_{name}"] = int(np.nanargmin(series[f"gpr_test_mse/{key}"]) + 1)
  for key in soft:
    name = key.replace("=", "")
    summary[f"gpc_round1_test_acc_{name}"] = float(series[f"gpc_test_acc/{key}"][0])
    summary[f"gpc_final_test_acc_{name}"] = float(series[f"gpc_test_acc/{key}"][c.num_steps - 1])
    summary[f"gpc_final_test_brier_{name}"] = float(
      series[f"gpc_test_brier/{key}"][c.num_steps - 1]
    )
  for metric in ("acc", "brier"):
    summary[f"gpc_final_test_{metric}_distribution-centric"] = float(
      series[f"gpc_test_{metric}/distribution-centric"][c.num_steps - 1]
    )
  arrays = {f"gpr_mean_{k}": np.asarray(p.mean) for k, p in posteriors.items()}
  arrays.update({f"gpc_mean_{k}": np.asarray(o.mean) for k, o in soft.items()})
  saved = tuple(arrays)
  arrays.update(
    {
      f"gpr_sd_{k}": np.sqrt(np.diagonal(np.asarray(p.cov), axis1=1, axis2=2))
      for k, p in posteriors.items()
    }
  )
  arrays.update(x_train=problem.x_train, y_train=problem.y_train, x_test=problem.x_test)
  return Result(_rounds(length), series, summary, arrays, saved)


# ----------------------------------------------------------------------------------------
# Phuong & Lampert 2019: linear and deep linear distillation dynamics.


def _linear_kd(config):
  """Linear / deep linear students on a linear teacher's outputs: flows, limits, GD."""
  rng = np.random.default_rng(config.seed)
  n, d = config.dataset.n_train, config.dataset.dim
  x = rng.normal(size=(n, d)).astype(np.float32).astype(np.float64)
  teacher, w0 = rng.normal(size=d), config.init_scale * rng.normal(size=d)
  targets = x @ teacher
  times = np.linspace(0.0, config.horizon, config.num_steps + 1)[1:]
  flows = {"linear": ld.linear_student_flow(x, targets, w0, times)}
  flows["linear_sigmoid_ce"] = ld.linear_student_flow(
    x, 1.0 / (1.0 + np.exp(-targets)), w0, times, loss="sigmoid_ce"
  )
  for depth in config.depths:
    if depth > 1:
      layers = ld.balanced_init(w0, (config.width,) * (depth - 1))
      flows[f"depth{depth}"] = ld.deep_linear_flow(x, targets, layers, times)
  projection = np.linalg.pinv(x) @ x
  series = {f"distance/{k}": f.distance for k, f in flows.items()}
  series.update(
    {
      f"train_mse/{k}": np.mean((f.weights @ x.T - targets) ** 2, axis=1)
      for k, f in flows.items()
      if "sigmoid" not in k
    }
  )
  # Gradient descent with kdjax's own MLP / train step at several step sizes.
  errors = []
  for eta in config.learning_rates:
    k = round(config.horizon / eta)
    weights, biases = ld.gradient_descent(x, teacher, 0.0, w0, 0.0, learning_rate=eta, num_steps=k)
    flow = ld.linear_student_flow(
      np.hstack([x, np.ones((n, 1))]), targets, np.append(w0, 0.0), [k * eta]
    )
    errors.append(np.linalg.norm(np.append(weights[-1], biases[-1]) - flow.weights[0]))
  errors = np.array(errors)
  summary = {
    "gd_error_at_horizon": float(errors[-1]),
    "gd_error_order": float(np.log2(errors[-2] / errors[-1])) if len(errors) > 1 else float("nan"),
  }
  for key, f in flows.items():
    summary[f"final_distance_{key}"] = float(f.distance[-1])
    orth = f.limit - projection @ f.limit
    summary[f"limit_orthogonal_norm_{key}"] = float(np.linalg.norm(orth))
  summary["initial_orthogonal_norm"] = float(np.linalg.norm(w0 - projection @ w0))
  arrays = dict(
    times=times,
    gd_learning_rates=np.asarray(config.learning_rates, np.float64),
    gd_errors=errors,
    **{f"weights_{k}": f.weights for k, f in flows.items()},
    **{f"limit_{k}": f.limit for k, f in flows.items()},
  )
  return Result(np.arange(1, len(times) + 1), series, summary, arrays, tuple(arrays))


# ----------------------------------------------------------------------------------------
# Littwin et al. 2024: deep linear JEPA vs MAE.


def _jepa(config):
  lambdas = np.asarray(config.lambdas, np.float64)
  rhos = np.asarray(config.rhos, np.float64)
  series, arrays = {}, {"lambdas": lambdas, "rhos": rhos, "depths": np.asarray(config.depths)}
  critical = {}
  for objective in jepa.OBJECTIVES:
    critical[objective] = np.array(
      [
        jepa.critical_time(
          lambdas, rhos, depth=L, objective=objective, init_scale=config.init_scale
        )
        for L in config.depths
      ]
    )
    arrays[f"critical_{objective}"] = critical[objective]
    for depth, row in zip(config.depths, critical[objective]):
      # Each panel's own time grid: up to horizon x its slowest critical time.
      times = np.linspace(0.0, config.horizon * row.max(), config.num_steps)
      curve = jepa.feature_flow(
        lambdas, rhos, times, depth=depth, objective=objective, init_scale=config.init_scale
      )
      limit = jepa.fixed_point(rhos, depth=depth, objective=objective) ** depth
      arrays[f"{objective}_L{depth}"], arrays[f"times_{objective}_L{depth}"] = curve / limit, times
      for i in range(len(lambdas)):
        series[f"{objective}_L{depth}/feature{i}"] = curve[:, i] / limit[i]
  # Gradient descent on the actual networks (one depth), against the ODE.
  g = config.gd
  views = jepa.synthetic_views(lambdas, rhos, n=g.n, noise=g.noise, seed=config.seed)
  gd_times = g.learning_rate * np.arange(0, g.num_steps + 1, g.record_every)
  for objective in jepa.OBJECTIVES:
    out = jepa.gradient_descent(
      views,
      lambdas,
      rhos,
      depth=g.depth,
      objective=objective,
      init_scale=g.init_scale,
      learning_rate=g.learning_rate,
      num_steps=g.num_steps,
      record_every=g.record_every,
    )
    ode = jepa.feature_flow(
      lambdas, rhos, gd_times, depth=g.depth, objective=objective, init_scale=g.init_scale
    )
    limit = jepa.fixed_point(rhos, depth=g.depth, objective=objective) ** g.depth
    arrays[f"gd_{objective}"], arrays[f"gd_ode_{objective}"] = out / limit, ode / limit
  arrays["gd_times"] = gd_times
  summary = {}
  for objective, table in critical.items():
    for row, depth in zip(table, config.depths):
      summary[f"first_feature_{objective}_L{depth}"] = int(np.argmin(row))
  for objective in jepa.OBJECTIVES:
    summary[f"gd_max_abs_error_{objective}"] = float(
      np.max(np.abs(arrays[f"gd_{objective}"] - arrays[f"gd_ode_{objective}"]))
    )
  return Result(np.arange(1, len(times) + 1), series, summary, arrays, tuple(arrays))


EXPERIMENTS = {
  "mobahi": _mobahi,
  "borup": _borup,
  "gp": _gp,
  "linear_kd": _linear_kd,
  "jepa": _jepa,
}


def compute(config: Any) -> Result:
  """Runs the computation of ``config.method`` (see :data:`EXPERIMENTS`)."""
  if config.method not in EXPERIMENTS:
    raise ValueError(f"config.method must be one of {sorted(EXPERIMENTS)}, got {config.method!r}")
  return EXPERIMENTS[config.method](config)
