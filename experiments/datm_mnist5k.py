r"""DATM (Guo et al., 2024, "Towards Lossless Dataset Distillation via Difficulty-Aligned
Trajectory Matching") on the embedded mnist5k digits (``kdjax.distill.mtt``).

``python -m launch.main --config=experiments/datm_mnist5k.py:10 --workdir=runs/datm_mnist5k``

``arg`` = ``images_per_class[,runlocal]`` (default 10). MTT (``experiments/mtt_mnist5k.py``,
the same expert buffer protocol: ``--config.datm.buffer_dir=DIR`` may point at an mtt
run's ``WORKDIR/experts``) with DATM's start window growing over the run
(``experiments.mtt_mnist5k.WINDOWS``: early epochs at 1/class, later ones at 50) and soft
labels: learned logits initialised from an expert's logits on correctly classified
initial images, judged by finite networks trained on their softmax with the soft
cross-entropy.
"""

from experiments import common
from experiments.mtt_mnist5k import mtt_base, runlocal, window_sweep
from experiments.rfad_mnist5k import ARG_HELP


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = common.parse_arg(arg, positional=("per_class",), help=ARG_HELP, per_class=10, runlocal=False)
  c = mtt_base("datm", a.per_class)
  return runlocal(c) if a.runlocal else c


def sweep(arg=None):
  """Images per class 1/10/50 (with their start windows) x seeds 0/1/2."""
  return window_sweep("datm")
