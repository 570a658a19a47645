r"""KIP on scikit-learn's embedded 8x8 digits (1,437 train / 360 test), FC or ConvNet NTK.

``python -m launch.main --config=experiments/kip_digits.py:10 --workdir=runs/kip_digits``
``python -m launch.main --config=experiments/kip_digits.py:10,conv --workdir=runs/kip_digits_conv``

``arg`` = ``images_per_class[,fc|conv]`` (default ``10,fc``). Same settings as
``kip_mnist5k.py`` (Nguyen, Chen & Lee, 2021, "Dataset Meta-Learning from Kernel
Ridge-Regression") with target batches of 720 digits; the ConvNet kernel is
``depth`` x [Conv 3x3 SAME, Relu, AvgPool 2x2], Flatten, Dense.
"""

from experiments import common


def get_config(arg=None):
  """``arg``: ``images_per_class[,fc|conv][,runlocal]``."""
  a = common.parse_arg(
    arg,
    positional=("per_class", "kernel"),
    help=common.KIP_ARG_HELP,
    per_class=10,
    kernel="fc",
    runlocal=False,
  )
  c = common.kip_base(a.per_class)
  c.dataset.name = "digits"
  c.kernel.name = a.kernel
  if c.kernel.name == "conv":
    c.kernel.depth = 2
    c.transfer.width = 64
  c.kip.target_batch_size = 720
  c.num_steps = 1000
  if a.runlocal:
    common.kip_runlocal(c)
  return c


def sweep(arg=None):
  """Images per class 1/10/50 x kernel fc/conv."""
  return [
    {"name": f"ipc{n}_{k}", "kip.per_class": n, "kernel.name": k}
    for n in (1, 10, 50)
    for k in ("fc", "conv")
  ]
