r"""Typed config blocks: the one place where jobs read and check their config.

Every job reads its config through these frozen dataclasses, modelled on
:class:`kdjax.distill.evaluation.Protocol`. ``Block.from_config(config.block, path)``
checks every field and raises a ``ValueError`` that names the full key and what was
expected, e.g. ``config.optimizer.learning_rate must be a finite number > 0, got nan``.
The checks are pure Python (no jax op runs), so a job's ``validate(config)`` takes
milliseconds and runs before the job creates, locks or writes anything in its workdir.

* :class:`Loop`: the step-loop keys every job has at the top level of its config (the one
  vocabulary of every job): ``num_steps``, ``log_every``, ``eval_every``,
  ``checkpoint_every``, ``keep_checkpoints``, ``seed``.
* :class:`Optimizer`: ``config.optimizer`` (and ``config.teacher.optimizer`` and
  ``config.student.optimizer``), one shape for every job: ``name`` ('sgd' | 'adam' |
  'adamw'), the schedule of :func:`kdjax.jobs.schedules.make_schedule`, ``momentum``,
  ``nesterov``, ``weight_decay``, ``grad_clip_norm``; :meth:`Optimizer.make` builds it.
* :class:`Dataset`: ``config.dataset`` of the image jobs (``kdjax.jobs.data_loading``);
  :class:`TextDataset`: ``config.dataset`` of the LM job (``kdjax.data.text``).
* :class:`Evaluation`: ``config.evaluation``, the finite-network block of the
  dataset-distillation jobs (KIP, RFAD, FRePo): :func:`kdjax.distill.evaluation.evaluate`.

The variant switch of a job is ``config.method`` (the train job's 'supervised' / 'kd' /
'born_again' / 'self_distill', the distill job's 'rfad' / 'frepo' / 'dm' / 'dc' / 'dsa',
the theory job's paper), and ``config.methods`` for the LM job's list of students.

Configs written by an older kdjax: :func:`check_migrated` names every old key of a
workdir's ``config.json`` with its new name (:data:`MIGRATIONS`); there is no
compatibility shim.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
  "MIGRATIONS",
  "Loop",
  "Optimizer",
  "Dataset",
  "TextDataset",
  "Evaluation",
  "check_bool",
  "check_int",
  "check_number",
  "check_choice",
  "check_keys",
  "check_model",
  "check_migrated",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
PREPROCESSING = ("none", "standardize", "zca")
TOKENIZERS = ("byte", "sentencepiece", "hf")
EVALUATION_NETWORKS = ("convnet", "mlp", "resnet")
EVALUATION_LOSSES = ("xent", "mse")
EVALUATION_OPTIMIZERS = ("adam", "sgd")

# Old dotted key -> its new name (or what to do instead). A workdir whose config.json has
# an old key gets a ValueError naming both (check_migrated), never a silent translation.
MIGRATIONS = {
  "mode": "method",
  "modes": "methods",
  "experiment": "method",
  "transfer": "evaluation (enabled, network, width, depth, num_steps, learning_rate, ...)",
  "evaluation.steps": "evaluation.num_steps",
  **{
    f"{method}.{key}": f"optimizer.{key}"
    for method in ("kip", "rfad", "frepo")
    for key in ("learning_rate", "schedule", "warmup_steps", "final_lr_fraction")
  },
}


def _name(path: str, key: str | None = None) -> str:
  return f"{path}.{key}" if key else path


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(value: Any, path: str) -> bool:
  """``value`` if it is a bool; a ValueError names ``path`` otherwise."""
  if not isinstance(value, bool):
    raise ValueError(f"{path} must be true or false, got {value!r}")
  return value


def check_int(value: Any, path: str, *, minimum: int = 1) -> int:
  """``value`` as an int ``>= minimum``; a ValueError names ``path`` otherwise."""
  ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if not ok or value < minimum:
    raise ValueError(f"{path} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def check_number(
  value: Any,
  path: str,
  *,
  above: float | None = None,
  minimum: float | None = None,
  maximum: float | None = None,
  below: float | None = None,
) -> float:
  """``value`` as a finite float within the given bounds (``above``/``below`` exclusive,
  ``minimum``/``maximum`` inclusive); a ValueError names ``path`` and the range."""
  ok = _is_number(value) and math.isfinite(value)
  ok = ok and (above is None or value > above) and (minimum is None or value >= minimum)
  ok = ok and (maximum is None or value <= maximum) and (below is None or value < below)
  if not ok:
    bounds = [
      f"{op} {bound:g}"
      for op, bound in ((">", above), (">=", minimum), ("<=", maximum), ("<", below))
      if bound is not None
    ]
    raise ValueError(
      f"{path} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}"
    )
  return float(value)


def check_choice(value: Any, path: str, choices: Iterable[str]) -> str:
  """``value`` if it is one of ``choices``; a ValueError lists them otherwise."""
  choices = list(choices)
  if value not in choices:
    raise ValueError(f"{path} must be one of {choices}, got {value!r}")
  return value


def check_keys(block: Any, path: str, known: Iterable[str]) -> dict:
  """``block`` as a dict; a ValueError names missing keys and keys no one reads."""
  values = _as_dict(block, path)
  known = list(known)
  missing = [k for k in known if k not in values]
  unknown = sorted(set(values) - set(known))
  if missing or unknown:
    old = [f"{path}.{k} is now {MIGRATIONS[_old(path, k)]}" for k in unknown if _old(path, k)]
    raise ValueError(
      f"{path} must have exactly the keys {known}: "
      + "; ".join(
        ([f"missing {missing}"] if missing else [])
        + ([f"unknown {unknown}"] if unknown else [])
        + old
      )
    )
  return values


def _as_dict(block: Any, path: str) -> dict:
  """The top level of a config block (a ConfigDict or a mapping) as a dict."""
  if not isinstance(block, Mapping) and not hasattr(block, "keys"):
    raise ValueError(f"{path} must be a config block (a dict), got {block!r}")
  return {key: block[key] for key in block.keys()}


def _old(path: str, key: str) -> str | None:
  dotted = f"{path.split('.', 1)[1]}.{key}" if "." in path else key
  return dotted if dotted in MIGRATIONS else None


def _fields(cls) -> list[str]:
  return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class Loop:
  """The step-loop keys of a job (top level of its config).

  Attributes:
    num_steps: optimisation steps (>= 1).
    log_every: steps between metrics records (>= 1).
    eval_every: steps between evaluations (>= 1).
    checkpoint_every: steps between checkpoints (>= 1).
    keep_checkpoints: checkpoints kept on disk (>= 1).
    seed: the seed every random key derives from (>= 0).
  """

  num_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  seed: int

  @classmethod
  def from_config(cls, config: Any, path: str = "config") -> Loop:
    values = {k: config[k] if k in config else None for k in _fields(cls)}
    for key, value in values.items():
      if value is None:
        raise ValueError(f"{_name(path, key)} is missing")
    return cls(
      **{
        k: check_int(v, _name(path, k), minimum=0 if k == "seed" else 1) for k, v in values.items()
      }
    )


@dataclasses.dataclass(frozen=True)
class Optimizer:
  r"""The ``optimizer`` block of every job.

  Attributes:
    name: 'sgd', 'adam' or 'adamw'.
    learning_rate: peak learning rate, finite and > 0.
    schedule: 'constant' or 'cosine' (:func:`kdjax.jobs.schedules.make_schedule`).
    warmup_steps: linear warmup from 0 (>= 0; 0 = none).
    final_lr_fraction: the cosine floor as a fraction of ``learning_rate``, in [0, 1].
    momentum: SGD momentum in [0, 1) (0 = none; Nesterov when ``nesterov``).
    nesterov: Nesterov momentum for SGD.
    weight_decay: >= 0; coupled L2 for 'sgd' and 'adam', decoupled for 'adamw'.
    grad_clip_norm: global-norm clipping, >= 0 (0 = off).
  """

  name: str
  learning_rate: float
  schedule: str
  warmup_steps: int
  final_lr_fraction: float
  momentum: float
  nesterov: bool
  weight_decay: float
  grad_clip_norm: float

  @classmethod
  def from_config(cls, block: Any, path: str = "config.optimizer") -> Optimizer:
    v = check_keys(block, path, _fields(cls))
    check_bool(v["nesterov"], f"{path}.nesterov")
    return cls(
      name=check_choice(v["name"], f"{path}.name", OPTIMIZERS),
      learning_rate=check_number(v["learning_rate"], f"{path}.learning_rate", above=0),
      schedule=check_choice(v["schedule"], f"{path}.schedule", SCHEDULES),
      warmup_steps=check_int(v["warmup_steps"], f"{path}.warmup_steps", minimum=0),
      final_lr_fraction=check_number(
        v["final_lr_fraction"], f"{path}.final_lr_fraction", minimum=0, maximum=1
      ),
      momentum=check_number(v["momentum"], f"{path}.momentum", minimum=0, below=1),
      nesterov=v["nesterov"],
      weight_decay=check_number(v["weight_decay"], f"{path}.weight_decay", minimum=0),
      grad_clip_norm=check_number(v["grad_clip_norm"], f"{path}.grad_clip_norm", minimum=0),
    )

  def make(self, num_steps: int) -> Any:
    """The optax transformation over ``num_steps`` steps:
    ``chain([clip_by_global_norm], [add_decayed_weights], sgd | adam | adamw)``."""
    import optax  # pylint: disable=import-outside-toplevel

    from kdjax.jobs import schedules  # pylint: disable=import-outside-toplevel

    lr = schedules.make_schedule(self, num_steps)
    parts = [optax.clip_by_global_norm(self.grad_clip_norm)] if self.grad_clip_norm > 0 else []
    if self.name != "adamw" and self.weight_decay:
      parts.append(optax.add_decayed_weights(self.weight_decay))
    if self.name == "sgd":
      parts.append(optax.sgd(lr, momentum=self.momentum or None, nesterov=self.nesterov))
    elif self.name == "adam":
      parts.append(optax.adam(lr))
    else:
      parts.append(optax.adamw(lr, weight_decay=self.weight_decay))
    return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """The ``dataset`` block of the image jobs (train, kip, distill).

  Attributes:
    name: embedded ``mnist5k``/``digits`` or a tensorflow-datasets name.
    data_dir: the tfds data directory ('' = tfds' default).
    max_train: training examples kept (>= 0; 0 = all).
    max_test: test examples kept (>= 0; 0 = all).
    preprocess: 'none', 'standardize' or 'zca' (``kdjax.data.preprocess_dataset``).
    zca_strength: the ZCA regulariser, finite and > 0.
  """

  name: str
  data_dir: str
  max_train: int
  max_test: int
  preprocess: str
  zca_strength: float

  @classmethod
  def from_config(cls, block: Any, path: str = "config.dataset") -> Dataset:
    v = check_keys(block, path, _fields(cls))
    for key in ("name", "data_dir"):
      if not isinstance(v[key], str):
        raise ValueError(f"{path}.{key} must be a string, got {v[key]!r}")
    if not v["name"]:
      raise ValueError(f"{path}.name must name a dataset, got ''")
    return cls(
      name=v["name"],
      data_dir=v["data_dir"],
      max_train=check_int(v["max_train"], f"{path}.max_train", minimum=0),
      max_test=check_int(v["max_test"], f"{path}.max_test", minimum=0),
      preprocess=check_choice(v["preprocess"], f"{path}.preprocess", PREPROCESSING),
      zca_strength=check_number(v["zca_strength"], f"{path}.zca_strength", above=0),
    )


@dataclasses.dataclass(frozen=True)
class TextDataset:
  """The ``dataset`` block of the LM job (``kdjax.data.text``).

  Attributes:
    name: 'pystdlib' (the embedded corpus), 'text_files' (local .txt / .jsonl files) or a
      tensorflow-datasets text dataset.
    seq_len: tokens per training window (>= 2).
    data_dir: the tfds data directory ('' = tfds' default).
    max_documents: documents kept (>= 0; 0 = all).
    tokenizer: 'byte', 'sentencepiece' or 'hf' (the ``tokenizer.json`` of
      ``teacher.hf_path``).
    spm_model: the SentencePiece model path ('….model'; trained there when missing).
    spm_vocab_size: its vocabulary (>= 8 for 'sentencepiece'; 0 = unused by 'byte').
    spm_train_documents: documents it is trained on (>= 1 for 'sentencepiece'; 0 = unused).
    files: 'text_files' only: a glob of .txt / .jsonl files (required there, '' elsewhere).
    validation_files: 'text_files' only: the validation glob ('' = a 5% hash split of files).
  """

  name: str
  seq_len: int
  data_dir: str
  max_documents: int
  tokenizer: str
  spm_model: str
  spm_vocab_size: int
  spm_train_documents: int
  files: str
  validation_files: str

  @classmethod
  def from_config(cls, block: Any, path: str = "config.dataset") -> TextDataset:
    v = check_keys(block, path, _fields(cls))
    for key in ("name", "data_dir", "spm_model", "files", "validation_files"):
      if not isinstance(v[key], str):
        raise ValueError(f"{path}.{key} must be a string, got {v[key]!r}")
    if v["name"] == "text_files" and not v["files"]:
      raise ValueError(f"{path}.files must be a glob of .txt / .jsonl files for 'text_files'")
    for key in ("files", "validation_files"):
      if v["name"] != "text_files" and v[key]:
        raise ValueError(
          f"{path}.{key}={v[key]!r} would be ignored by {path}.name={v['name']!r}: "
          "it is read by 'text_files' only"
        )
    sentencepiece = check_choice(v["tokenizer"], f"{path}.tokenizer", TOKENIZERS) == "sentencepiece"
    if sentencepiece and not v["spm_model"].endswith(".model"):
      raise ValueError(f"{path}.spm_model must be a path ending in .model, got {v['spm_model']!r}")
    return cls(
      name=v["name"],
      seq_len=check_int(v["seq_len"], f"{path}.seq_len", minimum=2),
      data_dir=v["data_dir"],
      max_documents=check_int(v["max_documents"], f"{path}.max_documents", minimum=0),
      tokenizer=v["tokenizer"],
      spm_model=v["spm_model"],
      spm_vocab_size=check_int(
        v["spm_vocab_size"], f"{path}.spm_vocab_size", minimum=8 if sentencepiece else 0
      ),
      spm_train_documents=check_int(
        v["spm_train_documents"], f"{path}.spm_train_documents", minimum=int(sentencepiece)
      ),
      files=v["files"],
      validation_files=v["validation_files"],
    )


@dataclasses.dataclass(frozen=True)
class Evaluation:
  r"""The ``evaluation`` block: finite networks trained from scratch on a distilled set.

  The fields of :class:`kdjax.distill.evaluation.Protocol` (``num_steps`` is its
  ``steps``), plus ``enabled``; ``batch_size = 0`` means the whole set in one batch.

  Attributes:
    enabled: whether the job trains the finite networks at all.
    network: 'convnet', 'mlp' or 'resnet'.
    width: channels or hidden units (>= 1).
    depth: ConvNet blocks or MLP hidden layers (>= 1).
    num_steps: Adam steps (>= 1).
    batch_size: minibatch size (>= 0; 0 = full batch).
    learning_rate: peak Adam learning rate, finite and > 0 (cosine-decayed to 0).
    weight_decay: decoupled weight decay, >= 0.
    loss: 'xent' or 'mse'.
    max_shift: random translations in pixels (>= 0).
    seeds: networks trained from independent initialisations (>= 1).
    augment: 'none' or a DSA strategy (``kdjax.distill.dsa``, checked by the Protocol).
    epochs: 0 (train ``num_steps`` steps) or passes over the set (>= 0).
    optimizer: 'adam' (cosine decay) or 'sgd' (the field protocol's step decay).
  """

  enabled: bool
  network: str
  width: int
  depth: int
  num_steps: int
  batch_size: int
  learning_rate: float
  weight_decay: float
  loss: str
  max_shift: int
  seeds: int
  augment: str
  epochs: int
  optimizer: str

  @classmethod
  def from_config(cls, block: Any, path: str = "config.evaluation") -> Evaluation:
    v = check_keys(block, path, _fields(cls))
    check_bool(v["enabled"], f"{path}.enabled")
    ints = {"width": 1, "depth": 1, "num_steps": 1, "batch_size": 0, "max_shift": 0, "seeds": 1}
    ints["epochs"] = 0
    if not isinstance(v["augment"], str):
      raise ValueError(f"{path}.augment must be 'none' or a DSA strategy, got {v['augment']!r}")
    return cls(
      enabled=v["enabled"],
      augment=v["augment"],
      optimizer=check_choice(v["optimizer"], f"{path}.optimizer", EVALUATION_OPTIMIZERS),
      network=check_choice(v["network"], f"{path}.network", EVALUATION_NETWORKS),
      loss=check_choice(v["loss"], f"{path}.loss", EVALUATION_LOSSES),
      learning_rate=check_number(v["learning_rate"], f"{path}.learning_rate", above=0),
      weight_decay=check_number(v["weight_decay"], f"{path}.weight_decay", minimum=0),
      **{k: check_int(v[k], f"{path}.{k}", minimum=m) for k, m in ints.items()},
    )


def check_model(block: Any, path: str) -> dict:
  """Checks the numbers of a ``model`` block: every integer (and every entry of a tuple of
  integers) >= 1, ``dropout_rate`` in [0, 1); returns it as a dict. The model's name and
  attributes are checked by ``kdjax.models.from_config``."""
  values = _as_dict(block, path)
  for key, value in values.items():
    if key == "dropout_rate":
      check_number(value, f"{path}.{key}", minimum=0, below=1)
    elif isinstance(value, (tuple, list)):
      for i, item in enumerate(value):
        check_int(item, f"{path}.{key}[{i}]")
    elif _is_number(value):
      if isinstance(value, numbers.Integral):
        check_int(value, f"{path}.{key}")
      else:
        check_number(value, f"{path}.{key}", above=0)
  return values


def _has(tree: Any, dotted: str) -> bool:
  """Whether the nested mapping or ConfigDict (not a ``Mapping``) ``tree`` has ``dotted``."""
  for part in dotted.split("."):
    if not (isinstance(tree, Mapping) or hasattr(tree, "keys")) or part not in tree:
      return False
    tree = tree[part]
  return True


def check_migrated(recorded: Mapping[str, Any], where: str = "the config") -> None:
  """Raises a ValueError naming every old key (:data:`MIGRATIONS`) of a config.

  Args:
    recorded: a config: the job's own, or one read from a workdir's ``config.json``.
    where: what holds it, quoted in the message (``"the config"``, or e.g.
      ``"workdir 'runs/kd'"`` for a recorded one, whose message says how to go on).
  """
  old = [f"{k} -> {MIGRATIONS[k]}" for k in MIGRATIONS if _has(recorded, k)]
  if not old:
    return
  if where == "the config":
    raise ValueError(
      f"the config has keys of an older kdjax ({'; '.join(old)}); rename them "
      "(experiments/common.py has the current blocks)"
    )
  raise ValueError(
    f"{where} holds a config written by an older kdjax, with renamed keys "
    f"({'; '.join(old)}); kdjax does not translate them: start a new --workdir "
    "(or rename the keys of its config.json if its checkpoints are still wanted)"
  )
