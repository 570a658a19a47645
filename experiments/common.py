"""What the ``experiments/*.py`` configs share (big_vision style): ``parse_arg``, the blocks
every job reads the same way (``dataset``, ``optimizer``, ``evaluation``: the typed blocks
of ``kdjax.jobs.config``) and the base configs of the train job (``train_base``,
``train_runlocal``, ``cifar_kd``), the theory jobs (``theory_base``) and the LM job
(``lm_base``, ``lm_runlocal``). The KIP and distill jobs' base configs are in
``experiments.distill_base``.

``parse_arg`` reads the ``:arg`` of ``--config=experiments/x.py:arg``: comma-separated
items, each ``key=value`` or a bare word. A bare word that names a boolean key sets it
True (``runlocal``); any other bare word fills the next of the config's ``positional``
keys (``kip_cifar10.py:10,conv`` sets ``per_class=10, kernel='conv'``). Values are typed
like their defaults.
"""

from __future__ import annotations

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


def optimizer(
  name: str,
  learning_rate: float,
  *,
  schedule: str = "cosine",
  warmup_steps: int = 0,
  final_lr_fraction: float = 0.0,
  momentum: float = 0.9,
  nesterov: bool = False,
  weight_decay: float = 0.0,
  grad_clip_norm: float = 0.0,
) -> ml_collections.ConfigDict:
  """The ``optimizer`` block of every job (``kdjax.jobs.config.Optimizer``): ``name`` ('sgd' |
  'adam' | 'adamw'), the learning-rate schedule, SGD momentum, weight decay, clipping."""
  return ml_collections.ConfigDict(
    {
      "name": name,
      "learning_rate": learning_rate,
      "schedule": schedule,
      "warmup_steps": warmup_steps,
      "final_lr_fraction": final_lr_fraction,
      "momentum": momentum,
      "nesterov": nesterov,
      "weight_decay": weight_decay,
      "grad_clip_norm": grad_clip_norm,
    }
  )


def evaluation(
  *,
  network: str = "convnet",
  width: int = 32,
  depth: int = 3,
  num_steps: int = 1000,
  batch_size: int = 256,
  learning_rate: float = 1e-3,
  weight_decay: float = 0.0,
  loss: str = "xent",
  max_shift: int = 2,
  seeds: int = 3,
  enabled: bool = True,
  augment: str = "none",
  epochs: int = 0,
  optimizer: str = "adam",
) -> ml_collections.ConfigDict:
  """The ``evaluation`` block of the dataset-distillation jobs (``kdjax.jobs.config.Evaluation``,
  run by ``kdjax.distill.evaluation``): finite networks trained from scratch on the distilled
  set; ``batch_size=0`` trains on the whole set at once. The defaults are the pinned CPU
  protocol; :func:`field_evaluation` turns a block into the papers' field protocol."""
  return ml_collections.ConfigDict(
    {
      "augment": augment,
      "epochs": epochs,
      "optimizer": optimizer,
      "enabled": enabled,
      "network": network,
      "width": width,
      "depth": depth,
      "num_steps": num_steps,
      "batch_size": batch_size,
      "learning_rate": learning_rate,
      "weight_decay": weight_decay,
      "loss": loss,
      "max_shift": max_shift,
      "seeds": seeds,
    }
  )


EVALUATION_PROTOCOLS = ("pinned", "field")


def field_evaluation(
  block: ml_collections.ConfigDict, protocol: str = "field"
) -> ml_collections.ConfigDict:
  """Sets an ``evaluation`` block to ``protocol``, in place: 'pinned' leaves it (the CPU
  protocol of the configs); 'field' sets the DC/DSA/DM/MTT papers' protocol
  (``kdjax.distill.evaluation.FIELD``: ConvNet width 128, SGD with momentum 0.9, lr 0.01
  divided by 10 at the half, weight decay 5e-4, batches of 256, 1,000 epochs, DSA
  augmentation without flips instead of shifts), keeping the network's depth, loss and
  seeds. For accelerators and comparison with published numbers (docs/dd_baselines.md)."""
  if protocol not in EVALUATION_PROTOCOLS:
    raise ValueError(f"protocol must be one of {list(EVALUATION_PROTOCOLS)}, got {protocol!r}")
  if protocol == "field":
    block.update(
      {
        "width": 128,
        "batch_size": 256,
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "weight_decay": 5e-4,
        "epochs": 1000,
        "max_shift": 0,
        "augment": "color_crop_cutout_scale_rotate",
      }
    )
  return block


def train_base(
  *,
  method: str,
  dataset_name: str,
  model: dict,
  seed: int,
  num_steps: int,
  batch_size: int,
  learning_rate: float,
  optimizer_name: str = "adam",
) -> ml_collections.ConfigDict:
  """A complete config of the train job (``kdjax.train.train_job``); experiments adjust it.

  ``method`` is 'supervised', 'kd', 'born_again' or 'self_distill'; the method's own block
  (``kd`` + ``teacher`` + ``teacher_workdir``, ``born_again``, ``self_distill``, with
  ``generations``) is added by the experiment.
  """
  c = ml_collections.ConfigDict()
  c.job = "train"
  c.method = method
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
  c.optimizer = optimizer(optimizer_name, learning_rate)
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


