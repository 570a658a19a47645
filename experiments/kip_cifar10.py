r"""KIP on tfds CIFAR-10 with ZCA-whitened images and an FC or ConvNet NTK.

``python -m launch.main --config=experiments/kip_cifar10.py:10,conv --workdir=runs/kip_c10``

``arg`` = ``images_per_class[,fc|conv]`` (default ``10,fc``). As in Nguyen, Chen & Lee
(2021), "Dataset Meta-Learning from Kernel Ridge-Regression": regularised ZCA
(strength 0.1), learned images and labels, Adam. The ConvNet kernel (3 x [Conv 3x3
SAME, Relu, AvgPool 2x2], Flatten, Dense) keeps 1024 x 1024 pixel-pair covariances per
image pair; run it on accelerators (target batch 64 sharded over the devices).
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,fc|conv][,runlocal]``."""
  a = distill_base.kip_arg(arg)
  c = distill_base.kip_base(a.per_class)
  c.dataset.name = "cifar10"
  c.dataset.preprocess = "zca"
  c.dataset.zca_strength = 0.1
  distill_base.kip_kernel(c, a.kernel, 3 if a.kernel == "conv" else c.kernel.depth)
  distill_base.kip_full_size(c)
  c.optimizer.learning_rate = 0.01
  c.kip.learn_labels = True
  if a.runlocal:
    distill_base.kip_runlocal(c)
  return c


def sweep(arg=None):
  """Images per class 1/10/50 (kernel from ``arg``)."""
  return [{"name": f"ipc{n}", "kip.per_class": n} for n in (1, 10, 50)]
