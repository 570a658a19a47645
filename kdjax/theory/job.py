"""``run(config, workdir)`` for ``job='theory'``: redraws the self-distillation papers' figures.

``config.experiment`` picks one of

* ``mobahi``: Mobahi, Farajtabar & Bartlett (2020), "Self-Distillation Amplifies
  Regularization in Hilbert Space": the diagonal ``B_t`` sparsifying over rounds, the
  collapse of the fit-error-budget rounds, test error against rounds, and the numerical
  collapse round between its lower and upper bounds (:mod:`kdjax.theory.collapse`).
* ``borup``: Borup & Andersen (2021), "Even your Teacher Needs Guidance": test error
  against rounds for several label weights ``alpha`` and for the optimal weights.
* ``gp``: Borup & Andersen (2023), "Self-Distillation for Gaussian Process Regression and
  Classification": data- and distribution-centric GPR and continuous-Bernoulli GPC.
* ``linear_kd``: Phuong & Lampert (2019), "Towards Understanding Knowledge Distillation":
  linear and deep linear students' gradient flow to their limit, and gradient descent
  with kdjax's MLP converging to it at order 1 in the step size.
* ``jepa``: Littwin et al. (2024), "How JEPA Avoids Noisy Features": feature-wise learning
  curves of deep linear JEPA and MAE and critical time against depth.

The job is written on :mod:`kdjax.jobs`: the workdir is opened and locked, the
computation (:func:`kdjax.theory.results.compute`, float64) runs, every step's metrics go
through the metrics writer (``metrics.jsonl`` + TensorBoard + progress line), the figures
(:func:`kdjax.theory.plots.figures`) through the one figure saver, and ``arrays.npz`` holds
the arrays. Everything is deterministic: running again on the same workdir recomputes the
results and rewrites the metrics.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from kdjax import jobs
from kdjax.theory import plots, results


def validate(config: Any) -> None:
  """Checks ``config.experiment`` (the experiments check their own keys as they compute)."""
  if config.experiment not in results.EXPERIMENTS:
    raise ValueError(
      f"config.experiment must be one of {sorted(results.EXPERIMENTS)}, got {config.experiment!r}"
    )


def run(config: Any, workdir: str) -> dict:
  """Runs the theory experiment ``config.experiment`` into ``workdir``; returns its summary
  (also ``summary.json``)."""
  validate(config)
  name = config.experiment
  with jobs.workdir.open_workdir(workdir, config) as wd:
    start = time.time()
    with jax.enable_x64(True):
      result = results.compute(config)
    writer = jobs.metrics.MetricsWriter(
      wd.path, resume_step=None, total_steps=None, name=f"theory/{name}"
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
