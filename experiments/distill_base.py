"""The base configs of the dataset-distillation experiments (big_vision style): the KIP job
(``kip_arg``, ``kip_base``, ``kip_kernel``, ``kip_full_size``, ``kip_runlocal``) and the
distill job (``distill_arg``, ``rfad_base``, ``frepo_base``, ``matching_base`` for DC/DSA/DM,
``distill_cifar10``, ``distill_runlocal``, ``frepo_runlocal``, ``matching_digits``,
``matching_runlocal``, ``per_class_seed_sweep``). The blocks they share with every job
(``parse_arg``, ``dataset``, ``optimizer``, ``evaluation``) live in ``experiments.common``.
"""

from __future__ import annotations

import math

import ml_collections

from experiments import common

KIP_ARG_HELP = {"per_class": "images per class", "kernel": "the NTK architecture, fc or conv"}


def kip_arg(arg: str | None) -> ml_collections.ConfigDict:
  """Parses a kip_* ``arg``: ``images_per_class[,fc|conv][,runlocal]`` (default ``10,fc``)."""
  return common.parse_arg(
    arg,
    positional=("per_class", "kernel"),
    help=KIP_ARG_HELP,
    per_class=10,
    kernel="fc",
    runlocal=False,
  )


def kip_full_size(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The 60,000-image (MNIST, CIFAR-10) KIP schedule, in place: 4,000 steps, evaluation
  and checkpoints every 500; the ConvNet kernel on target batches of 64 and a width-128
  transfer network (its pixel-pair covariances cost ``O(batch * support * (H W)^2)``)."""
  c.num_steps = 4000
  c.eval_every = 500
  c.checkpoint_every = 500
  if c.kernel.name == "conv":
    c.kip.target_batch_size = 64
    c.evaluation.width = 128
  return c


def kip_base(per_class: int = 10) -> ml_collections.ConfigDict:
  """The KIP config of ``experiments/kip_mnist5k.py``, which the other kip_* start from.

  mnist5k, the FC2-ReLU NTK of the README's baseline (W_std=sqrt(2), b_std=0.1, NTK
  parameterisation, ``reg = 1e-6 tr(K)/m``), per-image standardised pixels, one-hot minus
  0.1 labels; Adam (lr 0.03, cosine decay to lr/100, 3,000 steps; 1,200 at more than 10
  per class) on target batches of 1,000 real digits; labels learned only at 1 image per
  class.
  """
  c = ml_collections.ConfigDict()
  c.job = "kip"
  c.seed = 0
  c.num_steps = 3000 if per_class <= 10 else 1200
  c.dataset = common.dataset("mnist5k", preprocess="standardize")
  c.kernel = ml_collections.ConfigDict(
    {
      "name": "fc",
      "depth": 2,
      "width": 1024,
      "W_std": math.sqrt(2.0),
      "b_std": 0.1,
      "parameterization": "ntk",
      "kind": "ntk",
    }
  )
  c.kip = ml_collections.ConfigDict(
    {
      "per_class": per_class,
      "learn_images": True,
      "learn_labels": per_class == 1,
      "target_batch_size": 1000,
      "reg": 1e-6,
      "label_offset": 0.1,
      "label_solve": False,
    }
  )
  c.optimizer = common.optimizer("adam", 0.03, final_lr_fraction=0.01)
  c.log_every = 100
  c.eval_every = 100
  c.checkpoint_every = 200
  c.keep_checkpoints = 2
  # The transfer check: a finite network of the kernel's architecture (fc: an MLP with
  # kernel.depth hidden layers; conv: the ConvNet) trained full batch on the MSE to the
  # support's real-valued labels, one seed, no augmentation.
  c.evaluation = common.evaluation(
    network="mlp",
    width=512,
    depth=2,
    num_steps=500,
    batch_size=0,
    loss="mse",
    max_shift=0,
    seeds=1,
  )
  return c


def kip_kernel(c: ml_collections.ConfigDict, name: str, depth: int) -> ml_collections.ConfigDict:
  """Sets the KIP kernel to ``name`` ('fc' | 'conv') of ``depth`` layers and the transfer
  network (``evaluation``) to the same architecture."""
  c.kernel.name, c.kernel.depth = name, depth
  c.evaluation.network = {"fc": "mlp", "conv": "convnet"}.get(name, name)
  c.evaluation.depth = depth
  return c


def kip_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a KIP config in place to a seconds-long smoke run (tests reuse it)."""
  c.num_steps = 6
  c.dataset.max_train, c.dataset.max_test = 512, 256
  c.kip.target_batch_size = 64
  c.log_every = c.eval_every = c.checkpoint_every = 2
  c.keep_checkpoints = 3
  c.evaluation.num_steps, c.evaluation.width = 3, 16
  return c


