"""What the ``experiments/*.py`` configs share (big_vision style): ``parse_arg`` and the
base configs of the train job (``train_base``, ``train_runlocal``, ``cifar_kd``) and of the
KIP job (``kip_base``).

``parse_arg`` reads the ``:arg`` of ``--config=experiments/x.py:arg``: comma-separated
items, each ``key=value`` or a bare word. A bare word that names a boolean key sets it
True (``runlocal``); any other bare word fills the next of the config's ``positional``
keys (``kip_cifar10.py:10,conv`` sets ``per_class=10, kernel='conv'``). Values are typed
like their defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

_TYPE_NAMES = {
  bool: "a boolean (true/false)",
  int: "an integer",
  float: "a number",
  str: "a string",
}


def _convert(key: str, text: str, default: Any, meaning: str | None) -> Any:
  """``text`` as the type of ``default``; a ValueError says what ``key`` means otherwise."""
  try:
    if isinstance(default, bool):
      lowered = text.lower()
      if lowered in ("1", "true", "yes", ""):
        return True
      if lowered in ("0", "false", "no"):
        return False
      raise ValueError(text)
    return type(default)(text)
  except ValueError:
    what = f"{key} ({meaning})" if meaning else key
    kind = _TYPE_NAMES.get(type(default), type(default).__name__)
    raise ValueError(f"config arg {text!r}: {what} must be {kind} such as {default!r}") from None


def parse_arg(
  arg: str | None,
  *,
  positional: Sequence[str] = (),
  help: Mapping[str, str] | None = None,  # pylint: disable=redefined-builtin
  **defaults: Any,
) -> ml_collections.ConfigDict:
  """Parses a config ``arg`` into a ConfigDict typed like ``defaults``.

  Args:
    arg: the text after ``:`` in ``--config=experiments/x.py:arg`` (None or '' gives the
      defaults), e.g. ``'runlocal,seed=3'`` or ``'10,conv'``.
    positional: keys that bare words fill, in order (e.g. ``('per_class', 'kernel')``).
    help: optional meaning of keys, quoted in error messages
      (``{'per_class': 'images per class'}``; keys it has beyond ``defaults`` are unused).
    **defaults: every accepted key with its default value (bool, int, float or str).

  Returns:
    A ConfigDict with one entry per key of ``defaults``.

  Raises:
    ValueError: an unknown key, a value that does not parse as its default's type, or
      a bare word that is neither a boolean key nor fills a positional key; the message
      says what the key means and its valid form.
  """
  help = dict(help or {})
  unknown = set(positional) - set(defaults)
  if unknown:
    raise ValueError(f"positional names keys without defaults: {sorted(unknown)}")
  values = dict(defaults)
  positional = list(positional)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, has_value, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not has_value:
      if isinstance(defaults.get(key), bool):
        text = ""
      elif positional:
        key, text = positional[0], item
      else:
        raise ValueError(f"unknown config arg {item!r}; known: {sorted(defaults)}")
    if key not in defaults:
      raise ValueError(f"unknown config arg {key!r}; known: {sorted(defaults)}")
    if key in positional:
      positional.remove(key)
    values[key] = _convert(key, text, defaults[key], help.get(key))
  return ml_collections.ConfigDict(values)


def dataset(
  name: str, *, preprocess: str = "none", max_train: int = 0, max_test: int = 0
) -> ml_collections.ConfigDict:
  """The ``dataset`` block of every job: ``name``, ``data_dir`` ('' = tfds default),
  ``max_train``/``max_test`` (0 = all), ``preprocess`` ('none' | 'standardize' | 'zca',
  ``kdjax.data.preprocess_dataset``) and ``zca_strength``."""
  return ml_collections.ConfigDict(
    {
      "name": name,
      "data_dir": "",
      "max_train": max_train,
      "max_test": max_test,
      "preprocess": preprocess,
      "zca_strength": 0.1,
    }
  )


def train_base(
  *,
  mode: str,
  dataset_name: str,
  model: dict,
  seed: int,
  num_steps: int,
  batch_size: int,
  learning_rate: float,
  optimizer: str = "adam",
) -> ml_collections.ConfigDict:
  """A complete config of the train job (``kdjax.train.train_job``); experiments adjust it.

  ``mode`` is 'supervised', 'kd', 'born_again' or 'self_distill'; the mode's own block
  (``kd`` + ``teacher`` + ``teacher_workdir``, ``born_again``, ``self_distill``, with
  ``generations``) is added by the experiment.
  """
  c = ml_collections.ConfigDict()
  c.job = "train"
  c.mode = mode
  c.seed = seed
  c.num_steps = num_steps
  c.batch_size = batch_size
  c.eval_batch_size = 512
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.label_smoothing = 0.0
  c.augment = "none"  # 'none' | 'shift' | 'crop_flip' (kdjax.train.augment)
  c.dataset = dataset(dataset_name)
  c.model = ml_collections.ConfigDict(model)
  c.optimizer = ml_collections.ConfigDict(
    {
      "name": optimizer,
      "learning_rate": learning_rate,
      "schedule": "cosine",
      "warmup_steps": 0,
      "final_lr_fraction": 0.0,
      "momentum": 0.9,
      "nesterov": False,
      "weight_decay": 0.0,
      "grad_clip_norm": 0.0,
    }
  )
  # (regex, kind) rules, kind in {'replicate', 'fsdp'}; see kdjax.train.sharding.
  c.sharding = ml_collections.ConfigDict({"rules": ()})
  return c


def train_runlocal(
  c: ml_collections.ConfigDict,
  *,
  num_steps: int = 20,
  batch_size: int = 32,
  max_train: int = 512,
  max_test: int = 256,
) -> ml_collections.ConfigDict:
  """Shrinks a train config in place to a seconds-long smoke run (tests reuse it)."""
  c.num_steps = num_steps
  c.batch_size = batch_size
  c.eval_batch_size = 128
  c.log_every = 5
  c.eval_every = 10
  c.checkpoint_every = 10
  c.dataset.max_train = max_train
  c.dataset.max_test = max_test
  return c


def cifar_kd(arg: str | None, *, dataset_name: str, num_classes: int) -> ml_collections.ConfigDict:
  """resnet32x4 -> resnet8x4 KD on CIFAR (Tian, Krishnan & Isola (2020), CRD benchmark setup).

  SGD (momentum 0.9, weight decay 5e-4, lr 0.05, cosine), batch 64, crop+flip
  augmentation, 240 epochs, ``kd_loss`` at T=4 with a 0.1 label term. Arg:
  ``runlocal`` (tiny ResNets, a few steps: for tests and tfds mock data),
  ``student_only``, ``seed=N``, ``temperature=T``, ``epochs=E``, ``loss=NAME``.
  """
  a = parse_arg(
    arg, runlocal=False, student_only=False, seed=0, temperature=4.0, epochs=240, loss="kd_loss"
  )
  steps = a.epochs * 50000 // 64
  c = train_base(
    mode="supervised" if a.student_only else "kd",
    dataset_name=dataset_name,
    model={"name": "resnet8x4", "num_classes": num_classes},
    seed=a.seed,
    num_steps=steps,
    batch_size=64,
    learning_rate=0.05,
    optimizer="sgd",
  )
  c.optimizer.weight_decay = 5e-4
  c.augment = "crop_flip"
  c.dataset.preprocess = "standardize"
  c.log_every, c.eval_every, c.checkpoint_every = 200, 5000, 5000
  c.kd = {
    "loss": a.loss,
    "loss_kwargs": {"temperature": a.temperature} if a.loss != "dkd_loss" else {},
    "kd_weight": 0.9,
    "ce_weight": 0.1,
  }
  c.teacher = {
    "model": {"name": "resnet32x4", "num_classes": num_classes},
    "optimizer": c.optimizer.to_dict(),
    "num_steps": steps,
    "augment": c.augment,
  }
  c.teacher_workdir = ""
  if a.runlocal:
    train_runlocal(c, num_steps=4, batch_size=16, max_train=64, max_test=32)
    c.eval_batch_size = 16
    c.log_every, c.eval_every, c.checkpoint_every = 2, 4, 4
    c.model = {"name": "resnet", "num_classes": num_classes, "depth": 8, "widths": (4, 4, 8, 8)}
    c.teacher.model = {
      "name": "resnet",
      "num_classes": num_classes,
      "depth": 8,
      "widths": (8, 8, 8, 8),
    }
    c.teacher.num_steps = 4
  return c


KIP_ARG_HELP = {"per_class": "images per class", "kernel": "the NTK architecture, fc or conv"}


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
  c.dataset = dataset("mnist5k", preprocess="standardize")
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
      "learning_rate": 0.03,
      "schedule": "cosine",
      "warmup_steps": 0,
      "final_lr_fraction": 0.01,
      "target_batch_size": 1000,
      "reg": 1e-6,
      "label_offset": 0.1,
      "label_solve": False,
    }
  )
  c.log_every = 100
  c.eval_every = 100
  c.checkpoint_every = 200
  c.keep_checkpoints = 2
  c.transfer = ml_collections.ConfigDict(
    {"enabled": True, "width": 512, "num_steps": 500, "learning_rate": 1e-3}
  )
  return c


def kip_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a KIP config in place to a seconds-long smoke run (tests reuse it)."""
  c.num_steps = 6
  c.dataset.max_train, c.dataset.max_test = 512, 256
  c.kip.target_batch_size = 64
  c.log_every = c.eval_every = c.checkpoint_every = 2
  c.keep_checkpoints = 3
  c.transfer.num_steps, c.transfer.width = 3, 16
  return c
