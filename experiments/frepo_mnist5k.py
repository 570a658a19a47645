r"""FRePo (Zhou, Nezhadarya & Ba, 2022, "Dataset Distillation using Neural Feature
Regression") on the embedded mnist5k digits.

``python -m launch.main --config=experiments/frepo_mnist5k.py:10 --workdir=runs/frepo_mnist5k``

``arg`` = ``images_per_class[,runlocal]``. A pool of 4 ConvNets (width 32, depth 3, instance
norm: the finite protocol's network) trained online on the support set (Adam 1e-3, MSE to the
labels), each reset after 100 updates; KRR on their readout features; labels learned; Adam
(lr 0.01, cosine) on the support set with target batches of 256 digits. Same finite-network
protocol as RFAD (MSE on the learned labels). Width 64 without normalisation and 400 targets
ran at ~0.27 steps/s on 2 shared cores (25 minutes for 400 steps); this setting ~3x faster.
Finite ConvNets on the 10/class set: 94.2 +- 0.2% (seeds 0-2; random real 93.8, RFAD 96.3).
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.frepo_base(a.per_class)
  return distill_base.finish(c, a)


def sweep(arg=None):
  """Images per class 1/10/50 x seeds 0/1/2."""
  return distill_base.per_class_seed_sweep("frepo")
