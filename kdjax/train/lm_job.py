r"""``run(config, workdir)``: the language-model distillation job (``config.job == 'lm'``).

One run trains (or loads) a teacher, then one student per entry of ``config.methods``:

* ``ce``: cross-entropy on the data (the baseline every student is compared with);
* ``token_kd``: teacher-forced token KD with ``config.distill.divergence`` at the loss
  temperature ``distill.loss_temperature`` (through the chunked loss when
  ``distill.chunked``);
* ``skew_kl``: the same with DistiLLM's skew KL(``distill.alpha``) (Ko et al. (2024));
* ``seq_kd``: cross-entropy on continuations the teacher samples from the data's first
  ``distill.prompt_len`` tokens at the *sampling* temperature
  ``distill.sample_temperature`` (Kim & Rush (2016), "Sequence-Level Knowledge
  Distillation");
* ``gkd``: on-policy GKD (Agarwal et al. (2024)): at each step, with probability
  ``distill.lam`` (drawn from ``(seed, step)``) the continuations are sampled from the
  student itself, else they are the data; the loss is the generalized JSD(``distill.beta``)
  of the teacher and the student on the continuation tokens only (prompt tokens masked).

The teacher lives in ``WORKDIR/teacher`` or, when ``config.teacher_workdir`` is set, is the
finished teacher of that earlier run (loaded read-only, frozen). Each model trains in its
own ``WORKDIR/<name>`` (config.json, metrics.jsonl, TensorBoard events, checkpoints/,
``curves.png``, ``summary.json``) and resumes from its checkpoints; a finished model is
not retrained. ``WORKDIR/summary.json`` is flat, ``"<model>/<figure>"`` (:func:`by_model`
groups it), with ``eval_bits_per_byte`` (validation bits per byte), ``teacher_nll_of_samples`` (the
teacher's NLL per token of the model's own samples, GKD's on-policy quality proxy),
``gap_closed`` (students: :math:`(b_{ce} - b) / (b_{ce} - b_{teacher})`, the fraction of
the teacher-student gap closed against the CE-only student at equal steps; needs ``ce``
in ``methods``), ``tokens_per_second`` and ``wall_time_s``; ``WORKDIR/metrics.jsonl`` holds
the same figures, one record per model (``step`` = its index: 0 the teacher, then
``methods`` in order, with ``model`` = its name), and ``WORKDIR/bits_per_byte.png`` compares
them.

SIGTERM (``kdjax.jobs.preemption``) makes the running model save its checkpoint and the
job raise ``Preempted``; the same command then resumes it. Batches, sampling keys, the
on-policy draws and dropout depend only on ``(seed, step)``, so a resumed run ends with
the figures of an uninterrupted one (all but the timings).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from kdjax import losses, mesh as mesh_lib, models
from kdjax.data import text as text_lib
from kdjax.jobs import (
  config as config_lib,
  figures,
  loop as jobs_loop,
  workdir as workdir_lib,
)
from kdjax.jobs.checkpoint import Checkpointer, PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter
from kdjax.train import lm, state as state_lib

METHODS = ("ce", "token_kd", "skew_kl", "seq_kd", "gkd")
_SUMMARY = "summary.json"


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
  ``vocab_size`` by :func:`check_vocab`); ``run`` passes it once the tokenizer is loaded,
  the launcher's early check does not.
  """
  _check_keys(config)
  if config.teacher_workdir:
    _check_keys(_with_finished_teacher(config))
  if vocab_size is not None:
    check_vocab(config, vocab_size)


