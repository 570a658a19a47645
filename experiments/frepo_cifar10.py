r"""FRePo on CIFAR-10 (tensorflow-datasets, regularised ZCA), for accelerators.

``python -m launch.main --config=experiments/frepo_cifar10.py:10 --workdir=runs/frepo_cifar10``

``arg`` = ``images_per_class[,runlocal]``. Zhou, Nezhadarya & Ba (2022): a pool of 10
width-128 ConvNet-3s, each reset after 100 online updates, labels learned, 5,000 steps on
target batches of 1,024; finite networks as in ``rfad_cifar10.py``.
"""

from experiments import distill_base


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal][,protocol=field]``."""
  a = distill_base.distill_arg(arg)
  c = distill_base.frepo_base(a.per_class)
  distill_base.distill_cifar10(c)
  c.frepo.update({"width": 128, "pool_size": 10, "target_batch_size": 1024})
  return distill_base.finish(c, a)


def sweep(arg=None):
  """Images per class 1/10/50."""
  return [{"name": f"ipc{n}", "frepo.per_class": n} for n in (1, 10, 50)]
