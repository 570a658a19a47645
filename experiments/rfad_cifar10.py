r"""RFAD on CIFAR-10 (tensorflow-datasets, regularised ZCA), for accelerators.

``python -m launch.main --config=experiments/rfad_cifar10.py:10 --workdir=runs/rfad_cifar10``

``arg`` = ``images_per_class[,runlocal]``. Loo et al. (2022), "Efficient Dataset
Distillation using Random Feature Approximation": ConvNet-3 NNGP features (width 256,
8 random networks per step), Platt loss, ZCA-whitened images; the finite networks are
width-128 ConvNets trained 1,000 steps with shifts of up to 4 pixels.
"""

from experiments import common
from experiments.rfad_mnist5k import ARG_HELP


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = common.parse_arg(arg, positional=("per_class",), help=ARG_HELP, per_class=10, runlocal=False)
  c = common.rfad_base(a.per_class)
  c.dataset = common.dataset("cifar10", preprocess="zca")
  c.num_steps = 5000
  c.eval_every = c.checkpoint_every = 500
  c.rfad.update(
    {
      "width": 256,
      "num_models": 8,
      "num_models_eval": 16,
      "target_batch_size": 1024,
    }
  )
  c.optimizer.learning_rate = 0.001
  c.evaluation.update({"width": 128, "num_steps": 1000, "max_shift": 4})
  return common.distill_runlocal(c) if a.runlocal else c


def sweep(arg=None):
  """Images per class 1/10/50."""
  return [{"name": f"ipc{n}", "rfad.per_class": n} for n in (1, 10, 50)]
