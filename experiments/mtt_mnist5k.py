r"""MTT (Cazenavette et al., 2022, "Dataset Distillation by Matching Training Trajectories")
on the embedded mnist5k digits (``kdjax.distill.mtt``).

``python -m launch.main --config=experiments/mtt_mnist5k.py:10 --workdir=runs/mtt_mnist5k``

``arg`` = ``images_per_class[,runlocal]`` (default 10). The first run trains the expert
buffer into ``WORKDIR/experts`` (``--config.mtt.buffer_dir=DIR`` shares one between runs):
``num_experts`` ConvNets (the protocol's: width 32, depth 3, instance norm) trained by
plain SGD on the 4,000 real digits for ``num_epochs`` epochs, with DSA. The synthetic
images move by SGD with momentum 0.5 (the paper's optimizer), the log step size by its own
SGD. ``mtt_base`` is shared by the mtt_* and datm_* configs; measured figures and the
tuning tried: docs/dd_mtt.md.
"""

import ml_collections

from experiments import common, distill_base
from experiments.rfad_mnist5k import ARG_HELP

# Start windows [min_start_epoch, max_start_epoch -> max_start_epoch_final) by images per
# class (of the 20-epoch buffer): MTT's fixed windows, DATM's growing ones (early, easy
# segments at small sizes, later ones at large: Guo et al., 2024, Table 7's pattern).
WINDOWS = {
  "mtt": {1: (0, 2, 2), 10: (0, 6, 6), 50: (0, 10, 10)},
  "datm": {1: (0, 2, 4), 10: (0, 4, 8), 50: (2, 8, 14)},
}


def window(method: str, per_class: int) -> tuple[int, int, int]:
  """``(min_start_epoch, max_start_epoch, max_start_epoch_final)`` of ``per_class``: the
  table's entry at the nearest size not above it (1 below 10, 10 below 50, else 50)."""
  size = 50 if per_class >= 50 else 10 if per_class >= 10 else 1
  return WINDOWS[method][size]


def epochs(per_class: int, dataset: str = "mnist5k") -> int:
  """The buffer's ``num_epochs``: 20 on digits; on mnist5k just what the windows below 50
  per class reach (DATM's 10/class window ``[0, 4 -> 8)`` + 2 expert epochs = epoch 9),
  10, and 16 from 50 per class (DATM's ``[2, 8 -> 14)``). One buffer serves every MTT and
  DATM run of a dataset below 50 per class."""
  if dataset == "digits":
    return 20
  return 16 if per_class >= 50 else 10


def size_settings(method: str, per_class: int, dataset: str = "mnist5k") -> dict:
  """The ``config.<method>`` keys that depend on the images per class (and the dataset),
  plus ``num_steps``: the start window (:func:`window`), the buffer's epochs
  (:func:`epochs`), and

  - digits: at 10 or more per class 10 student steps on minibatches of 50 synthetic
    images for 150 steps (2.1 s/step at load ~14 vs ~5 s for 20 full-batch steps), else
    20 full-batch steps for 300 steps; the student's ``lax.scan`` not unrolled;
  - mnist5k: the student's steps unrolled (``scan_unroll = syn_steps``: a straight-line
    program; on XLA:CPU the scan's while loop ran the convolutions ~7x slower: 15 vs 2.0
    CPU-s per step at 10/class); below 10 per class 10 full-batch steps for 300 steps;
    from 10 per class steps on minibatches of 50 for 150 steps: MTT 20 of them (with 10,
    MTT tied random real at 10/class, 93.8 vs 93.8; with 20, two passes over the set:
    94.8), DATM 10 (its measured 94.5).
  """
  lo, hi, final = window(method, per_class)
  small = per_class < 10
  if dataset == "digits":
    syn_steps, unroll = (20 if small else 10), 1
  else:
    syn_steps = unroll = 10 if small or method == "datm" else 20
  return {
    f"{method}.min_start_epoch": lo,
    f"{method}.max_start_epoch": hi,
    f"{method}.max_start_epoch_final": final,
    f"{method}.num_epochs": epochs(per_class, dataset),
    f"{method}.syn_steps": syn_steps,
    f"{method}.scan_unroll": unroll,
    f"{method}.syn_batch_size": 0 if small else 50,
    "num_steps": 300 if small else 150,
  }


