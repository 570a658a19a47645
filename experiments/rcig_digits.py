r"""RCIG on scikit-learn's embedded 8x8 digits (1,437 train / 360 test).

``python -m launch.main --config=experiments/rcig_digits.py:10 --workdir=runs/rcig_digits``

``arg`` = ``images_per_class[,runlocal]``. As ``rcig_mnist5k.py`` with 2-block pool ConvNets
(8x8 -> 2x2), no normalisation, 10 CG iterations each, Adam lr 0.01 for 300 steps at every
size; the finite networks are those of ``rfad_digits.py`` (2-block ConvNets, shifts of at
most one pixel). ``sweep()`` is rcig_mnist5k's (images per class x seeds).
"""

from experiments import distill_base
from experiments.rcig_mnist5k import rcig_base, rcig_runlocal, sweep  # noqa: F401 (same sweep)


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = distill_base.distill_arg(arg)
  c = rcig_base(a.per_class)
  c.dataset.name = "digits"
  # The measured digits settings: 10 CG iterations each, no normalisation, lr 0.01, 300 steps.
  c.rcig.update({"depth": 2, "inner_steps": 10, "hinv_steps": 10, "normalization": "none"})
  c.optimizer.learning_rate, c.num_steps = 0.01, 300
  c.evaluation.update({"depth": 2, "max_shift": 1})
  return rcig_runlocal(c) if a.runlocal else c
