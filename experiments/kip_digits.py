r"""KIP on scikit-learn's embedded 8x8 digits (1,437 train / 360 test), FC or ConvNet NTK.

``python -m launch.main --config=experiments/kip_digits.py:10 --workdir=runs/kip_digits``
``python -m launch.main --config=experiments/kip_digits.py:10,conv --workdir=runs/kip_digits_conv``

``arg`` = ``images_per_class[,fc|conv]`` (default ``10,fc``). Same settings as
``kip_mnist5k.py`` (Nguyen, Chen & Lee, 2021, "Dataset Meta-Learning from Kernel
Ridge-Regression") with target batches of 720 digits; the ConvNet kernel is
``depth`` x [Conv 3x3 SAME, Relu, AvgPool 2x2], Flatten, Dense.

The exact ConvNet NTK with pooling keeps every pixel pair (O(pixels^2) per image pair):
on 2 CPU cores one step took ~5 s at 1/class and ~15 s at 10/class with
``--config.kip.target_batch_size=120`` (4.9 GB; 720 targets did not finish a step in 9
minutes), so the 1,000 ``conv`` steps are for accelerators. 60 steps (1/class) and 30
steps (10/class, 120 targets) already lift the ConvNet-NTK KRR accuracy from 81.9% to 96.1%
and from 95.6% to 99.2% on the 360 held-out digits.
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,fc|conv][,runlocal]``."""
  a = distill_base.kip_arg(arg)
  c = distill_base.kip_base(a.per_class)
  c.dataset.name = "digits"
  distill_base.kip_kernel(c, a.kernel, c.kernel.depth)  # depth 2 for fc and conv
  if c.kernel.name == "conv":
    c.evaluation.width = 64
  c.kip.target_batch_size = 720
  c.num_steps = 1000
  if a.runlocal:
    distill_base.kip_runlocal(c)
  return c


def sweep(arg=None):
  """Images per class 1/10/50 x kernel fc/conv."""
  return [
    {
      "name": f"ipc{n}_{k}",
      "kip.per_class": n,
      "kernel.name": k,
      "evaluation.network": {"fc": "mlp", "conv": "convnet"}[k],
    }
    for n in (1, 10, 50)
    for k in ("fc", "conv")
  ]