def mtt_base(
  method: str, per_class: int = 10, dataset: str = "mnist5k"
) -> ml_collections.ConfigDict:
  """The mnist5k config of ``method`` 'mtt' or 'datm' (``rfad_base``'s data, loop and
  finite-network protocol, the ``<method>`` block below)."""
  c = distill_base.rfad_base(per_class)
  c.method = method
  del c["rfad"]
  c.optimizer = common.optimizer("sgd", 100.0, schedule="constant", momentum=0.5)
  c.log_every = 20
  c.eval_every = c.checkpoint_every = 50
  c[method] = ml_collections.ConfigDict(
    {
      "per_class": per_class,
      "width": 32,
      "depth": 3,
      "normalization": "instance",
      "augment": "color_crop_cutout_scale_rotate",
      "reg": 1e-4,
      "label_offset": 0.1,
      # The experts: SGD batch size, learning rate, epochs, count, augmentation.
      "target_batch_size": 256,
      "expert_learning_rate": 0.1,  # mnist5k: 95.9% after 10 epochs (0.01: too slow on digits)
      "num_epochs": epochs(per_class, dataset),
      "num_experts": 4 if dataset == "mnist5k" else 8,
      "expert_augment": "color_crop_cutout_scale_rotate",
      "buffer_dir": "",
      # The student: unrolled steps on minibatches of the synthetic set (0 = all of it).
      "expert_epochs": 2,
      "lr_init": 0.1,  # 10 student steps x 0.1 vs the experts' 30 x 0.1 in 2 epochs
      "lr_learning_rate": 0.01,
      "learn_labels": method == "datm",
      "label_learning_rate": 2.0,
      "label_temperature": 1.0,  # DATM's initial logits: the expert's / T (the paper: 1)
      "scan_unroll": 1,
    }
  )
  for key, value in size_settings(method, per_class, dataset).items():
    if "." in key:
      c[method][key.split(".")[1]] = value
    else:
      c[key] = value
  return c


def digits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """An ``mtt_base(..., dataset='digits')`` config on the 8x8 digits: 2-block ConvNets,
  shifts <= 1 px (as dm_digits), experts at SGD lr 0.3 (99% test accuracy after 20 epochs
  with DSA; 0.01 reached 79%)."""
  distill_base.matching_digits(c)
  c[c.method].update({"expert_learning_rate": 0.3, "lr_init": 0.1})
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``distill_runlocal`` plus a tiny buffer (2 experts of 16 tiny epochs) and unroll."""
  distill_base.distill_runlocal(c)
  r = c[c.method]
  r.update(
    {
      "width": 8,
      "depth": 2,
      "target_batch_size": 64,
      "num_experts": 2,
      "num_epochs": 16,  # the sweep's largest window (2, 8, 14) + expert_epochs fits
      "syn_steps": 2,
      "expert_epochs": 1,
      "min_start_epoch": 0,
      "max_start_epoch": 1,
      "max_start_epoch_final": 2 if c.method == "datm" else 1,
    }
  )
  return c


def get_config(arg=None):
  """``arg``: ``images_per_class[,runlocal]``."""
  a = common.parse_arg(arg, positional=("per_class",), help=ARG_HELP, per_class=10, runlocal=False)
  c = mtt_base("mtt", a.per_class)
  return runlocal(c) if a.runlocal else c


def window_sweep(method: str, dataset: str = "mnist5k") -> list[dict]:
  """Images per class 1/10/50 (with their :func:`size_settings`) x seeds 0/1/2."""
  return [
    {**point, **size_settings(method, point[f"{method}.per_class"], dataset)}
    for point in distill_base.per_class_seed_sweep(method)
  ]


def sweep(arg=None):
  """Images per class 1/10/50 (with their start windows) x seeds 0/1/2."""
  return window_sweep("mtt")
