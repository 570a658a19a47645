"""The job registry: a config's ``job`` name -> the ``run(config, workdir) -> summary`` that
does it.

A new job is a module with ``run(config, workdir)`` written on :mod:`kdjax.jobs`, and one
line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdjax.distill import job as distill_job, runner as kip_runner
from kdjax.theory import experiments as theory_experiments
from kdjax.train import distillspec, lm_job, loop as train_loop

Job = Callable[[Any, str], dict]

JOBS: dict[str, Job] = {
  "train": train_loop.run,  # supervised / KD / born-again / self-distillation
  "kip": kip_runner.run,  # KIP dataset distillation
  "distill": distill_job.run,  # RFAD dataset distillation + finite-network evaluation
  "theory": theory_experiments.run,  # self-distillation theory reproductions
  "lm": lm_job.run,  # LM distillation: token-level, sequence-level and on-policy (GKD) KD
  "distillspec": distillspec.run,  # DistillSpec drafts, judged by speculative decoding
}


def runner(config: Any) -> Job:
  """Returns the ``run(config, workdir) -> summary dict`` function of ``config.job``.

  Raises:
    ValueError: the config has no ``job`` or names one that is not registered; the
      message lists the valid ones.
  """
  job = config.job if "job" in config else None
  if job not in JOBS:
    raise ValueError(f"config.job must be one of {sorted(JOBS)}, got {job!r}")
  return JOBS[job]
