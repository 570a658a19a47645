r"""``run(config, workdir)``: the language-model distillation job (``config.job == 'lm'``).

One run trains (or loads) a teacher, then one student per entry of ``config.modes``:

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
not retrained. ``WORKDIR/summary.json`` has one entry per model with
``eval_bits_per_byte`` (validation bits per byte), ``teacher_nll_of_samples`` (the
teacher's NLL per token of the model's own samples, GKD's on-policy quality proxy),
``gap_closed`` (students: :math:`(b_{ce} - b) / (b_{ce} - b_{teacher})`, the fraction of
the teacher-student gap closed against the CE-only student at equal steps; needs ``ce``
in ``modes``), ``tokens_per_second`` and ``wall_time_s``; ``WORKDIR/metrics.jsonl`` holds
the same figures, one record per model (``step`` = its index: 0 the teacher, then
``modes`` in order, with ``model`` = its name), and ``WORKDIR/bits_per_byte.png`` compares
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

from kdjax import models
from kdjax.data import text as text_lib
from kdjax.jobs import (
  figures,
  loop as jobs_loop,
  mesh as mesh_lib,
  workdir as workdir_lib,
)
from kdjax.jobs.checkpoint import Checkpointer, PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter
from kdjax.jobs.schedules import make_schedule
from kdjax.train import lm, state as state_lib

MODES = ("ce", "token_kd", "skew_kl", "seq_kd", "gkd", "uld", "alm")
_SUMMARY = "summary.json"


def _modes(config) -> list[str]:
  modes = [m for m in str(config.modes).split(",") if m]
  unknown = [m for m in modes if m not in MODES]
  if unknown or len(set(modes)) != len(modes):
    raise ValueError(f"config.modes must be distinct names from {MODES}, got {config.modes!r}")
  return modes


def validate(config: ml_collections.ConfigDict, vocab_size: int) -> None:
  """Checks every key the job reads; raises ValueError naming the key."""
  d = config.distill
  for key in ("lam", "beta", "alpha"):
    if not 0.0 <= float(d[key]) <= 1.0:
      raise ValueError(f"config.distill.{key} must be in [0, 1], got {d[key]}")
  for key in ("loss_temperature", "sample_temperature"):
    if not float(d[key]) > 0:
      raise ValueError(f"config.distill.{key} must be > 0, got {d[key]}")
  if not 0 <= int(d.top_k) <= vocab_size:
    raise ValueError(f"config.distill.top_k must be in [0, {vocab_size}], got {d.top_k}")
  if not 0 < float(d.top_p) <= 1:
    raise ValueError(f"config.distill.top_p must be in (0, 1], got {d.top_p}")
  if int(config.micro_batches) < 1:
    raise ValueError(f"config.micro_batches must be >= 1, got {config.micro_batches}")
  seq_len = int(config.dataset.seq_len)
  if not 1 <= int(d.prompt_len) < seq_len:
    raise ValueError(
      f"config.distill.prompt_len must be in [1, dataset.seq_len={seq_len}), got {d.prompt_len}"
    )
  for role in ("teacher", "student"):
    model = config[role].model
    if seq_len > int(model.max_len):
      raise ValueError(
        f"config.dataset.seq_len={seq_len} does not fit config.{role}.model.max_len={model.max_len}"
      )
    if int(config[role].num_steps) < 1:
      raise ValueError(f"config.{role}.num_steps must be >= 1, got {config[role].num_steps}")
  t_vocab, s_vocab = int(config.teacher.model.vocab_size), int(config.student.model.vocab_size)
  if t_vocab != s_vocab:
    raise ValueError(
      f"vocabulary mismatch: teacher vocab_size={t_vocab}, student vocab_size={s_vocab}"
    )
  if s_vocab != vocab_size:
    raise ValueError(
      f"vocabulary mismatch: the tokenizer has {vocab_size} tokens, the models' "
      f"vocab_size={s_vocab}"
    )
  per_step = jax.device_count() * int(config.micro_batches)
  if int(config.batch_size) < 1 or int(config.batch_size) % per_step:
    raise ValueError(
      f"config.batch_size={config.batch_size} must be a positive multiple of "
      f"devices x micro_batches ({per_step})"
    )
  prompts = int(config.num_sample_prompts)
  if prompts < 1 or prompts % jax.device_count():
    raise ValueError(
      f"config.num_sample_prompts={prompts} must be a positive multiple of the number of "
      f"devices ({jax.device_count()})"
    )
  _modes(config)
  if "gkd" in _modes(config) or "token_kd" in _modes(config):
    lm.make_objective("kd", None, None, **_kd_arguments(config, "token_kd"))


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


def _optimizer(config, num_steps: int, name: str) -> optax.GradientTransformation:
  parts = (
    [optax.clip_by_global_norm(float(config.grad_clip_norm))]
    if float(config.grad_clip_norm) > 0
    else []
  )
  return optax.chain(
    *parts,
    optax.adamw(
      make_schedule(config, num_steps, name=name), weight_decay=float(config.weight_decay)
    ),
  )


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
      self._optimizers[key] = _optimizer(c.optimizer, int(c.num_steps), f"{role}.optimizer")
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
  if ctx.teacher is not None and getattr(ctx, "same_vocabulary", True):
    summary["teacher_nll_of_samples"] = _sample_nll(ctx, model, state.params)
  if jax.process_index() == 0:
    figures.plot_curves(records, ["train_loss"], os.path.join(phase_dir, "loss.png"), title=name)
    figures.plot_curves(
      records, ["eval_bits_per_byte"], os.path.join(phase_dir, "bits_per_byte.png"), title=name
    )
    workdir_lib.atomic_write(os.path.join(phase_dir, _SUMMARY), json.dumps(summary, indent=1))
  return {**summary, "params": state.params}


def _load_teacher_config(teacher_workdir: str) -> ml_collections.ConfigDict:
  summary = os.path.join(teacher_workdir, "teacher", _SUMMARY)
  config_path = os.path.join(teacher_workdir, workdir_lib.CONFIG_FILE)
  if not (os.path.exists(summary) and os.path.exists(config_path)):
    raise ValueError(
      f"config.teacher_workdir={teacher_workdir!r} holds no finished teacher "
      f"(no teacher/{_SUMMARY}); run the lm job there first"
    )
  with open(config_path) as f:
    return ml_collections.ConfigDict(json.load(f))


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


def _load_data(config) -> text_lib.TextData:
  ds = config.dataset
  if ds.name == "pystdlib":
    return text_lib.load_text("pystdlib", tokenizer=_tokenizer(config))
  return text_lib.load_text(
    str(ds.name),
    tokenizer=_tokenizer(config),
    data_dir=str(ds.data_dir) or None,
    max_documents=int(ds.max_documents) or None,
  )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the LM distillation job; returns ``{model name: summary}`` (also summary.json)."""
  from kdjax.train import xtok  # cross-tokenizer students (modes uld, alm): their own run

  if xtok.enabled(config):
    return xtok.run(config, workdir)
  data = _load_data(config)
  if config.teacher_workdir:
    teacher_config = _load_teacher_config(str(config.teacher_workdir))
    config = ml_collections.ConfigDict(config.to_dict())
    config.teacher = teacher_config.teacher
  validate(config, data.vocab_size)
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
    for mode in _modes(config):
      _, results[mode] = _train(ctx, mode, "student", mode)
    _compare(results, wd.path)
    log = MetricsWriter(wd.path, resume_step=None, total_steps=None, name="lm")
    try:
      for index, (name, summary) in enumerate(results.items()):
        figures_of = {k: v for k, v in summary.items() if k != "step"}
        log.write(index, model=name, steps=summary["step"], **figures_of)
    finally:
      log.close()
    if jax.process_index() == 0:
      workdir_lib.atomic_write(os.path.join(wd.path, _SUMMARY), json.dumps(results, indent=1))
  return results


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
