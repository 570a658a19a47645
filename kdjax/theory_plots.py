"""The figures of the theory experiments, drawn from a :class:`kdjax.theory.results.Result`.

``figures(config, result) -> {file name: matplotlib figure}``; the job saves each with
``kdjax.jobs.figures.save_figure``. Nothing here computes a result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdjax.jobs.figures import pyplot
from kdjax.theory.results import Result, alpha_key

__all__ = ["figures"]


def _axes(ncols, width=5.2, height=3.8):
  plt = pyplot()
  fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
  return plt, fig, axes[0]


def _done(fig):
  fig.tight_layout()
  return fig


def _shown_rounds(last):
  return sorted(set(np.unique(np.geomspace(1, max(last, 1), 6).astype(int))))


# ----------------------------------------------------------------------------------------


def _mobahi(config, r: Result):
  a, steps = r.arrays, config.num_steps
  d, diag_b, diag_fixed = a["eigvals"], a["diag_b"], a["diag_fixed"]
  collapse = r.summary["collapse_round"]  # None: no collapse within num_steps
  live = steps if collapse is None else collapse - 1
  rounds, out = r.steps, {}

  plt, fig, (ax1, ax2) = _axes(2)
  shown = _shown_rounds(live)
  cmap = plt.get_cmap("viridis")
  for i, t in enumerate(shown):
    ax1.semilogy(
      np.arange(1, len(d) + 1),
      np.maximum(diag_b[t - 1], 1e-30),
      color=cmap(i / max(len(shown) - 1, 1)),
      label=f"round {t}",
    )
  ax1.set(
    title=f"Budget rounds: diagonal of $B_t$ (eps={config.eps_fraction:g}·mean $y^2$)",
    xlabel="eigen-direction (largest eigenvalue first)",
    ylabel="$B_t[k,k]$",
    ylim=(1e-8, 2),
  )
  ax1.legend(fontsize=8)
  for i, t in enumerate(sorted(set(np.geomspace(1, steps, 6).astype(int)))):
    ax2.semilogy(
      np.arange(1, len(d) + 1),
      np.maximum(diag_fixed[t - 1], 1e-30),
      color=cmap(i / 5),
      label=f"round {t}",
    )
  ax2.set(
    title=f"Fixed reg={config.reg:g}: $(d/(d+reg))^t$",
    xlabel="eigen-direction (largest eigenvalue first)",
    ylim=(1e-8, 2),
  )
  ax2.legend(fontsize=8)
  out["mobahi_spectrum.png"] = _done(fig)

  plt, fig, (ax1, ax2, ax3) = _axes(3, width=4.6)
  ax1.plot(rounds, a["norms"], marker=".", label=r"$\|y_t\|^2/n$")
  ax1.axhline(r.summary["eps"], color="k", ls="--", lw=1, label="budget eps")
  if collapse is not None:
    ax1.axvline(collapse, color="r", ls=":", label=f"collapse (round {collapse})")
  ax1.set(title="Budget rounds: collapse", xlabel="round", yscale="log")
  ax1.legend(fontsize=8)
  ax2.semilogy(rounds[:live], a["regs"][:live], marker=".")
  ax2.set(title="Budget rounds: regulariser $c_t$", xlabel="round")
  ax3.plot(rounds, r.series["test_mse/budget"], marker=".", label="budget eps")
  ax3.plot(rounds, r.series["test_mse/fixed_reg"], marker=".", label=f"fixed reg={config.reg:g}")
  ax3.set(title="Test MSE (clean function)", xlabel="round", yscale="log")
  ax3.legend(fontsize=8)
  out["mobahi_collapse.png"] = _done(fig)

  if a["x_train"].shape[1] == 1:
    plt, fig, (ax,) = _axes(1, width=7)
    ax.plot(a["x_test"][:, 0], a["clean_test"], "k--", lw=1, label="clean function")
    ax.plot(a["x_train"][:, 0], a["y_train"], "k.", ms=4, label="training labels")
    for i, t in enumerate(shown):
      ax.plot(
        a["x_test"][:, 0],
        a["test_budget"][t - 1],
        color=cmap(i / max(len(shown) - 1, 1)),
        label=f"round {t}",
      )
    ax.set(title="Budget rounds: fitted function", xlabel="x")
    ax.legend(fontsize=8, ncol=2)
    out["mobahi_fits.png"] = _done(fig)

  sweep = a["collapse_sweep"]  # rows: factor, fraction, found, lower, upper, kappa
  factors = list(dict.fromkeys(sweep[:, 0]))
  plt, fig, axes = _axes(len(factors), width=4.2, height=3.8)
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top  # after pyplot()

  for ax, factor in zip(axes, factors):
    rows = sweep[sweep[:, 0] == factor]
    ax.fill_between(
      rows[:, 1], rows[:, 3], rows[:, 4], color="C0", alpha=0.15, label="[lower, upper] bound"
    )
    ax.plot(rows[:, 1], rows[:, 3], "C0--", lw=1, label=r"lower $\lceil r_0 \rceil$")
    ax.plot(rows[:, 1], rows[:, 4], "C0:", lw=1.5, label="upper (iterated)")
    ax.plot(rows[:, 1], rows[:, 2], "ko-", ms=4, label="numerical collapse round")
    ax.set(
      xscale="log",
      yscale="log",
      xlabel=r"budget eps / mean $y^2$",
      title=f"lengthscale {factor:g}·median, $\\kappa$={np.nanmax(rows[:, 5]):.1e}",
      xlim=(sweep[:, 1].min() / 1.2, sweep[:, 1].max() * 1.2),
    )
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
  axes[0].set(ylabel="collapse round")
  axes[0].legend(fontsize=8)
  out["mobahi_bounds.png"] = _done(fig)
  return out


def _borup(config, r: Result):
  steps, rounds = config.num_steps, r.steps
  classification = any(k.startswith("test_acc/") for k in r.series)
  fixed_opt = r.summary["fixed_optimal_alpha"]
  how = (
    "clean function at training points"
    if config.dataset.name == "synthetic"
    else "validation labels"
  )
  curves = [alpha_key(a) for a in config.alphas] + ["stepwise optimal", "fixed optimal"]
  plt, fig, axes = _axes(3 if classification else 2, width=4.8, height=4.8)
  cmap = plt.get_cmap("viridis")
  for i, key in enumerate(curves):
    style = (
      dict(color=cmap(i / max(len(config.alphas) - 1, 1)))
      if key.startswith("alpha")
      else dict(color="r" if key.startswith("stepwise") else "m", ls="--", lw=2)
    )
    label = (
      f"best fixed alpha={fixed_opt:.3f} (for round {steps})" if key == "fixed optimal" else key
    )
    axes[0].plot(rounds, r.series[f"test_mse/{key}"], label=label, **style)
    if classification:
      axes[1].plot(rounds, r.series[f"test_acc/{key}"], label=label, **style)
  axes[0].set(
    title=f"{config.dataset.name}: test MSE (reg={config.reg:g})",
    xlabel="round",
    xscale="log",
    yscale="log",
  )
  axes[0].legend(
    fontsize=7,
    ncol=2,
    loc="upper center",
    bbox_to_anchor=(0.5, -0.15),
    title="label weight alpha",
    title_fontsize=7,
  )
  if classification:
    axes[1].set(title="test accuracy", xlabel="round", xscale="log")
  axes[-1].plot(rounds[1:], r.arrays["stepwise_alphas"], "r.-")
  axes[-1].set(title=f"stepwise optimal alpha\n(vs {how})", xlabel="round", xscale="log")
  return {"borup_test_error.png": _done(fig)}


def _gp(config, r: Result):
  a, steps, c = r.arrays, config.num_steps, config.gpc
  posteriors = [f"data-centric {alpha_key(x)}" for x in config.alphas] + ["distribution-centric"]
  plt, fig, axes = _axes(3, width=4.6)
  cmap = plt.get_cmap("viridis")
  rounds = np.arange(1, steps + 1)
  for i, key in enumerate(posteriors):
    style = (
      dict(color="r", ls="--", lw=2)
      if key.startswith("distribution")
      else dict(color=cmap(i / max(len(config.alphas) - 1, 1)))
    )
    axes[0].plot(rounds, r.series[f"gpr_test_mse/{key}"][:steps], label=key, **style)
    axes[1].plot(rounds, r.series[f"gpr_test_nll/{key}"][:steps], label=key, **style)
  axes[0].set(
    title=f"GPR test MSE (noise var {config.noise:g})", xlabel="round", xscale="log", yscale="log"
  )
  axes[1].set(title="GPR test NLL (clean targets)", xlabel="round", xscale="log")
  axes[0].legend(fontsize=7)
  x = a["x_test"][:, 0]
  axes[2].plot(a["x_train"][:, 0], a["y_train"], "k.", ms=4, label="labels")
  for key, color in (("data-centric alpha=0", "C0"), ("distribution-centric", "C3")):
    if key not in posteriors:
      continue
    for t, ls in ((0, ":"), (steps - 1, "-")):
      mean, sd = a[f"gpr_mean_{key}"][t], a[f"gpr_sd_{key}"][t]
      axes[2].plot(x, mean, color=color, ls=ls, label=f"{key}, round {t + 1}")
      axes[2].fill_between(x, mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.12)
  axes[2].set(title="GPR posterior mean ± 2 sd", xlabel="x")
  axes[2].legend(fontsize=7)
  out = {"gp_regression.png": _done(fig)}

  plt, fig, axes = _axes(3, width=4.6)
  gpc_rounds = np.arange(1, c.num_steps + 1)
  for i, alpha in enumerate(c.alphas):
    key, color = alpha_key(alpha), cmap(i / max(len(c.alphas) - 1, 1))
    for ax, metric in zip(axes, ("gpc_test_acc", "gpc_test_brier", "gpc_target_spread")):
      ax.plot(
        gpc_rounds, r.series[f"{metric}/{key}"][: c.num_steps], marker=".", color=color, label=key
      )
  for ax, metric in zip(axes, ("gpc_test_acc", "gpc_test_brier")):
    ax.plot(
      gpc_rounds,
      r.series[f"{metric}/distribution-centric"][: c.num_steps],
      "r--",
      marker=".",
      label="distribution-centric (covariance t K)",
    )
  axes[0].set(
    title=f"CB-GPC ({c.dataset.name}, {c.dataset.label_noise:.0%} flipped): test accuracy",
    xlabel="round",
  )
  axes[1].set(title="test Brier score of E[y]", xlabel="round")
  axes[2].set(title="mean |training target - 1/2|", xlabel="round")
  axes[0].legend(fontsize=7, title="label weight", title_fontsize=7)
  out["gp_classification.png"] = _done(fig)
  return out


def _linear_kd(config, r: Result):
  a = r.arrays
  keys = [k[len("weights_") :] for k in a if k.startswith("weights_")]
  plt, fig, (ax1, ax2, ax3) = _axes(3, width=4.6)
  for i, key in enumerate(keys):
    ax1.semilogy(
      a["times"], np.maximum(r.series[f"distance/{key}"], 1e-16), color=f"C{i}", label=key
    )
    if f"train_mse/{key}" in r.series:
      ax2.semilogy(
        a["times"], np.maximum(r.series[f"train_mse/{key}"], 1e-16), color=f"C{i}", label=key
      )
  ax1.set(title=r"distance to the limit $\|w(t) - w_\infty\|$", xlabel="time (lr x steps)")
  ax1.legend(fontsize=8)
  ax2.set(title="train MSE to the teacher's outputs", xlabel="time (lr x steps)")
  ax3.loglog(a["gd_learning_rates"], a["gd_errors"], "ko-", label="GD (kdjax MLP) vs flow")
  ax3.loglog(
    a["gd_learning_rates"],
    a["gd_errors"][-1] * a["gd_learning_rates"] / a["gd_learning_rates"][-1],
    "k:",
    label="slope 1",
  )
  ax3.set(title=f"GD error at t={config.horizon:g}", xlabel="learning rate")
  ax3.legend(fontsize=8)
  return {"linear_kd.png": _done(fig)}


def _jepa(config, r: Result):
  a = r.arrays
  depths, k = list(config.depths), len(a["lambdas"])
  shown = [L for L in depths if L in (1, 2) or L == depths[-1]]
  fig, axes = pyplot().subplots(2, len(shown), figsize=(4.2 * len(shown), 7), squeeze=False)
  labels = [f"λ={lam:g}, ρ={rho:g}" for lam, rho in zip(a["lambdas"], a["rhos"])]
  for row, objective in enumerate(("jepa", "mae")):
    for ax, depth in zip(axes[row], shown):
      curves, times = a[f"{objective}_L{depth}"], a[f"times_{objective}_L{depth}"]
      scale = a[f"critical_{objective}"][depths.index(depth), 0]
      for i in range(k):
        ax.plot(times / scale, curves[:, i], color=f"C{i}", label=labels[i])
      ax.axvline(1.0, color="k", lw=0.6, ls=":")
      ax.set(
        title=f"{objective.upper()}, encoder depth L={depth}",
        ylim=(-0.02, 1.05),
        xlabel=f"time / critical time of feature 0 ({scale:.3g})",
        ylabel=r"$\bar w_i(t) / \bar w_i(\infty)$" if depth == shown[0] else "",
      )
  axes[0][0].legend(fontsize=8)
  out = {"jepa_feature_curves.png": _done(fig)}

  plt, fig, (ax1, ax2, ax3) = _axes(3, width=4.6)
  for i in range(k):
    ax1.semilogy(depths, a["critical_jepa"][:, i], "o-", color=f"C{i}", label=f"JEPA {labels[i]}")
    ax1.semilogy(depths, a["critical_mae"][:, i], "s--", color=f"C{i}", label=f"MAE {labels[i]}")
    for objective, style in (("jepa", "o-"), ("mae", "s--")):
      table = a[f"critical_{objective}"]
      ax2.plot(depths, table[:, i] / table[:, 0], style, color=f"C{i}")
  ax1.set(
    title=f"critical time (half the limit), init {config.init_scale:g}", xlabel="encoder depth L"
  )
  ax1.legend(fontsize=7)
  ax2.axhline(1.0, color="k", lw=0.8)
  ax2.set(
    title="critical time / feature 0's\n(solid JEPA, dashed MAE; < 1: learned first)",
    xlabel="encoder depth L",
  )
  g = config.gd
  for objective, marker in (("jepa", "o"), ("mae", "s")):
    for i in range(k):
      ax3.plot(a["gd_times"], a[f"gd_ode_{objective}"][:, i], color=f"C{i}", lw=1)
      ax3.plot(a["gd_times"], a[f"gd_{objective}"][:, i], marker, color=f"C{i}", ms=3, ls="")
  ax3.set(
    title=f"networks (GD, lr {g.learning_rate:g}, L={g.depth}) vs ODE (lines)",
    xlabel="time (lr x steps)",
    ylabel="encoder weight / its limit",
  )
  out["jepa_critical_times.png"] = _done(fig)
  return out


_FIGURES = {"mobahi": _mobahi, "borup": _borup, "gp": _gp, "linear_kd": _linear_kd, "jepa": _jepa}


def figures(config: Any, result: Result) -> dict:
  """``{png file name: figure}`` of ``config.method``."""
  return _FIGURES[config.method](config, result)
