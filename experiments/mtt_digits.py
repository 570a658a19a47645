r"""MTT (trajectory matching, ``kdjax.distill.mtt``) on scikit-learn's embedded 8x8 digits
(1,437 train / 360 test).

``python -m launch.main --config=experiments/mtt_digits.py:10 --workdir=runs/mtt_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``mtt_mnist5k.py`` with 2-block ConvNets
(experts and finite networks) and shifts <= 1 px. ``sweep()``: mtt_mnist5k's sizes and
seeds, with digits' buffer (20 epochs) and student settings.
"""

from experiments import common
from experiments.mtt_mnist5k import digits, mtt_base, runlocal, window_sweep
from experiments.rfad_mnist5k import ARG_HELP


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = common.parse_arg(arg, positional=("per_class",), help=ARG_HELP, per_class=10, runlocal=False)
  c = digits(mtt_base("mtt", a.per_class, "digits"))
  return runlocal(c) if a.runlocal else c


def sweep(arg=None):
  """Images per class 1/10/50 (with their start windows) x seeds 0/1/2."""
  return window_sweep("mtt", "digits")
