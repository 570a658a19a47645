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
not retrained. ``WORKDIR/summary.json`` is flat, ``"<model>/<figure>"``
(:func:`by_model` groups it), with ``eval_bits_per_byte`` (validation bits per byte),
``teacher_nll_of_samples`` (the teacher's NLL per token of the model's own samples, GKD's
on-policy quality proxy), ``gap_closed`` (students: :math:`(b_{ce} - b) / (b_{ce} -
b_{teacher})`, the fraction of the teacher-student gap closed against the CE-only student
at equal steps; needs ``ce`` in ``methods``), ``tokens_per_second`` and ``wall_time_s`` (of
the process that ran the steps; ``null`` if it ran none, e.g. after a kill between the
last checkpoint and the model's ``summary.json``); a finished model keeps its figures.
``WORKDIR/metrics.jsonl`` holds the same figures, one record per model (``step`` = its
index: 0 the teacher, then ``methods`` in order, with ``model`` = its name), and
``WORKDIR/bits_per_byte.png`` compares them.

SIGTERM (``kdjax.jobs.preemption``) makes the running model save its checkpoint and the
job raise ``Preempted``; the same command then resumes it. Batches, sampling keys, the
on-policy draws and dropout depend only on ``(seed, step)``, so a resumed run ends with
the figures of an uninterrupted one (all but the timings).

The configuration checks (:func:`validate`, :func:`check_models`, ``METHODS``) live in
:mod:`kdjax.train.lm_config` and are imported here by name.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from kdjax import mesh as mesh_lib, models
from kdjax.data import text as text_lib
from kdjax.jobs import (
  config as config_lib,
  figures,
  loop as jobs_loop,
  workdir as workdir_lib,
)
from kdjax.jobs.checkpoint import Checkpointer, PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter
from kdjax.models import hf
from kdjax.train import lm, state as state_lib
from kdjax.train.lm_config import (
  _DTYPES,
  _HF_FAMILIES,
  _SUMMARY,
  METHODS as METHODS,
  _kd_arguments,
  _load_teacher_config as _load_teacher_config,
  _methods,
  _with_finished_teacher,
  check_models,
  validate,
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
    train = text_lib.pack(
      data.train, seq_len, pad_id=tok.pad_id, bos_id=tok.bos_id, loss_mask=data.train_mask
    )
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
      loss_mask=data.validation_mask,
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
    self.built: dict = {}  # role -> model from a Hugging Face checkpoint
    self.init_params: dict = {}  # role -> its starting params (HF checkpoint / teacher layers)
    self.trained: dict = {}  # method -> its trained student's params (AdaSPEC's reference)

  def model(self, role: str):
    if role in self.built:
      return self.built[role]
    spec = dict(self.config[role].model)
    if spec.get("name") in _HF_FAMILIES:  # validate: other models are float32
      dtype = _DTYPES[str(self.config.dtype)]
      spec.update(dtype=dtype, param_dtype=dtype)
    return models.from_config(spec)

  def optimizer(self, role: str) -> optax.GradientTransformation:
    """``role``'s optimizer: one object per (optimizer block, num_steps), so that models of
    one configuration (e.g. a teacher and a student of the same size) share programs."""
    c = self.config[role]
    key = (json.dumps(c.optimizer.to_dict(), sort_keys=True), int(c.num_steps))
    if key not in self._optimizers:
      block = config_lib.Optimizer.from_config(c.optimizer, f"config.{role}.optimizer")
      self._optimizers[key] = block.make(int(c.num_steps))
    return self._optimizers[key]

  def train_step(self, model, tx, mode: str, shardings) -> tuple[Callable, str]:
    """``(jitted train step, objective kind)`` of ``mode``: ``'ce'`` steps take no teacher,
    ``'kd'`` steps the teacher's params, ``'adaspec'`` ``{'target', 'reference'}``.

    One step per static configuration (model, optimizer, objective and its arguments):
    phases that train alike (the teacher and a CE or sequence-KD student of its size,
    the ``ce`` and ``seq_kd`` students) run one compiled program.
    """
    kind = {"ce": "ce", "seq_kd": "ce", "supervised": "ce", "adaspec": "adaspec"}.get(mode, "kd")
    arguments = _kd_arguments(self.config, mode) if kind != "ce" else {}
    key = (model, tx, kind, tuple(sorted(arguments.items())))
    if key not in self._train_steps:
      c = self.config
      objective = lm.make_objective(kind, model, self.teacher, **arguments)
      step = lm.make_train_step(objective, tx, seed=int(c.seed), micro_batches=int(c.micro_batches))
      teacher_shardings = {
        "ce": {},
        "kd": self.teacher_shardings,
        "adaspec": {"target": self.teacher_shardings, "reference": shardings.params},
      }[kind]
      self._train_steps[key] = lm.jit_train_step(step, self.mesh, shardings, teacher_shardings)
    return self._train_steps[key], kind


def _sampling(ctx: _Context) -> dict:
  """The keyword arguments of ``lm.generated_batch`` from ``config.distill``."""
  d = ctx.config.distill
  return dict(
    prompt_len=int(d.prompt_len),
    temperature=float(d.sample_temperature),
    top_k=int(d.top_k),
    top_p=float(d.top_p),
    eos_id=ctx.data.tokenizer.eos_id,
    pad_id=ctx.data.tokenizer.pad_id,
  )


def _sample_nll(ctx: _Context, model, params) -> float:
  """The teacher's NLL per token of ``model``'s samples from validation prompts."""
  key = jax.random.PRNGKey(int(ctx.config.seed) + 1)
  batch = lm.generated_batch(model, params, ctx.sample_batch, key, **_sampling(ctx))
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
      if not start and role in ctx.init_params:
        state = _start_from(state, ctx.init_params[role], tx, shardings)
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


def _start_from(state, params, tx, shardings):
  """``state`` with ``params`` (cast to the state's dtypes) and a fresh optimizer state,
  laid out in ``shardings``."""

  def replace(state, params):
    params = jax.tree.map(lambda p, q: p.astype(q.dtype), params, state.params)
    return state.replace(params=params, opt_state=tx.init(params))

  return jax.jit(replace, out_shardings=shardings, donate_argnums=0)(state, params)


def _loop(
  ctx, name, mode, model, tx, state, shardings, start, total, checkpointer, phase_dir
) -> dict:
  c, d = ctx.config, ctx.config.distill
  step_fn, kind = ctx.train_step(model, tx, mode, shardings)
  # Only KD steps read the teacher (the teacher phase's own params are donated with the state).
  teacher_params = {
    "ce": {},
    "kd": ctx.teacher_params,
    "adaspec": {
      "target": ctx.teacher_params,
      "reference": ctx.trained.get(str(d.adaspec_reference)),
    },
  }[kind]
  nll_step = lm.make_nll_step(model)
  sampling = _sampling(ctx)
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
    "wall_time_s": time.time() - began if start < total else None,  # None: no step ran here
  }
  if ctx.teacher is not None and getattr(ctx, "same_vocabulary", True):
    summary["teacher_nll_of_samples"] = _sample_nll(ctx, model, state.params)
  if jax.process_index() == 0:
    figures.plot_curves(records, ["train_loss"], os.path.join(phase_dir, "loss.png"), title=name)
    figures.plot_curves(
      records, ["eval_bits_per_byte"], os.path.join(phase_dir, "bits_per_byte.png"), title=name
    )
  jobs_loop.write_summary(phase_dir, summary)
  return {**summary, "params": state.params}


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
  if ds.tokenizer == "hf":
    path = str(config.teacher.hf_path)
    if not path:
      raise ValueError("config.dataset.tokenizer='hf' reads config.teacher.hf_path, which is empty")
    tokenizer = hf.load_tokenizer(path)
    if json.loads(
      (tokenizer.directory / "tokenizer_config.json").read_text()
      if (tokenizer.directory / "tokenizer_config.json").is_file()
      else "{}"
    ).get("kdjax_byte_tokenizer"):
      return text_lib.ByteTokenizer()  # an exported byte-level kdjax model
    return tokenizer
  if ds.tokenizer != "sentencepiece":
    raise ValueError(
      f"config.dataset.tokenizer must be 'byte', 'sentencepiece' or 'hf', got {ds.tokenizer!r}"
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
  if ds.name == "text_files":
    if not str(ds.files):
      raise ValueError("config.dataset.files must be a glob of .txt / .jsonl files")
    return text_lib.load_text_files(
      str(ds.files),
      tokenizer=_tokenizer(config),
      validation_files=str(ds.validation_files) or None,
    )
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


def _pretrained(config, mesh) -> tuple[dict, dict]:
  """``({role: model}, {role: params})`` of ``teacher.hf_path``, ``student.hf_path`` and
  ``student.init_from_teacher`` (the teacher's embeddings, final norm, head and chosen
  layers)."""
  built, params = {}, {}
  dtype = _DTYPES.get(str(config.dtype), jnp.float32)
  teacher_path, student_path = str(config.teacher.hf_path), str(config.student.hf_path)
  layers = str(config.student.init_from_teacher)
  if teacher_path:
    built["teacher"], params["teacher"] = hf.from_pretrained(teacher_path, dtype=dtype, mesh=mesh)
  if student_path:
    built["student"], params["student"] = hf.from_pretrained(student_path, dtype=dtype)
  if layers:
    chosen = hf.parse_layers(
      layers, built["teacher"].num_layers, key="config.student.init_from_teacher"
    )
    built["student"], params["student"] = hf.subset_layers(
      built["teacher"], params["teacher"], chosen
    )
  return built, params


def _export(ctx: _Context, model, params, subdir: str) -> None:
  """Writes a Llama-style or GPT-2 model and the tokenizer to ``WORKDIR/subdir`` in the
  Hugging Face layout (other models and SentencePiece tokenizers are not exported)."""
  if jax.process_index() != 0 or not isinstance(model, (models.LlamaLM, models.GPT2LM)):
    return
  tok = ctx.data.tokenizer
  directory = os.path.join(ctx.workdir, subdir)
  extra = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
  hf.save_pretrained(model, params, directory, config_extra=extra)
  if isinstance(tok, text_lib.ByteTokenizer):
    hf.byte_tokenizer_files(directory)
  elif isinstance(tok, hf.HFTokenizer):
    tok.save(directory)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the LM distillation job; returns the flat summary (also ``summary.json``):
  ``"<model>/<figure>"`` for each model (``teacher``, then ``methods``) and figure
  (``step``, ``eval_bits_per_byte``, ...); :func:`by_model` groups it by model.
  Cross-tokenizer students (methods ``uld``, ``alm``) run in :func:`kdjax.train.xtok.run`."""
  from kdjax.train import xtok

  if xtok.enabled(config):
    return xtok.run(config, workdir)
  validate(config)  # every key, before the data is loaded or the workdir touched
  if config.teacher_workdir:
    config = _with_finished_teacher(config)
  data = _load_data(config)
  built, pretrained = _pretrained(config, mesh_lib.make_mesh())
  check_models(config, data.vocab_size, built)
  methods = _methods(config)
  with workdir_lib.open_workdir(workdir, config) as wd, PreemptionFlag() as preemption:
    ctx = _Context(config, wd.path, data, preemption)
    ctx.built = built
    ctx.init_params = {k: v for k, v in pretrained.items() if k == "student"}
    if config.teacher_workdir:
      params, teacher_summary = _load_teacher(ctx, str(config.teacher_workdir))
    elif "teacher" in pretrained:
      params = pretrained["teacher"]
      nll_step = lm.make_nll_step(built["teacher"])
      bpb = lm.bits_per_byte(nll_step, params, ctx.eval_batches, ctx.token_bytes)
      teacher_summary = {"step": 0, "eval_bits_per_byte": bpb["bits_per_byte"]}
    else:
      params, teacher_summary = _train(ctx, "teacher", "teacher", "supervised")
      _export(ctx, ctx.model("teacher"), params, "teacher_hf")
    ctx.teacher, ctx.teacher_params = ctx.model("teacher"), params
    ctx.teacher_shardings = jax.tree.map(lambda x: x.sharding, params)
    # The reference of the students' teacher_nll_of_samples: the teacher's own samples.
    teacher_summary["teacher_nll_of_samples"] = _sample_nll(ctx, ctx.teacher, params)
    results = {"teacher": teacher_summary}
    for method in methods:
      student_params, results[method] = _train(ctx, method, "student", method)
      ctx.trained[method] = student_params
      target = "student_hf" if len(methods) == 1 else os.path.join("student_hf", method)
      _export(ctx, ctx.model("student"), student_params, target)
    _compare(results, wd.path)
    log = MetricsWriter(wd.path, resume_step=None, total_steps=None, name="lm", rate=False)
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
