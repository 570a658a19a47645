r"""KIP on tfds MNIST (60,000 train / 10,000 test) with an FC or ConvNet NTK.

``python -m launch.main --config=experiments/kip_mnist.py:10 --workdir=runs/kip_mnist``
``python -m launch.main --config=experiments/kip_mnist.py:10,conv --workdir=...``

``arg`` = ``images_per_class[,fc|conv]`` (default ``10,fc``). Settings of
``kip_mnist5k.py`` (Nguyen, Chen & Lee, 2021, "Dataset Meta-Learning from Kernel
Ridge-Regression"); ``test_accuracy`` is on the 10,000 test digits. The ConvNet kernel
(3 x [Conv 3x3 SAME, Relu, AvgPool 2x2]) keeps pixel-pair covariances, which cost
``O(batch * support * (H W)^2)`` memory: its target batch is 64 and it is meant for
accelerators.
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,fc|conv][,runlocal]``."""
  a = distill_base.kip_arg(arg)
  c = distill_base.kip_base(a.per_class)
  c.dataset.name = "mnist"
  distill_base.kip_kernel(c, a.kernel, 3 if a.kernel == "conv" else c.kernel.depth)
  distill_base.kip_full_size(c)
  if c.kernel.name == "conv":
    c.optimizer.learning_rate = 0.01
  if a.runlocal:
    distill_base.kip_runlocal(c)
  return c


def sweep(arg=None):
  """Images per class 1/10/50 (kernel from ``arg``, e.g. ``conv``)."""
  return [{"name": f"ipc{n}", "kip.per_class": n} for n in (1, 10, 50)]
