r"""RFAD (Loo et al., 2022, "Efficient Dataset Distillation using Random Feature
Approximation") on the embedded mnist5k digits.

``python -m launch.main --config=experiments/rfad_mnist5k.py:10 --workdir=runs/rfad_mnist5k``

``arg`` = ``images_per_class[,runlocal]`` (default 10). The kernel is the NNGP of the
ConvNet body (3 x [Conv 3x3 width 32, ReLU, AvgPool 2x2], no normalisation) estimated
by 1 random network per step; Platt-scaled cross-entropy; Adam (lr 0.03, cosine decay to
0.003) on the images and the labels (learned, as in the RFAD paper) for 400 steps on target
batches of 256 digits (lr 0.01 for 300 steps left the images near their real start).
The finite-network protocol: ConvNet width 32, depth 3, instance norm, Adam 1e-3 cosine,
1,000 steps, batches of 256, shifts <= 2 px, cross-entropy on class labels and MSE on
learned labels (``kdjax.distill.job``), 3 seeds (64 epochs of the 4,000 digits for the
all-data ceiling). With fixed one-hot labels the finite ConvNets reached 72.0 +- 4.0% (1/class)
and 94.2 +- 0.6% (10/class); learned labels lift them to about 81% and 96% (mnist5k; random
real 66% and 94%). ``experiments.distill_base.rfad_base`` is shared by the rfad_* and frepo_*
configs.
"""

from experiments import distill_base

ARG_HELP = distill_base.DISTILL_ARG_HELP  # kept under its old name


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.rfad_base(a.per_class)
  return distill_base.finish(c, a)


def sweep(arg=None):
  """Images per class 1/10/50 x seeds 0/1/2."""
  return distill_base.per_class_seed_sweep("rfad")
