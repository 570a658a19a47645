r"""RFAD on scikit-learn's embedded 8x8 digits (1,437 train / 360 test).

``python -m launch.main --config=experiments/rfad_digits.py:10 --workdir=runs/rfad_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``rfad_mnist5k.py`` with a 2-block ConvNet
(8x8 -> 2x2) of width 32, 2 random networks per step and 600 steps; the finite networks are
2-block ConvNets with shifts of at most one pixel.
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.rfad_base(a.per_class)
  c.dataset.name = "digits"
  c.num_steps = 600
  c.rfad.update({"depth": 2, "num_models": 2})
  c.evaluation.update({"depth": 2, "max_shift": 1})
  return distill_base.finish(c, a)


def sweep(arg=None):
  """Images per class 1/10/50 x seeds 0/1/2."""
  return distill_base.per_class_seed_sweep("rfad")
