"""Dataset distillation: KIP, RFAD, FRePo, closed-form ridge distillation, and their jobs.

``kdjax.distill.evaluation`` is the finite-network protocol every method is judged by;
``kdjax.distill.closed_form`` the one-point-per-class ridge distillation (Chen, Huang &
Weng, 2024); ``kdjax.distill.rfad`` RFAD (Loo et al., 2022) and ``kdjax.distill.frepo``
FRePo (Zhou et al., 2022), whose job (``job='distill'``, ``experiments/rfad_*.py``,
``experiments/frepo_*.py``) is ``kdjax.distill.job.run``; ``kdjax.distill.kip`` holds the
KIP algorithm (Nguyen, Chen & Lee, 2021: loss, sharded step, Label Solve);
``kdjax.distill.support`` is the support problem and its training (on ``kdjax.jobs.loop``:
metrics, checkpoints, resume, SIGTERM) both jobs run; ``kdjax.distill.outputs`` writes the
support-set files they leave;
``kdjax.distill.runner.run(config, workdir)`` is the ``job='kip'`` entry point
(its base config is ``experiments.distill_base.kip_base``).
"""

from kdjax.distill.kip import (
  KipState,
  init_support,
  kip_loss,
  krr_accuracy,
  label_solve,
  make_kip_step,
)

__all__ = [
  "KipState",
  "init_support",
  "kip_loss",
  "krr_accuracy",
  "label_solve",
  "make_kip_step",
]
