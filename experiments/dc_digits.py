r"""DC (gradient matching) on scikit-learn's
embedded 8x8 digits (1,437 train / 360 test).

``python -m launch.main --config=experiments/dc_digits.py:10 --workdir=runs/dc_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``dc_mnist5k.py`` with 2-block ConvNets
(``experiments.distill_base.matching_digits``). ``sweep()`` is dc_mnist5k's.
"""

from experiments import distill_base
from experiments.dc_mnist5k import sweep  # noqa: F401 (same sweep)


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.matching_digits(distill_base.matching_base("dc", a.per_class))
  return distill_base.finish(c, a)
