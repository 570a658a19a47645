r"""The configuration checks of the language-model distillation job (:mod:`kdjax.train.lm_job`).

:func:`validate` checks every key the job reads before any work (:mod:`kdjax.train.lm_job`
re-exports it, with :func:`check_models` and ``METHODS``); :func:`check_models` compares the
models with the tokenizer once both are known. The finished teacher of
``config.teacher_workdir`` is read here too (:func:`_with_finished_teacher`), since its
teacher block is validated with the rest.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections

from kdjax import losses, models
from kdjax.jobs import config as config_lib, loop as jobs_loop, workdir as workdir_lib

METHODS = ("ce", "token_kd", "skew_kl", "seq_kd", "gkd", "adaspec", "uld", "alm")
# Methods whose trained student can be AdaSPEC's reference (same model, same vocabulary).
_REFERENCES = ("ce", "token_kd", "skew_kl", "seq_kd", "gkd")
_SUMMARY = "summary.json"
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_HF_FAMILIES = ("llama", "gpt2")


def _methods(config) -> list[str]:
  methods = [m for m in str(config.methods).split(",") if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown or len(set(methods)) != len(methods):
    raise ValueError(
      f"config.methods must be distinct names from {METHODS}, got {config.methods!r}"
    )
  return methods


def validate(config: ml_collections.ConfigDict, vocab_size: int | None = None) -> None:
  """Checks every key the job reads, of every phase (teacher and every student), before any
  work; raises ValueError naming the key. Pure Python: nothing is loaded or written.

  With ``config.teacher_workdir``, the teacher block is the finished run's there (read
  only, checked too). ``vocab_size`` is the tokenizer's (compared with the models'
  ``vocab_size`` by :func:`check_models`); ``run`` passes it once the tokenizer is loaded,
  the launcher's early check does not. Cross-tokenizer configs (methods ``uld``/``alm``,
  ``config.xtok``) are :func:`kdjax.train.xtok.validate`'s.
  """
  from kdjax.train import xtok  # (imports lm_job, which imports this module)

  if xtok.enabled(config):
    xtok.validate(config)
    return
  _check_keys(config)
  if config.teacher_workdir:
    _check_keys(_with_finished_teacher(config))
  if vocab_size is not None:
    check_models(config, vocab_size)


def _check_keys(config: ml_collections.ConfigDict) -> None:
  config_lib.check_migrated(config, "the config")
  check = config_lib.check_int
  check(config.seed, "config.seed", minimum=0)
  for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    check(config[key], f"config.{key}")
  for key in ("eval_sequences", "eval_batch_size", "micro_batches"):
    check(config[key], f"config.{key}")
  if str(config.dtype) not in _DTYPES:
    raise ValueError(f"config.dtype must be one of {sorted(_DTYPES)}, got {config.dtype!r}")
  if str(config.teacher.hf_path) and config.teacher_workdir:
    raise ValueError("config.teacher.hf_path and config.teacher_workdir exclude each other")
  if str(config.student.hf_path) and str(config.student.init_from_teacher):
    raise ValueError(
      "config.student.hf_path and config.student.init_from_teacher exclude each other"
    )
  if str(config.student.init_from_teacher) and not str(config.teacher.hf_path):
    raise ValueError("config.student.init_from_teacher needs config.teacher.hf_path")
  seq_len = config_lib.TextDataset.from_config(config.dataset).seq_len
  d = config.distill
  for key in ("lam", "beta", "alpha"):
    config_lib.check_number(d[key], f"config.distill.{key}", minimum=0, maximum=1)
  for key in ("loss_temperature", "sample_temperature"):
    config_lib.check_number(d[key], f"config.distill.{key}", above=0)
  check(d.top_k, "config.distill.top_k", minimum=0)
  config_lib.check_number(d.top_p, "config.distill.top_p", above=0, maximum=1)
  check(d.chunk_size, "config.distill.chunk_size")
  prompt_len = check(d.prompt_len, "config.distill.prompt_len")
  if prompt_len >= seq_len:
    raise ValueError(
      f"config.distill.prompt_len must be in [1, dataset.seq_len={seq_len}), got {prompt_len}"
    )
  for role in ("teacher", "student"):
    if _pretrained_role(config, role):  # the checkpoint's model (check_models)
      if len(config[role].model):
        raise ValueError(
          f"config.{role}.model would be ignored: {role}'s model comes from its Hugging Face "
          f"checkpoint; leave the block empty (as experiments/lm_kd_hf.py does)"
        )
    else:
      model = config_lib.check_model(config[role].model, f"config.{role}.model")
      models.from_config(model)
      if seq_len > int(model["max_len"]):
        raise ValueError(
          f"config.dataset.seq_len={seq_len} does not fit config.{role}.model.max_len="
          f"{model['max_len']}"
        )
      if str(config.dtype) != "float32" and model["name"] not in _HF_FAMILIES:
        raise ValueError(
          f"config.dtype={config.dtype!r} needs a llama or gpt2 model, "
          f"config.{role}.model.name is {model['name']!r}"
        )
    check(config[role].num_steps, f"config.{role}.num_steps")
    config_lib.Optimizer.from_config(config[role].optimizer, f"config.{role}.optimizer")
  if not (_pretrained_role(config, "teacher") or _pretrained_role(config, "student")):
    _check_one_vocabulary(
      int(config.teacher.model.vocab_size), int(config.student.model.vocab_size)
    )
  per_step = jax.device_count() * int(config.micro_batches)
  if config_lib.check_int(config.batch_size, "config.batch_size") % per_step:
    raise ValueError(
      f"config.batch_size={config.batch_size} must be a positive multiple of "
      f"devices x micro_batches ({per_step})"
    )
  prompts = config_lib.check_int(config.num_sample_prompts, "config.num_sample_prompts")
  if prompts % jax.device_count():
    raise ValueError(
      f"config.num_sample_prompts={prompts} must be a positive multiple of the number of "
      f"devices ({jax.device_count()})"
    )
  if not isinstance(config.fsdp, bool) or not isinstance(d.chunked, bool):
    raise ValueError(
      f"config.fsdp and config.distill.chunked must be true or false, got "
      f"{config.fsdp!r}, {d.chunked!r}"
    )
  config_lib.check_number(d.adaspec_fraction, "config.distill.adaspec_fraction", above=0, maximum=1)
  methods = _methods(config)
  if "adaspec" in methods:
    reference = str(d.adaspec_reference)
    before = methods[: methods.index("adaspec")]
    if reference not in _REFERENCES or reference not in before:
      raise ValueError(
        f"config.distill.adaspec_reference={reference!r} must be one of {_REFERENCES} "
        f"listed before 'adaspec' in config.methods={config.methods!r}: AdaSPEC selects "
        "tokens with a student trained first"
      )
    if d.chunked:
      raise ValueError("config.distill.chunked is not supported by the 'adaspec' method")
  for method in ("token_kd", "skew_kl", "gkd", "adaspec"):
    if method in methods:
      args = _kd_arguments(config, method)
      shared = ("divergence", "temperature", "chunked", "chunk_size", "fraction")
      try:
        losses.get_divergence(
          args["divergence"],
          temperature=args["temperature"],
          **{k: v for k, v in args.items() if k not in shared},
        )
      except ValueError as err:
        raise ValueError(f"config.distill.divergence (method {method!r}): {err}") from None


def _pretrained_role(config: ml_collections.ConfigDict, role: str) -> bool:
  """Whether ``role``'s model comes from a Hugging Face checkpoint, not its ``model`` block."""
  if role == "teacher":
    return bool(str(config.teacher.hf_path))
  return bool(str(config.student.hf_path) or str(config.student.init_from_teacher))


