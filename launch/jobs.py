"""The job registry: a config's ``job`` name -> the job module that does it.

A job module has ``validate(config)`` (checks every key it reads, before any work; raises
ValueError naming the key) and ``run(config, workdir) -> summary`` (a flat dict, also
written to ``WORKDIR/summary.json`` by :func:`kdjax.jobs.loop.write_summary`), written on
:mod:`kdjax.jobs` (its steps on :func:`kdjax.jobs.loop.run_steps`). A new job is such a
module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from kdjax import theory_job
from kdjax.diffusion import job as diffusion_job
from kdjax.distill import job as distill_job, runner as kip_runner
from kdjax.train import distillspec, lm_job, train_job

Job = Callable[[Any, str], dict]

JOBS: dict[str, ModuleType] = {
  "train": train_job,  # supervised / KD / born-again / self-distillation
  "kip": kip_runner,  # KIP dataset distillation
  "distill": distill_job,  # RFAD / FRePo dataset distillation + finite-network evaluation
  "theory": theory_job,  # self-distillation theory reproductions
  "lm": lm_job,  # LM distillation: token-level, sequence-level and on-policy (GKD) KD
  "distillspec": distillspec,  # DistillSpec drafts, judged by speculative decoding
  "diffusion": diffusion_job,  # few-step students of a flow teacher (progressive, CD, DMD, ...)
}


def module(config: Any) -> ModuleType:
  """Returns the job module (``validate``, ``run``) of ``config.job``.

  Raises:
    ValueError: the config has no ``job`` or names one that is not registered; the
      message lists the valid ones.
  """
  job = config.job if "job" in config else None
  if job not in JOBS:
    raise ValueError(f"config.job must be one of {sorted(JOBS)}, got {job!r}")
  return JOBS[job]


def runner(config: Any) -> Job:
  """Returns the ``run(config, workdir) -> summary dict`` function of ``config.job``
  (ValueError as :func:`module`)."""
  return module(config).run
