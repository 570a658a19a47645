r"""DC (gradient matching) on scikit-learn's
embedded 8x8 digits (1,437 train / 360 test).

``python -m launch.main --config=experiments/dc_digits.py:10 --workdir=runs/dc_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``dc_mnist5k.py`` with 2-block ConvNets
(``experiments.distill_base.matching_digits``). ``sweep()`` is dc_mnist5k's.
"""

from experiments import common, distill_base
from experiments.dc_mnist5k import sweep  # noqa: F401 (same sweep)
from experiments.rfad_mnist5k import ARG_HELP


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = common.parse_arg(arg, positional=("per_class",), help=ARG_HELP, per_class=10, runlocal=False)
  c = distill_base.matching_digits(distill_base.matching_base("dc", a.per_class))
  return distill_base.matching_runlocal(c) if a.runlocal else c