def _check_keys(config: ml_collections.ConfigDict) -> None:
  config_lib.check_migrated(config, "the config")
  check = config_lib.check_int
  check(config.seed, "config.seed", minimum=0)
  for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    check(config[key], f"config.{key}")
  for key in ("eval_sequences", "eval_batch_size", "micro_batches"):
    check(config[key], f"config.{key}")
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
    model = config_lib.check_model(config[role].model, f"config.{role}.model")
    models.from_config(model)
    if seq_len > int(model["max_len"]):
      raise ValueError(
        f"config.dataset.seq_len={seq_len} does not fit config.{role}.model.max_len="
        f"{model['max_len']}"
      )
    check(config[role].num_steps, f"config.{role}.num_steps")
    config_lib.Optimizer.from_config(config[role].optimizer, f"config.{role}.optimizer")
  t_vocab, s_vocab = int(config.teacher.model.vocab_size), int(config.student.model.vocab_size)
  if t_vocab != s_vocab:
    raise ValueError(
      f"vocabulary mismatch: teacher vocab_size={t_vocab}, student vocab_size={s_vocab}"
    )
  if not 0 <= int(d.top_k) <= s_vocab:
    raise ValueError(f"config.distill.top_k must be in [0, {s_vocab}], got {d.top_k}")
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
  methods = _methods(config)
  for method in ("token_kd", "skew_kl", "gkd"):
    if method in methods:
      args = _kd_arguments(config, method)
      shared = ("divergence", "temperature", "chunked", "chunk_size")
      try:
        losses.get_divergence(
          args["divergence"],
          temperature=args["temperature"],
          **{k: v for k, v in args.items() if k not in shared},
        )
      except ValueError as err:
        raise ValueError(f"config.distill.divergence (method {method!r}): {err}") from None


def check_vocab(config: ml_collections.ConfigDict, vocab_size: int) -> None:
  """The models' ``vocab_size`` must be the tokenizer's (ValueError naming both)."""
  s_vocab = int(config.student.model.vocab_size)
  if s_vocab != vocab_size:
    raise ValueError(
      f"vocabulary mismatch: the tokenizer has {vocab_size} tokens, the models' "
      f"vocab_size={s_vocab} (config.teacher.model.vocab_size, config.student.model.vocab_size)"
    )


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
  }


class _Context:
  """What every model's training shares: config, mesh, data, teacher."""

  def __init__(self, config, workdir: str, data: text_lib.TextData, preemption: PreemptionFlag):
    self.config, self.workdir, self.data = config, workdir, data
    self.preemption = preemption
    self.mesh = mesh_lib.make_mesh()
    self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
    seq_len = int(config.dataset.seq_len)
    tok = data.tokenizer
    self.token_bytes = tok.token_bytes()
    train = text_lib.pack(data.train, seq_len, pad_id=tok.pad_id, bos_id=tok.bos_id)
    self.batches = text_lib.TokenBatches(
      train,
      batch_size=int(config.batch_size),
      seed=int(config.seed),
      sharding=mesh_lib.batch_sharding(self.mesh),
    )
    valid = text_lib.pack(
      data.validation,
      seq_len,
      pad_id=tok.pad_id,
      bos_id=tok.bos_id,
      max_sequences=int(config.eval_sequences),
    )
    b = int(config.eval_batch_size)
    self.eval_batches = [
      {k: v[i : i + b] for k, v in valid.items()} for i in range(0, len(valid["inputs"]), b)
    ]
    prompts = int(config.num_sample_prompts)
    if len(valid["inputs"]) < prompts:
      raise ValueError(
        f"config.num_sample_prompts={prompts} exceeds the {len(valid['inputs'])} validation "
        f"sequences (config.eval_sequences={config.eval_sequences})"
      )
    # Split over 'data' like the training batches: sampling from them is one program.
    self.sample_batch = jax.device_put(
      {k: v[:prompts] for k, v in valid.items()}, self.batch_sharding
    )
    self.teacher = self.teacher_params = self.teacher_shardings = None
    self._optimizers, self._train_steps = {}, {}

  def model(self, role: str):
    return models.from_config(self.config[role].model)

  def optimizer(self, role: str) -> optax.GradientTransformation:
    """``role``'s optimizer: one object per (optimizer block, num_steps), so that models of
    one configuration (e.g. a teacher and a student of the same size) share programs."""
    c = self.config[role]
    key = (json.dumps(c.optimizer.to_dict(), sort_keys=True), int(c.num_steps))
    if key not in self._optimizers:
      block = config_lib.Optimizer.from_config(c.optimizer, f"config.{role}.optimizer")
      self._optimizers[key] = block.make(int(c.num_steps))
    return self._optimizers[key]

  def train_step(self, model, tx, mode: str, shardings) -> tuple[Callable, bool]:
    """``(jitted train step, whether it takes the teacher's params)`` of ``mode``.

    One step per static configuration (model, optimizer, objective and its arguments):
    phases that train alike (the teacher and a CE or sequence-KD student of its size,
    the ``ce`` and ``seq_kd`` students) run one compiled program.
    """
    kind = "ce" if mode in ("ce", "seq_kd", "supervised") else "kd"
    arguments = _kd_arguments(self.config, mode) if kind == "kd" else {}
    key = (model, tx, kind, tuple(sorted(arguments.items())))
    if key not in self._train_steps:
      c = self.config
      objective = lm.make_objective(kind, model, self.teacher, **arguments)
      step = lm.make_train_step(objective, tx, seed=int(c.seed), micro_batches=int(c.micro_batches))
      teacher_shardings = self.teacher_shardings if kind == "kd" else {}
      self._train_steps[key] = lm.jit_train_step(step, self.mesh, shardings, teacher_shardings)
    return self._train_steps[key], kind == "kd"


