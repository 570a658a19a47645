"""Dataset distillation with kernels: KIP (Nguyen, Chen & Lee, 2021) and its runner.

``kdjax.distill.kip`` holds the algorithm (loss, sharded step, Label Solve);
``kdjax.distill.runner.run(config, workdir)`` is the ``job='kip'`` entry point
(its base config is ``experiments.common.kip_base``).
"""
from kdjax.distill.kip import (KipState, check_finite, init_support, kip_loss, krr_accuracy,
                               label_solve, make_kip_step)

__all__ = ["KipState", "check_finite", "init_support", "kip_loss", "krr_accuracy",
           "label_solve", "make_kip_step"]