def theory_base(method: str) -> ml_collections.ConfigDict:
  """The head of a theory job's config (``kdjax.theory``): ``job``, ``method`` and seed 0;
  the theory_* experiments add their blocks."""
  c = ml_collections.ConfigDict()
  c.job = "theory"
  c.method = method
  c.seed = 0
  return c


def mnist5k_generations(
  method: str, *, seed: int, generations: int, runlocal: bool
) -> ml_collections.ConfigDict:
  """The train config of the generation experiments (born-again, self-distillation):
  ``generations`` MLPs (256 hidden units) on mnist5k, 1,500 Adam steps (lr 1e-3) of batch
  64 each; ``runlocal`` shrinks it (32 hidden units). The caller adds the method's block."""
  c = train_base(
    method=method,
    dataset_name="mnist5k",
    model={"name": "mlp", "num_classes": 10, "hidden": (256,)},
    seed=seed,
    num_steps=1500,
    batch_size=64,
    learning_rate=1e-3,
  )
  c.generations = generations
  if runlocal:
    train_runlocal(c)
    c.model.hidden = (32,)
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
    method="supervised" if a.student_only else "kd",
    dataset_name=dataset_name,
    model={"name": "resnet8x4", "num_classes": num_classes},
    seed=a.seed,
    num_steps=steps,
    batch_size=64,
    learning_rate=0.05,
    optimizer_name="sgd",
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


def lm_base(
  *, seed: int = 0, lam: float = 0.5, beta: float = 0.5, methods: str = "ce,token_kd,seq_kd,gkd"
) -> ml_collections.ConfigDict:
  """The LM job's config with every key (pystdlib sizes); the LM experiments start here."""
  c = ml_collections.ConfigDict()
  c.job = "lm"
  c.seed = seed
  c.dataset = {
    "name": "pystdlib",
    "seq_len": 64,
    "data_dir": "",
    "max_documents": 0,
    "tokenizer": "byte",
    "spm_model": "",
    "spm_vocab_size": 0,
    "spm_train_documents": 0,
    "files": "",  # text_files: glob of .txt / .jsonl files
    "validation_files": "",  # text_files: validation glob ('' = a 5% hash split of files)
  }
  c.dtype = "float32"  # parameters and compute of llama / gpt2 models (bfloat16); loss float32
  c.batch_size = 32
  c.micro_batches = 1  # gradient accumulation (exact: sums and token counts)
  c.fsdp = True  # kdjax.train.lm.LM_RULES; False replicates the parameters
  c.eval_sequences = 128  # validation windows of dataset.seq_len for bits per byte
  c.eval_batch_size = 64
  c.num_sample_prompts = 32  # teacher NLL of samples: validation prompts (a multiple of devices)
  c.log_every, c.eval_every, c.checkpoint_every, c.keep_checkpoints = 50, 100, 100, 2
  c.teacher_workdir = ""  # a finished lm run whose teacher to use instead
  adamw = optimizer(
    "adamw",
    2e-3,
    warmup_steps=50,
    final_lr_fraction=0.1,
    weight_decay=0.01,
    grad_clip_norm=1.0,
  ).to_dict()
  c.teacher = {
    "model": {
      "name": "transformer_lm",
      "vocab_size": 259,
      "max_len": 64,
      "embed_dim": 96,
      "num_layers": 3,
      "num_heads": 4,
      "mlp_dim": 384,
    },
    "num_steps": 600,
    "optimizer": adamw,
    "hf_path": "",  # a Hugging Face checkpoint directory: the teacher (not trained)
  }
  c.student = {
    "model": {
      "name": "transformer_lm",
      "vocab_size": 259,
      "max_len": 64,
      "embed_dim": 48,
      "num_layers": 2,
      "num_heads": 2,
      "mlp_dim": 192,
    },
    "num_steps": 200,
    "optimizer": dict(adamw),
    "hf_path": "",  # start from this Hugging Face checkpoint
    "init_from_teacher": "",  # 'every_other' or '0,2': teacher embeddings + these layers
  }
  c.methods = methods
  c.distill = {
    "divergence": "kl",
    "loss_temperature": 1.0,
    "beta": beta,
    "alpha": 0.1,
    "lam": lam,
    "prompt_len": 16,
    "sample_temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "chunked": False,
    "chunk_size": 1024,
    "adaspec_fraction": 0.4,  # AdaSPEC (method 'adaspec'): share of tokens trained on
    "adaspec_reference": "token_kd",  # the method whose student selects them
  }
  return c


def lm_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks an LM config in place to a smoke run of seconds to a few minutes."""
  c.dataset.seq_len = 32
  c.batch_size = 16
  c.eval_sequences, c.eval_batch_size, c.num_sample_prompts = 32, 32, 16
  c.log_every, c.eval_every, c.checkpoint_every = 10, 20, 20
  c.teacher.model.update(max_len=32, embed_dim=32, num_layers=2, num_heads=2, mlp_dim=64)
  c.student.model.update(max_len=32, embed_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
  c.teacher.num_steps, c.student.num_steps = 60, 20
  c.teacher.optimizer.warmup_steps = c.student.optimizer.warmup_steps = 5
  c.distill.prompt_len = 8
  return c