def _sample_nll(ctx: _Context, model, params) -> float:
  """The teacher's NLL per token of ``model``'s samples from validation prompts."""
  d = ctx.config.distill
  batch = lm.generated_batch(
    model,
    params,
    ctx.sample_batch,
    jax.random.PRNGKey(int(ctx.config.seed) + 1),
    prompt_len=int(d.prompt_len),
    temperature=float(d.sample_temperature),
    top_k=int(d.top_k),
    top_p=float(d.top_p),
    eos_id=ctx.data.tokenizer.eos_id,
    pad_id=ctx.data.tokenizer.pad_id,
  )
  # On the host like the validation batches, so the teacher's nll_step compiles once.
  nll = lm.bits_per_byte(
    lm.make_nll_step(ctx.teacher), ctx.teacher_params, [jax.device_get(batch)], ctx.token_bytes
  )
  return nll["nll_per_token"]


def _train(ctx: _Context, name: str, role: str, mode: str) -> tuple[Any, dict]:
  """Trains (or resumes, or reloads) one model in ``WORKDIR/name``; returns (params, summary)."""
  c = ctx.config
  phase_dir = os.path.join(ctx.workdir, name)
  model, total, tx = ctx.model(role), int(c[role].num_steps), ctx.optimizer(role)
  sample = np.zeros((int(c.batch_size), int(c.dataset.seq_len)), np.int32)
  state, shardings = state_lib.create_state(
    model, tx, sample, int(c.seed), ctx.mesh, lm.LM_RULES if c.fsdp else ()
  )
  with workdir_lib.open_workdir(phase_dir, c, locked=False):
    checkpointer = Checkpointer(
      os.path.join(phase_dir, "checkpoints"), keep=int(c.keep_checkpoints)
    )
    try:
      start, restored = jobs_loop.resume(
        checkpointer, jax.eval_shape(lambda: state), name, shardings
      )
      state = restored if start else state
      summary_path = os.path.join(phase_dir, _SUMMARY)
      if start >= total and os.path.exists(summary_path):
        with open(summary_path) as f:
          return state.params, json.load(f)
      summary = _loop(
        ctx, name, mode, model, tx, state, shardings, start, total, checkpointer, phase_dir
      )
    finally:
      checkpointer.close()
  return summary.pop("params"), summary