def rfad_base(per_class: int = 10) -> ml_collections.ConfigDict:
  """The mnist5k RFAD config (``experiments/rfad_mnist5k.py``) the rfad_* and frepo_* configs
  start from: ``method='rfad'`` and its ``rfad`` block, ``optimizer`` (Adam lr 0.03, cosine to
  0.003) of the support set, and the finite-network ``evaluation`` (ConvNet width 32, depth
  3, Adam 1e-3, 1,000 steps, batches of 256, shifts <= 2 px, 3 seeds)."""
  c = ml_collections.ConfigDict()
  c.job = "distill"
  c.method = "rfad"
  c.seed = 0
  c.dataset = common.dataset("mnist5k", preprocess="standardize")
  c.num_steps = 400
  c.log_every = 20
  c.eval_every = 50
  c.checkpoint_every = 50
  c.keep_checkpoints = 2
  c.optimizer = common.optimizer("adam", 0.03, final_lr_fraction=0.1)
  c.rfad = ml_collections.ConfigDict(
    {
      "per_class": per_class,
      "width": 32,
      "depth": 3,
      "num_models": 1,
      "num_models_eval": 8,
      "reg": 1e-4,
      "loss": "platt",
      "learn_labels": True,
      "label_offset": 0.1,
      "target_batch_size": 256,
    }
  )
  c.evaluation = common.evaluation()
  return c


DISTILL_ARG_HELP = {
  "per_class": "images per class",
  "runlocal": "seconds-long smoke run",
  "protocol": "the finite-network evaluation: pinned (CPU, default) or field (the papers')",
}


def distill_arg(arg: str | None) -> ml_collections.ConfigDict:
  """Parses a distill-job ``arg``: ``images_per_class[,runlocal][,protocol=pinned|field]``
  (default 10, pinned)."""
  return common.parse_arg(
    arg,
    positional=("per_class",),
    help=DISTILL_ARG_HELP,
    per_class=10,
    runlocal=False,
    protocol="pinned",
  )


