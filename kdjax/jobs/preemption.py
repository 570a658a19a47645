"""Preemption of a training loop: after SIGTERM, save the checkpoint and exit cleanly.

A job enters ``checkpoint.PreemptionFlag()`` (SIGTERM sets it) around its work; after each
step its loop asks :func:`stop_requested` and, when True, saves the checkpoint of that
step and raises :class:`Preempted`. Re-running the same command resumes from it; since a
job's batches and random keys depend only on ``(seed, step)``, the resumed run ends with
the result of an uninterrupted one.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from kdjax.jobs.checkpoint import PreemptionFlag


class Preempted(SystemExit):
  """Raised after SIGTERM once the checkpoint is saved; re-run the same command to resume."""


def stop_requested(flag: PreemptionFlag, step: int, every: int) -> bool:
  """Whether the loop should save and stop after ``step``.

  With one process this is ``flag.is_set()``. With several, every process must stop at
  the same step (the checkpoint save is collective), so the flags are gathered at the
  steps that are multiples of ``every`` (a step every process reaches) and any set flag
  stops all of them.
  """
  if jax.process_count() == 1:
    return flag.is_set()
  if step % every:
    return False
  flags = multihost_utils.process_allgather(np.asarray(flag.is_set()))
  return bool(np.any(flags))