def _loop(
  ctx, name, mode, model, tx, state, shardings, start, total, checkpointer, phase_dir
) -> dict:
  c, d = ctx.config, ctx.config.distill
  step_fn, with_teacher = ctx.train_step(model, tx, mode, shardings)
  # Only KD steps read the teacher (the teacher phase's own params are donated with the state).
  teacher_params = ctx.teacher_params if with_teacher else {}
  nll_step = lm.make_nll_step(model)
  sampling = dict(
    prompt_len=int(d.prompt_len),
    temperature=float(d.sample_temperature),
    top_k=int(d.top_k),
    top_p=float(d.top_p),
    eos_id=ctx.data.tokenizer.eos_id,
    pad_id=ctx.data.tokenizer.pad_id,
  )
  log = MetricsWriter(phase_dir, resume_step=start, total_steps=total, name=name)
  tokens_per_batch = int(c.batch_size) * int(c.dataset.seq_len)
  began, timed_from = time.time(), None

  def train_step(state, step):
    nonlocal timed_from
    batch = ctx.batches.batch(step)
    key = jax.random.fold_in(jax.random.PRNGKey(int(c.seed)), step)
    if mode == "seq_kd":
      batch = lm.generated_batch(ctx.teacher, ctx.teacher_params, batch, key, **sampling)
    elif mode == "gkd":
      on_policy = np.random.default_rng([int(c.seed), step]).random() < float(d.lam)
      if on_policy:
        batch = lm.generated_batch(model, state.params, batch, key, **sampling)
      else:
        batch = lm.mask_prompt(batch, int(d.prompt_len))
    batch = jax.device_put(batch, ctx.batch_sharding)
    state, metrics = step_fn(state, batch, teacher_params)
    if timed_from is None:  # the rate leaves out the first step (compilation)
      jax.block_until_ready(metrics)
      timed_from = (time.time(), step + 1)
    return state, metrics

  def on_log(state, step, metrics):
    record = {"train_loss": float(metrics["train_loss"])}
    elapsed = time.time() - timed_from[0]
    if step > timed_from[1] and elapsed > 0:
      record["tokens_per_second"] = (step - timed_from[1]) * tokens_per_batch / elapsed
    return state, record

  def on_eval(state, step):
    bpb = lm.bits_per_byte(nll_step, state.params, ctx.eval_batches, ctx.token_bytes)
    return {"eval_bits_per_byte": bpb["bits_per_byte"]}

  try:
    state = jobs_loop.run_steps(
      state,
      train_step,
      start=start,
      total=total,
      every=jobs_loop.Every.of(c),
      name=name,
      checkpointer=checkpointer,
      metrics=log,
      on_log=on_log,
      on_eval=on_eval,
      preemption=ctx.preemption,
    )
    checkpointer.wait()
  finally:
    log.close()
  records = workdir_lib.read_metrics(phase_dir)
  speeds = [r["tokens_per_second"] for r in records if "tokens_per_second" in r]
  summary = {
    "step": total,
    "eval_bits_per_byte": records[-1]["eval_bits_per_byte"],
    "tokens_per_second": speeds[-1] if speeds else float("nan"),
    "wall_time_s": time.time() - began,
  }
  if ctx.teacher is not None:
    summary["teacher_nll_of_samples"] = _sample_nll(ctx, model, state.params)
  if jax.process_index() == 0:
    figures.plot_curves(records, ["train_loss"], os.path.join(phase_dir, "loss.png"), title=name)
    figures.plot_curves(
      records, ["eval_bits_per_byte"], os.path.join(phase_dir, "bits_per_byte.png"), title=name
    )
  jobs_loop.write_summary(phase_dir, summary)
  return {**summary, "params": state.params}


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


def _load_teacher(ctx: _Context, teacher_workdir: str) -> tuple[Any, dict]:
  """The finished teacher of ``teacher_workdir`` (read-only): ``(params, summary)``."""
  c = ctx.config
  phase_dir = os.path.join(teacher_workdir, "teacher")
  model, total, tx = ctx.model("teacher"), int(c.teacher.num_steps), ctx.optimizer("teacher")
  sample = np.zeros((int(c.batch_size), int(c.dataset.seq_len)), np.int32)
  state, shardings = state_lib.create_state(
    model, tx, sample, int(c.seed), ctx.mesh, lm.LM_RULES if c.fsdp else ()
  )
  checkpointer = Checkpointer(os.path.join(phase_dir, "checkpoints"), keep=1)
  try:
    step, state = checkpointer.restore_latest(jax.eval_shape(lambda: state), shardings)
  finally:
    checkpointer.close()
  if step != total:
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r} holds no finished teacher "
      f"(last checkpoint {step}, teacher.num_steps {total})"
    )
  with open(os.path.join(phase_dir, _SUMMARY)) as f:
    return state.params, json.load(f)


def _tokenizer(config):
  """The byte tokenizer, or the SentencePiece model ``dataset.spm_model`` (trained there on
  the first ``dataset.spm_train_documents`` train documents when the file does not exist)."""
  ds = config.dataset
  if ds.tokenizer == "byte":
    return text_lib.ByteTokenizer()
  if ds.tokenizer != "sentencepiece":
    raise ValueError(
      f"config.dataset.tokenizer must be 'byte' or 'sentencepiece', got {ds.tokenizer!r}"
    )
  path = str(ds.spm_model)
  if not path.endswith(".model"):
    raise ValueError(f"config.dataset.spm_model must be a path ending in .model, got {path!r}")
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    texts = text_lib.tfds_texts(
      str(ds.name), "train", int(ds.spm_train_documents), str(ds.data_dir) or None
    )
    return text_lib.train_sentencepiece(
      texts, path[: -len(".model")], vocab_size=int(ds.spm_vocab_size)
    )
  return text_lib.SentencePieceTokenizer(path)