def _check_one_vocabulary(t_vocab: int, s_vocab: int) -> None:
  if t_vocab != s_vocab:
    raise ValueError(
      f"vocabulary mismatch: teacher vocab_size={t_vocab}, student vocab_size={s_vocab}; "
      "token-level KD needs one vocabulary: distil across tokenizers with the "
      "cross-tokenizer modes instead"
    )


def check_models(
  config: ml_collections.ConfigDict, vocab_size: int, built: dict | None = None
) -> None:
  """Checks the models against the tokenizer once both are known (ValueError naming them).

  ``built`` maps a role to its model when it comes from a Hugging Face checkpoint
  (``teacher.hf_path``, ``student.hf_path`` / ``student.init_from_teacher``): its own
  vocabulary and max_len are checked instead of the config's ``model`` block. A model from
  a checkpoint may have a larger embedding than the tokenizer (padded vocabularies); one
  from the config must match it.
  """
  built = built or {}
  seq_len = int(config.dataset.seq_len)
  for role, model in built.items():
    if seq_len > int(model.max_len):
      raise ValueError(
        f"config.dataset.seq_len={seq_len} does not fit config.{role}.hf_path's "
        f"max_len={model.max_len}"
      )
  t_vocab = int(built.get("teacher", config.teacher.model).vocab_size)
  s_vocab = int(built.get("student", config.student.model).vocab_size)
  _check_one_vocabulary(t_vocab, s_vocab)
  if built and vocab_size > s_vocab:
    raise ValueError(
      f"the tokenizer has {vocab_size} tokens, more than the models' embedding "
      f"(vocab_size={s_vocab})"
    )
  if not built and s_vocab != vocab_size:
    raise ValueError(
      f"vocabulary mismatch: the tokenizer has {vocab_size} tokens, the models' "
      f"vocab_size={s_vocab} (config.teacher.model.vocab_size, config.student.model.vocab_size)"
    )
  if not 0 <= int(config.distill.top_k) <= s_vocab:
    raise ValueError(f"config.distill.top_k must be in [0, {s_vocab}], got {config.distill.top_k}")


