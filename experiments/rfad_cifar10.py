r"""RFAD on CIFAR-10 (tensorflow-datasets, regularised ZCA), for accelerators.

``python -m launch.main --config=experiments/rfad_cifar10.py:10 --workdir=runs/rfad_cifar10``

``arg`` = ``images_per_class[,runlocal]``. Loo et al. (2022), "Efficient Dataset
Distillation using Random Feature Approximation": ConvNet-3 NNGP features (width 256,
8 random networks per step), Platt loss, ZCA-whitened images; the finite networks are
width-128 ConvNets trained 1,000 steps with shifts of up to 4 pixels.
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.rfad_base(a.per_class)
  distill_base.distill_cifar10(c)
  c.rfad.update(
    {
      "width": 256,
      "num_models": 8,
      "num_models_eval": 16,
      "target_batch_size": 1024,
    }
  )
  return distill_base.finish(c, a)


def sweep(arg=None):
  """Images per class 1/10/50."""
  return [{"name": f"ipc{n}", "rfad.per_class": n} for n in (1, 10, 50)]
