r"""Does KD help? mnist5k MLP student trained with KD from a trained teacher vs on labels alone.

  python -m benchmarks.kd_mnist5k [--seeds=3] [--root=/tmp/kdjax_bench_kd_mnist5k] \
      [--arg=hidden=64,temperature=2.0]
  python -m benchmarks.kd_mnist5k --seeds=1 --arg=runlocal --root=/tmp/kd_smoke   # smoke run

Trains the teacher of ``experiments/kd_mnist5k.py`` once (seed 0; it sees +-2 pixel
shifts), then for every seed the same student four times, from the same initialisation
and batch order: with KD on the unshifted images (``--config.teacher_workdir`` = that
teacher), on the labels alone (``:student_only``), and both again with the teacher's
shift augmentation on the student's images too (is KD more than the augmentation?).
Prints a Markdown table of test accuracies (1,000 held-out digits). Runs resume:
re-running skips finished runs.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

from experiments import kd_mnist5k
from kdjax.train import train_job

_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of student seeds.")
_ROOT = flags.DEFINE_string("root", "/tmp/kdjax_bench_kd_mnist5k", "Directory of the runs.")
_ARG = flags.DEFINE_string("arg", "", "Extra config arg, e.g. 'hidden=32,temperature=4.0'.")
ACCURACY = "test_accuracy"  # summary key of kdjax.train.train_job.run


def main(argv):
  del argv
  extra = "," + _ARG.value if _ARG.value else ""
  teacher_run = os.path.join(_ROOT.value, "teacher")
  teacher = train_job.run(
    train_job.teacher_config(kd_mnist5k.get_config("seed=0" + extra)), teacher_run
  )
  rows = []
  for seed in range(_SEEDS.value):
    kd_config = kd_mnist5k.get_config(f"seed={seed}{extra}")
    kd_config.teacher_workdir = teacher_run
    kd = train_job.run(kd_config, os.path.join(_ROOT.value, f"kd_seed{seed}"))
    ce = train_job.run(
      kd_mnist5k.get_config(f"student_only,seed={seed}{extra}"),
      os.path.join(_ROOT.value, f"ce_seed{seed}"),
    )
    # Is it only the teacher's augmentation? The label-only student with it too.
    ce_aug_config = kd_mnist5k.get_config(f"student_only,seed={seed}{extra}")
    ce_aug_config.augment = ce_aug_config.teacher.augment
    ce_aug = train_job.run(ce_aug_config, os.path.join(_ROOT.value, f"ce_aug_seed{seed}"))
    kd_aug_config = kd_mnist5k.get_config(f"seed={seed}{extra}")
    kd_aug_config.teacher_workdir = teacher_run
    kd_aug_config.augment = kd_aug_config.teacher.augment
    kd_aug = train_job.run(kd_aug_config, os.path.join(_ROOT.value, f"kd_aug_seed{seed}"))
    rows.append((seed, ce[ACCURACY], kd[ACCURACY], ce_aug[ACCURACY], kd_aug[ACCURACY]))
  c = kd_mnist5k.get_config("seed=0" + extra)
  print(
    f"\nmnist5k, student MLP hidden={tuple(c.model.hidden)} ({c.num_steps} steps), "
    f"teacher MLP hidden={tuple(c.teacher.model.hidden)} test accuracy "
    f"{teacher[ACCURACY]:.4f}, "
    f"kd_loss T={c.kd.loss_kwargs.temperature}, ce_weight={c.kd.ce_weight}\n"
  )
  aug = c.teacher.augment
  print(f"| seed | labels | KD | labels + {aug} | KD + {aug} |\n|---|---|---|---|---|")
  for seed, *accuracies in rows:
    print(f"| {seed} | " + " | ".join(f"{a:.4f}" for a in accuracies) + " |")
  columns = np.array([r[1:] for r in rows])
  print(
    "| mean ± std | "
    + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(columns.mean(0), columns.std(0)))
    + " |"
  )


if __name__ == "__main__":
  app.run(main)
