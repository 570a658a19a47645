r"""KIP on mnist5k: random real subsets vs KIP (images) vs KIP with label learning.

``.venv/bin/python -m benchmarks.kip_table [--per_class=1,10,50] [--steps=1200] [--seeds=5]``
(``--per_class=1 --steps=2 --seeds=1``: a smoke run of a few minutes on CPU)

Prints one markdown table: for each number of images per class, the held-out test
accuracy of FC2-ReLU NTK kernel ridge regression using only the support set (random
real images: mean and std over ``--seeds`` draws; KIP: seed 0), and the wall time of
each KIP run. All runs use ``experiments/kip_mnist5k.py`` (transfer check off), each in
a temporary workdir. Reference: KRR on all 4,000 training digits (last row).
"""

from __future__ import annotations

import tempfile
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import distill_base
from kdjax import data
from kdjax.distill import kip, runner
from kdjax.jobs import data_loading

_PER_CLASS = flags.DEFINE_list("per_class", ["1", "10", "50"], "Support images per class.")
_STEPS = flags.DEFINE_integer("steps", None, "KIP steps (default: the config's).")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Random real subsets per row.")


def random_subset_accuracy(config, ds, x_train, x_test, per_class, seeds):
  kernel = runner.build_kernel(config.kernel)
  targets = data.regression_targets(ds.y_train, ds.num_classes)
  accs = []
  for seed in range(seeds):
    index = data.class_balanced_indices(ds.y_train, per_class, seed=seed)
    accs.append(
      float(
        kip.krr_accuracy(
          kernel,
          jnp.asarray(x_train[index]),
          jnp.asarray(targets[index]),
          jnp.asarray(x_test),
          jnp.asarray(ds.y_test),
          reg=config.kip.reg,
        )
      )
    )
  return np.mean(accs), np.std(accs)


def main(argv):
  del argv
  rows = []
  base = distill_base.kip_base(10)
  ds = data_loading.load_dataset(base.dataset)
  x_train, x_test = ds.x_train, ds.x_test
  for per_class in [int(p) for p in _PER_CLASS.value]:
    config = distill_base.kip_base(per_class)
    config.evaluation.enabled = False
    config.log_every = config.eval_every = 10**9
    if _STEPS.value:
      config.num_steps = _STEPS.value
    mean, std = random_subset_accuracy(config, ds, x_train, x_test, per_class, _SEEDS.value)
    row = {
      "per_class": per_class,
      "random": f"{100 * mean:.1f} ± {100 * std:.1f}",
      "steps": config.num_steps,
    }
    for name, labels in (("kip", False), ("kip_labels", True)):
      config.kip.learn_labels = labels
      with tempfile.TemporaryDirectory() as workdir:
        start = time.time()
        summary = runner.run(config, workdir)
        row[name] = f"{100 * summary['test_accuracy']:.1f}"
        row[name + "_s"] = f"{time.time() - start:.0f}"
    rows.append(row)
    print(row, flush=True)
  kernel = runner.build_kernel(base.kernel)
  full = float(
    kip.krr_accuracy(
      kernel,
      jnp.asarray(x_train),
      jnp.asarray(data.regression_targets(ds.y_train, 10)),
      jnp.asarray(x_test),
      jnp.asarray(ds.y_test),
      reg=base.kip.reg,
    )
  )
  print(
    f"\nmnist5k, FC2-ReLU NTK KRR test accuracy (%) on the 1,000 held-out digits; "
    f"KIP target batch {base.kip.target_batch_size}\n"
  )
  print(
    "| images/class | random real (mean ± std) | KIP steps | KIP images | wall s | "
    "KIP images+labels | wall s |"
  )
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['per_class']} | {r['random']} | {r['steps']} | {r['kip']} | {r['kip_s']} | "
      f"{r['kip_labels']} | {r['kip_labels_s']} |"
    )
  print(f"| all 4,000 | {100 * full:.1f} | | | | | |")


if __name__ == "__main__":
  app.run(main)
