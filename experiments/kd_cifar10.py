r"""KD on CIFAR-10: resnet32x4 teacher -> resnet8x4 student (for accelerators).

Tian, Krishnan & Isola (2020), "Contrastive representation distillation" (setup);
Hinton, Vinyals & Dean (2015) (loss). Data from tensorflow-datasets.

  python -m launch.main --config=experiments/kd_cifar10.py --workdir=runs/kd_cifar10
  python -m launch.main --config=experiments/kd_cifar10.py:student_only --workdir=runs/ce_cifar10
  python -m launch.main --config=experiments/kd_cifar10.py --workdir=runs/kd_cifar10_b \
      --config.teacher_workdir=runs/kd_cifar10/teacher

Arg: see ``experiments.common.cifar_kd`` (``runlocal``, ``student_only``, ``seed=N``,
``temperature=T``, ``epochs=E``, ``loss=NAME``).
"""

from experiments import common


def get_config(arg=None):
  return common.cifar_kd(arg, dataset_name="cifar10", num_classes=10)


def sweep(arg=None):
  """KD temperatures 1, 2, 4, 8 and the label-only student (teacher shared by
  ``--config.teacher_workdir``)."""
  del arg
  return [{"name": f"kd_t{t}", "kd.loss_kwargs.temperature": float(t)} for t in (1, 2, 4, 8)] + [
    {"name": "student_only", "method": "supervised"}
  ]