def finish(c: ml_collections.ConfigDict, a: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The end of every distill-job ``get_config``: the evaluation ``a.protocol``
  (``common.field_evaluation``), then the method's runlocal shrinking if ``a.runlocal``."""
  try:
    common.field_evaluation(c.evaluation, a.protocol)
  except ValueError as err:
    raise ValueError(f"config arg protocol: {err}") from None
  if not a.runlocal:
    return c
  if c.method == "frepo":
    return frepo_runlocal(c)
  if c.method in ("dm", "dc", "dsa"):
    return matching_runlocal(c)
  return distill_runlocal(c)


def distill_cifar10(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """An rfad/frepo config moved to ZCA-whitened CIFAR-10, in place: 5,000 steps (evaluation
  and checkpoints every 500), support-set Adam lr 0.001, transfer ConvNet of width 128
  trained 1,000 steps with shifts <= 4 px."""
  c.dataset = common.dataset("cifar10", preprocess="zca")
  c.num_steps = 5000
  c.eval_every = c.checkpoint_every = 500
  c.optimizer.learning_rate = 0.001
  c.evaluation.update({"width": 128, "num_steps": 1000, "max_shift": 4})
  return c


def per_class_seed_sweep(block: str) -> list[dict]:
  """Images per class 1/10/50 (``BLOCK.per_class``) x seeds 0/1/2."""
  return [
    {"name": f"ipc{n}_seed{s}", f"{block}.per_class": n, "seed": s}
    for n in (1, 10, 50)
    for s in (0, 1, 2)
  ]


def distill_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a distill config in place to a seconds-long smoke run (tests reuse it)."""
  c.num_steps = 4
  c.dataset.max_train, c.dataset.max_test = 400, 200
  if c.method == "rfad":
    c.rfad.update(
      {"width": 8, "depth": 2, "num_models": 1, "num_models_eval": 1, "target_batch_size": 64}
    )
  c.log_every = c.eval_every = c.checkpoint_every = 2
  c.keep_checkpoints = 3
  c.evaluation.update({"width": 8, "depth": 2, "num_steps": 3, "seeds": 2})
  if c.evaluation.epochs:  # the field protocol: 2 passes over the set
    c.evaluation.epochs = 2
  return c


def frepo_base(per_class: int = 10) -> ml_collections.ConfigDict:
  """The mnist5k FRePo config (``rfad_base`` with ``method='frepo'``, a ``frepo`` block in
  place of the ``rfad`` one, and Adam lr 0.01 on the support set)."""
  c = rfad_base(per_class)
  c.method = "frepo"
  del c["rfad"]
  c.optimizer.learning_rate = 0.01
  c.frepo = ml_collections.ConfigDict(
    {
      "per_class": per_class,
      "width": 32,
      "depth": 3,
      "normalization": "instance",
      "pool_size": 4,
      "max_updates": 100,
      "model_learning_rate": 1e-3,
      "reg": 1e-4,
      "learn_labels": True,
      "label_offset": 0.1,
      "target_batch_size": 256,
    }
  )
  return c


def frepo_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``distill_runlocal`` plus a tiny pool."""
  distill_runlocal(c)
  c.frepo.update(
    {"width": 8, "depth": 2, "pool_size": 2, "max_updates": 2, "target_batch_size": 64}
  )
  return c


def matching_base(method: str, per_class: int = 10) -> ml_collections.ConfigDict:
  """The mnist5k config of the non-kernel baselines ``method`` 'dm', 'dc' or 'dsa'
  (``kdjax.distill.dm`` / ``dc``): ``rfad_base``'s data, loop and finite-network protocol;
  the matching networks are the protocol's ConvNet (width 32, depth 3, instance norm);
  the images move by SGD with momentum 0.5 (constant learning rate: 1 for DM, 0.1 for
  DC/DSA, the papers'); DM and DSA augment with the paper's DSA transforms minus the
  flip (``kdjax.distill.dsa.DIGITS``); DC/DSA draw a fresh network every ``outer_loop``
  steps and train it ``inner_steps`` SGD steps (lr 0.01) on the synthetic set between
  matchings (the papers' outer/inner loops, shortened for 2 CPU cores). Measured figures:
  docs/dd_baselines.md."""
  c = rfad_base(per_class)
  c.method = method
  del c["rfad"]
  c.optimizer = common.optimizer(
    "sgd", 1.0 if method == "dm" else 0.1, schedule="constant", momentum=0.5
  )
  block = {
    "per_class": per_class,
    "width": 32,
    "depth": 3,
    "normalization": "instance",
    "augment": "none" if method == "dc" else "color_crop_cutout_scale_rotate",
    "reg": 1e-4,
    "label_offset": 0.1,
    "target_batch_size": 256,
  }
  if method == "dm":
    # 1,000 steps at 10/class ran at ~0.3 steps/s on the loaded 2 cores (~50 min): 300.
    c.num_steps = 1000 if per_class == 1 else 300
  else:
    c.num_steps = 200
    block.update(
      {
        "outer_loop": 1 if per_class == 1 else 10,
        "inner_steps": 1 if per_class == 1 else 5,
        "model_learning_rate": 0.01,
        "real_per_class": 48,
      }
    )
  c[method] = ml_collections.ConfigDict(block)
  c.log_every = 20
  c.eval_every = c.checkpoint_every = 100
  return c


def matching_digits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A ``matching_base`` config on the 8x8 digits: 2-block ConvNets (8x8 -> 2x2) for the
  matching and the finite networks, shifts of at most one pixel (as ``rfad_digits``)."""
  c.dataset.name = "digits"
  c[c.method].depth = 2
  c.evaluation.update({"depth": 2, "max_shift": 1})
  return c


def matching_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``distill_runlocal`` plus tiny matching networks and real batches."""
  distill_runlocal(c)
  c[c.method].update({"width": 8, "depth": 2, "target_batch_size": 64})
  if c.method != "dm":
    c[c.method].update({"outer_loop": 2, "inner_steps": 2, "real_per_class": 16})
  return c