def _kd_arguments(config, mode: str) -> dict:
  d = config.distill
  divergence = {"gkd": "jsd", "skew_kl": "skew_kl"}.get(mode, str(d.divergence))
  hyper = {
    "jsd": {"beta": float(d.beta)},
    "skew_kl": {"alpha": float(d.alpha)},
    "skew_reverse_kl": {"alpha": float(d.alpha)},
  }.get(divergence, {})
  return {
    "divergence": divergence,
    "temperature": float(d.loss_temperature),
    "chunked": bool(d.chunked),
    "chunk_size": int(d.chunk_size),
    **hyper,
    **({"fraction": float(d.adaspec_fraction)} if mode == "adaspec" else {}),
  }


def _load_teacher_config(teacher_workdir: str) -> ml_collections.ConfigDict:
  """The config of the lm run in ``teacher_workdir``, whose teacher phase is finished
  (:func:`kdjax.jobs.loop.finished`) and has its ``summary.json``."""
  phase_dir = os.path.join(teacher_workdir, "teacher")
  config_path = os.path.join(teacher_workdir, workdir_lib.CONFIG_FILE)
  config = None
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  if (
    config is None
    or "teacher" not in config
    or not jobs_loop.finished(phase_dir, int(config.teacher.num_steps))
    or not os.path.exists(os.path.join(phase_dir, _SUMMARY))
  ):
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r} holds no finished teacher "
      f"(no final checkpoint and teacher/{_SUMMARY}); run the lm job there first"
    )
  with open(config_path) as f:
    recorded = json.load(f)
  config_lib.check_migrated(recorded, f"config.teacher_workdir={teacher_workdir!r}")
  return ml_collections.ConfigDict(recorded)


def _with_finished_teacher(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with the teacher block of the finished run in ``config.teacher_workdir``."""
  teacher_config = _load_teacher_config(str(config.teacher_workdir))
  config = ml_collections.ConfigDict(config.to_dict())
  config.teacher = teacher_config.teacher
  return config