def _check_dataset_keys(ds) -> None:
  """A key of the ``dataset`` block that the corpus or tokenizer would ignore is an error."""
  ignored = []
  if ds.name == "pystdlib":  # embedded: no tfds directory, every file
    ignored += ["data_dir", "max_documents"]
  if ds.tokenizer == "byte":
    ignored += ["spm_model", "spm_vocab_size", "spm_train_documents"]
  for key in ignored:
    if ds[key]:
      raise ValueError(
        f"config.dataset.{key}={ds[key]!r} would be ignored by dataset.name={ds.name!r} with "
        f"dataset.tokenizer={ds.tokenizer!r}: leave it {type(ds[key])()!r}"
      )


def _load_data(config) -> text_lib.TextData:
  ds = config.dataset
  _check_dataset_keys(ds)
  if ds.name == "pystdlib":
    return text_lib.load_text("pystdlib", tokenizer=_tokenizer(config))
  return text_lib.load_text(
    str(ds.name),
    tokenizer=_tokenizer(config),
    data_dir=str(ds.data_dir) or None,
    max_documents=int(ds.max_documents) or None,
  )


def by_model(summary: dict) -> dict[str, dict]:
  """The flat summary of :func:`run` grouped by model: ``{model: {figure: value}}``."""
  grouped = {}
  for key, value in summary.items():
    model, figure = key.split("/", 1)
    grouped.setdefault(model, {})[figure] = value
  return grouped


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the LM distillation job; returns the flat summary (also ``summary.json``):
  ``"<model>/<figure>"`` for each model (``teacher``, then ``methods``) and figure
  (``step``, ``eval_bits_per_byte``, ...); :func:`by_model` groups it by model."""
  validate(config)  # every key, before the data is loaded or the workdir touched
  if config.teacher_workdir:
    config = _with_finished_teacher(config)
  data = _load_data(config)
  check_vocab(config, data.vocab_size)
  with workdir_lib.open_workdir(workdir, config) as wd, PreemptionFlag() as preemption:
    ctx = _Context(config, wd.path, data, preemption)
    if config.teacher_workdir:
      params, teacher_summary = _load_teacher(ctx, str(config.teacher_workdir))
    else:
      params, teacher_summary = _train(ctx, "teacher", "teacher", "supervised")
    ctx.teacher, ctx.teacher_params = ctx.model("teacher"), params
    ctx.teacher_shardings = jax.tree.map(lambda x: x.sharding, params)
    # The reference of the students' teacher_nll_of_samples: the teacher's own samples.
    teacher_summary["teacher_nll_of_samples"] = _sample_nll(ctx, ctx.teacher, params)
    results = {"teacher": teacher_summary}
    for method in _methods(config):
      _, results[method] = _train(ctx, method, "student", method)
    _compare(results, wd.path)
    log = MetricsWriter(wd.path, resume_step=None, total_steps=None, name="lm")
    try:
      for index, (name, summary) in enumerate(results.items()):
        figures_of = {k: v for k, v in summary.items() if k != "step"}
        log.write(index, model=name, steps=summary["step"], **figures_of)
    finally:
      log.close()
    flat = {f"{name}/{k}": v for name, figures in results.items() for k, v in figures.items()}
    return jobs_loop.write_summary(wd.path, flat)


def _compare(results: dict, workdir: str) -> None:
  """Adds ``gap_closed`` to each student and writes ``bits_per_byte.png``."""
  teacher = results["teacher"]["eval_bits_per_byte"]
  ce = results.get("ce", {}).get("eval_bits_per_byte")
  for name, summary in results.items():
    if name != "teacher" and ce is not None:
      gap = ce - teacher
      summary["gap_closed"] = (ce - summary["eval_bits_per_byte"]) / gap if gap else math.nan
  if jax.process_index() != 0:
    return
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  names = list(results)
  ax.bar(names, [results[n]["eval_bits_per_byte"] for n in names])
  ax.set_ylabel("validation bits per byte")
  ax.set_ylim(bottom=min(results[n]["eval_bits_per_byte"] for n in names) * 0.9)
  fig.tight_layout()
  figures.save_figure(fig, os.path.join(workdir, "bits_per_byte.png"))
