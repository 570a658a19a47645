r"""RFAD on scikit-learn's embedded 8x8 digits (1,437 train / 360 test).

``python -m launch.main --config=experiments/rfad_digits.py:10 --workdir=runs/rfad_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``rfad_mnist5k.py`` with a 2-block ConvNet
(8x8 -> 2x2) of width 32, 2 random networks per step and 600 steps; the finite networks are
2-block ConvNets with shifts of at most one pixel.
"""

from experiments import common
from experiments.rfad_mnist5k import ARG_HELP


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = common.parse_arg(arg, positional=("per_class",), help=ARG_HELP, per_class=10, runlocal=False)
  c = common.rfad_base(a.per_class)
  c.dataset.name = "digits"
  c.num_steps = 600
  c.rfad.update({"depth": 2, "num_models": 2})
  c.evaluation.update({"depth": 2, "max_shift": 1})
  return common.distill_runlocal(c) if a.runlocal else c


def sweep(arg=None):
  """Images per class 1/10/50 x seeds 0/1/2."""
  return [
    {"name": f"ipc{n}_seed{s}", "rfad.per_class": n, "seed": s}
    for n in (1, 10, 50)
    for s in (0, 1, 2)
  ]
