r"""The one learning-rate schedule factory of kdjax jobs (optax schedules from a config).

``make_schedule(config, num_steps)`` reads four keys of ``config`` (the optimizer part of a
job config): ``learning_rate`` (finite, > 0), ``schedule`` ('constant' or 'cosine'),
``warmup_steps`` (linear warmup from 0, 0 = none) and ``final_lr_fraction`` (the cosine
floor as a fraction of ``learning_rate``: 0 for the train job, 0.01 for KIP). The cosine
schedule after the warmup is (Loshchilov & Hutter (2017), "SGDR: stochastic gradient
descent with warm restarts")

.. math:: \eta_t = \eta_0\,\big(f + (1 - f)\,\tfrac12\,(1 + \cos(\pi t / T))\big),

with floor fraction :math:`f` and :math:`T` = ``num_steps`` (minus the warmup).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  import optax

SCHEDULES = ("constant", "cosine")


def make_schedule(
  config: Any, num_steps: int, *, name: str = "optimizer"
) -> optax.ScalarOrSchedule:
  """The learning rate of ``config`` over ``num_steps`` steps (a float when constant).

  Args:
    config: has ``learning_rate``, ``schedule``, ``warmup_steps``, ``final_lr_fraction``.
    num_steps: the number of optimisation steps of the job.
    name: the config path of ``config``, quoted in errors (e.g. ``'kip'``).

  Raises:
    ValueError: a learning rate that is not finite and > 0, an unknown schedule, a
      negative warmup or a floor fraction outside [0, 1].
  """
  lr = float(config.learning_rate)
  if not (math.isfinite(lr) and lr > 0):
    raise ValueError(f"config.{name}.learning_rate must be finite and > 0, got {lr}")
  warmup, floor = int(config.warmup_steps), float(config.final_lr_fraction)
  if warmup < 0:
    raise ValueError(f"config.{name}.warmup_steps must be >= 0, got {warmup}")
  if not 0.0 <= floor <= 1.0:
    raise ValueError(f"config.{name}.final_lr_fraction must be in [0, 1], got {floor}")
  import optax  # here, not at import: `import kdjax.jobs` loads no optax

  if config.schedule == "cosine":
    if warmup:
      return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(num_steps, warmup + 1), end_value=lr * floor
      )
    return optax.cosine_decay_schedule(lr, num_steps, alpha=floor)
  if config.schedule == "constant":
    if warmup:
      return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
      )
    return lr
  raise ValueError(f"config.{name}.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
