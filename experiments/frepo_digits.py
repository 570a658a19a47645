r"""FRePo (Zhou, Nezhadarya & Ba, 2022, "Dataset Distillation using Neural Feature
Regression") on scikit-learn's embedded 8x8 digits (1,437 train / 360 test).

``python -m launch.main --config=experiments/frepo_digits.py:10 --workdir=runs/frepo_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``frepo_mnist5k.py`` with 2-block pool
ConvNets (8x8 -> 2x2); the finite networks are those of ``rfad_digits.py`` (2-block
ConvNets, shifts of at most one pixel). ``sweep()`` is frepo_mnist5k's (images per class x seeds).
"""

from experiments import distill_base
from experiments.frepo_mnist5k import sweep  # noqa: F401 (same sweep)


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.frepo_base(a.per_class)
  c.dataset.name = "digits"
  c.frepo.depth = 2
  c.evaluation.update({"depth": 2, "max_shift": 1})
  return distill_base.finish(c, a)
