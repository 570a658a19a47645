"""``run(config, workdir)`` for ``job='theory'``: redraws the self-distillation papers' figures.

``config.method`` picks one of

* ``mobahi``: Mobahi, Farajtabar & Bartlett (2020), "Self-Distillation Amplifies
  Regularization in Hilbert Space": the diagonal ``B_t`` sparsifying over rounds, the
  collapse of the fit-error-budget rounds, test error against rounds, and the numerical
  collapse round between its lower and upper bounds (:mod:`kdjax.theory.collapse`);
  ``collapse_round`` is ``null`` in ``summary.json`` when the rounds did not collapse
  within ``num_steps``.
* ``borup``: Borup & Andersen (2021), "Even your Teacher Needs Guidance": test error
  against rounds for several label weights ``alpha`` and for the optimal weights.
* ``gp``: Borup & Andersen (2023), "Self-Distillation for Gaussian Process Regression and
  Classification": data- and distribution-centric GPR and continuous-Bernoulli GPC.
* ``linear_kd``: Phuong & Lampert (2019), "Towards Understanding Knowledge Distillation":
  linear and deep linear students' gradient flow to their limit, and gradient descent
  with kdjax's MLP converging to it at order 1 in the step size.
* ``jepa``: Littwin et al. (2024), "How JEPA Avoids Noisy Features": feature-wise learning
  curves of deep linear JEPA and MAE and critical time against depth.

The job is written on :mod:`kdjax.jobs`: :func:`validate` checks every key (pure Python,
before anything is written), the workdir is opened and locked, the
computation (:func:`kdjax.theory.results.compute`, float64) runs, every step's metrics go
through the metrics writer (``metrics.jsonl`` + TensorBoard + progress line), the figures
(:func:`kdjax.theory_plots.figures`) through the one figure saver, and ``arrays.npz`` holds
the arrays. Everything is deterministic: running again on the same workdir recomputes the
results and rewrites the metrics.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from kdjax import jobs, theory_plots as plots
from kdjax.jobs import config as config_lib
from kdjax.theory import results

DATASETS = ("synthetic", "diabetes", "digits", "moons")

# Each method's numeric keys: (dotted key, kind, bounds); a tuple key checks every entry.
_POSITIVE, _NONNEGATIVE, _UNIT = {"above": 0}, {"minimum": 0}, {"minimum": 0, "maximum": 1}
_KERNEL = [("kernel.lengthscale_factor", float, _POSITIVE), ("kernel.scale", float, _POSITIVE)]


def _dataset(prefix: str) -> list:
  return [
    (f"{prefix}.n_train", int, 2),
    (f"{prefix}.n_val", int, 0),
    (f"{prefix}.n_test", int, 1),
    (f"{prefix}.noise", float, _NONNEGATIVE),
    (f"{prefix}.label_noise", float, _UNIT),
  ]


_KEYS = {
  "mobahi": _dataset("dataset")
  + _KERNEL
  + [
    ("reg", float, _POSITIVE),
    ("eps_fraction", float, _POSITIVE),
    ("bounds.eps_fractions", tuple, _POSITIVE),
    ("bounds.lengthscale_factors", tuple, _POSITIVE),
    ("bounds.max_extra_rounds", int, 0),
  ],
  "borup": _dataset("dataset") + _KERNEL + [("reg", float, _POSITIVE), ("alphas", tuple, _UNIT)],
  "gp": _dataset("dataset")
  + _KERNEL
  + [("noise", float, _POSITIVE), ("alphas", tuple, _UNIT)]
  + _dataset("gpc.dataset")
  + [
    ("gpc.kernel.lengthscale_factor", float, _POSITIVE),
    ("gpc.kernel.scale", float, _POSITIVE),
    ("gpc.num_steps", int, 1),
    ("gpc.alphas", tuple, _UNIT),
  ],
  "linear_kd": [
    ("dataset.n_train", int, 1),
    ("dataset.dim", int, 1),
    ("init_scale", float, _POSITIVE),
    ("depths", tuple, 1),
    ("width", int, 1),
    ("horizon", float, _POSITIVE),
    ("learning_rates", tuple, _POSITIVE),
  ],
  "jepa": [
    ("lambdas", tuple, _POSITIVE),
    ("rhos", tuple, _POSITIVE),
    ("init_scale", float, _POSITIVE),
    ("depths", tuple, 1),
    ("horizon", float, _POSITIVE),
    ("gd.depth", int, 1),
    ("gd.init_scale", float, _POSITIVE),
    ("gd.learning_rate", float, _POSITIVE),
    ("gd.num_steps", int, 1),
    ("gd.record_every", int, 1),
    ("gd.n", int, 1),
    ("gd.noise", float, _NONNEGATIVE),
  ],
}


def _get(config: Any, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    if part not in value:
      raise ValueError(f"config.{dotted} is missing")
    value = value[part]
  return value


def _check(value: Any, path: str, kind: Any, bounds: Any) -> None:
  if kind is int:
    config_lib.check_int(value, path, minimum=bounds)
  elif kind is float:
    config_lib.check_number(value, path, **bounds)
  else:
    if not isinstance(value, (tuple, list)) or not value:
      raise ValueError(f"{path} must be a non-empty tuple, got {value!r}")
    for i, item in enumerate(value):
      _check(item, f"{path}[{i}]", int if isinstance(bounds, int) else float, bounds)


def validate(config: Any) -> None:
  """Checks every key ``config.method`` reads (pure Python, before anything is written);
  raises a ValueError naming the key and the valid range."""
  config_lib.check_migrated(config, "the config")
  name = config_lib.check_choice(config.method, "config.method", sorted(results.EXPERIMENTS))
  config_lib.check_int(config.seed, "config.seed", minimum=0)
  config_lib.check_int(config.num_steps, "config.num_steps")
  for prefix in ("dataset", "gpc.dataset"):
    if name in ("mobahi", "borup", "gp") and (prefix == "dataset" or name == "gp"):
      config_lib.check_choice(_get(config, f"{prefix}.name"), f"config.{prefix}.name", DATASETS)
  for key, kind, bounds in _KEYS[name]:
    _check(_get(config, key), f"config.{key}", kind, bounds)
  if name == "borup" and config.dataset.name != "synthetic":
    config_lib.check_int(config.dataset.n_val, "config.dataset.n_val (real data)", minimum=1)


def run(config: Any, workdir: str) -> dict:
  """Runs the theory experiment ``config.method`` into ``workdir``; returns its summary
  (also ``summary.json``)."""
  validate(config)
  name = config.method
  with jobs.workdir.open_workdir(workdir, config) as wd:
    start = time.time()
    with jax.enable_x64(True):
      result = results.compute(config)
    writer = jobs.metrics.MetricsWriter(  # rounds computed beforehand: no rate
      wd.path, resume_step=None, total_steps=None, name=f"theory/{name}", rate=False
    )
    for i, step in enumerate(result.steps):
      writer.write(
        int(step), **{k: float(v[i]) for k, v in result.series.items() if np.isfinite(v[i])}
      )
    writer.close()
    for file_name, fig in plots.figures(config, result).items():
      jobs.figures.save_figure(fig, os.path.join(wd.path, file_name))
    jobs.workdir.save_npz(
      os.path.join(wd.path, "arrays.npz"), **{k: result.arrays[k] for k in result.saved}
    )
    jobs.loop.say(f"[theory/{name}] done in {time.time() - start:.1f}s")
    return jobs.loop.write_summary(wd.path, result.summary)
