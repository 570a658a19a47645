r"""DSA (DC with differentiable siamese augmentation)
on the embedded mnist5k digits (``kdjax.distill.dc``).

``python -m launch.main --config=experiments/dsa_mnist5k.py:10 --workdir=runs/dsa_mnist5k``

``arg`` = ``images_per_class[,runlocal]`` (default 10). The settings of
``experiments.distill_base.matching_base``; the finite-network protocol of ``rfad_mnist5k.py``.
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.matching_base("dsa", a.per_class)
  return distill_base.finish(c, a)


def sweep(arg=None):
  """Images per class 1/10/50 x seeds 0/1/2."""
  return [
    {"name": f"ipc{n}_seed{s}", "dsa.per_class": n, "seed": s}
    for n in (1, 10, 50)
    for s in (0, 1, 2)
  ]
