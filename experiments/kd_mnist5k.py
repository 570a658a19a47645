r"""KD on mnist5k: an MLP teacher (2x1200 hidden, trained with +-2 pixel shifts) distilled
into a smaller MLP student (1x128 hidden, trained on the unshifted images).

Hinton, Vinyals & Dean (2015), "Distilling the knowledge in a neural network" (MNIST).
Runs from nothing on CPU in a few minutes: the teacher is trained first in
``WORKDIR/teacher`` (or loaded from ``--config.teacher_workdir``), then the student.

  python -m launch.main --config=experiments/kd_mnist5k.py --workdir=runs/kd_mnist5k
  python -m launch.main --config=experiments/kd_mnist5k.py:runlocal --workdir=/tmp/kd
  python -m launch.main --config=experiments/kd_mnist5k.py:student_only --workdir=runs/ce_mnist5k
  python -m launch.sweep --config=experiments/kd_mnist5k.py --workdir=runs/kd_mnist5k_sweep

Arg (comma-separated): ``runlocal`` (tiny smoke run), ``student_only`` (the same student
on the labels alone: the baseline KD must beat), ``seed=N``, ``temperature=T``,
``hidden=W`` (student width).
"""

from experiments import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, student_only=False, seed=0, temperature=4.0, hidden=128)
  c = common.train_base(
    method="supervised" if a.student_only else "kd",
    dataset_name="mnist5k",
    model={"name": "mlp", "num_classes": 10, "hidden": (a.hidden,)},
    seed=a.seed,
    num_steps=3000,
    batch_size=64,
    learning_rate=3e-3,
  )
  c.kd = {
    "loss": "kd_loss",
    "loss_kwargs": {"temperature": a.temperature},
    "kd_weight": 1.0,
    "ce_weight": 0.1,
  }
  c.teacher = {
    "model": {"name": "mlp", "num_classes": 10, "hidden": (1200, 1200), "dropout_rate": 0.2},
    "optimizer": {**c.optimizer.to_dict(), "learning_rate": 1e-3},
    "num_steps": 2000,
    "augment": "shift",
  }
  c.teacher_workdir = ""  # a finished supervised run to use as the teacher instead
  if a.runlocal:
    common.train_runlocal(c)
    c.teacher.num_steps = 20
    c.teacher.model.hidden = (64,)
  return c


def sweep(arg=None):
  """KD students vs label-only students over seeds, and KD temperatures 1, 2, 8 (seed 0).

  Every KD point trains its own teacher; ``benchmarks/kd_mnist5k.py`` shares one instead.
  """
  del arg
  points = []
  for seed in range(3):
    points.append({"name": f"kd_t4_seed{seed}", "seed": seed, "method": "kd"})
    points.append({"name": f"ce_seed{seed}", "seed": seed, "method": "supervised"})
  for t in (1.0, 2.0, 8.0):
    points.append({"name": f"kd_t{t:g}_seed0", "kd.loss_kwargs.temperature": t})
  return points
