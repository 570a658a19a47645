r"""Cross-tokenizer students of the ``lm`` job: modes ``uld`` and ``alm``.

When ``config.xtok.student_tokenizer`` is set (or ``config.methods`` holds ``uld`` or
``alm``), :func:`kdjax.train.lm_job.run` hands the run to :func:`run` here. The teacher is
the lm job's byte-level teacher (trained or loaded exactly as there, on windows of
``dataset.seq_len`` bytes); the students use a second tokenizer, a SentencePiece
vocabulary trained offline on the corpus's train split
(:func:`kdjax.data.xtok.train_student_tokenizer`, written to ``xtok.spm_model`` or
``WORKDIR/student_tokenizer/``), on windows of ``xtok.student_seq_len`` of its tokens.
Each student batch carries the teacher's view of the same text
(:class:`kdjax.data.xtok.CrossTokenBatches`, cut at ``dataset.seq_len`` bytes). Modes:

* ``ce``: the student's cross-entropy on its own tokens (the baseline);
* ``uld``: ``xtok.ce_weight`` x CE + ``xtok.uld_weight`` x ULD (Boizard et al. (2024)),
  where the student's and the teacher's next-token distributions are compared at the
  start of each aligned chunk (both predict the chunk's first token from the same text);
* ``alm``: ``xtok.ce_weight`` x CE + ``xtok.alm_weight`` x ALM (Minixhofer et al. (2025)):
  the binarised ``xtok.alm_divergence`` of the chunk likelihoods at binarisation
  temperature ``xtok.alm_temperature``.

Every student trains ``student.num_steps`` steps on the same windows in the same order.
Losses are sums over the batch divided by its number of real student tokens. Validation
bits per byte make the teacher's bytes and the students' pieces comparable.
``WORKDIR/summary.json`` is flat like the lm job's: ``"<model>/<figure>"`` for ``teacher``
and each method (``eval_bits_per_byte``, ``gap_closed``, ``tokens_per_second``,
``wall_time_s``, ``step``; :func:`kdjax.train.lm_job.by_model` groups them) and
``student_tokenizer/vocab_size``, ``student_tokenizer/validation_bytes_per_token``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from kdjax import losses
from kdjax.data import text as text_lib, xtok as xtok_data
from kdjax.jobs import loop as jobs_loop, workdir as workdir_lib
from kdjax.jobs.checkpoint import PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter
from kdjax.train import lm, lm_job

XTOK_MODES = ("uld", "alm")
STUDENT_MODES = ("ce", "uld", "alm")


def enabled(config) -> bool:
  """Whether ``config`` asks for cross-tokenizer students."""
  modes = [m for m in str(config.methods).split(",") if m] if "methods" in config else []
  has_xtok = "xtok" in config and bool(config.xtok.student_tokenizer)
  return has_xtok or any(m in XTOK_MODES for m in modes)


def make_objective(
  mode: str,
  student: Any,
  teacher: Any,
  *,
  ce_weight: float,
  uld_weight: float,
  uld_temperature: float,
  alm_weight: float,
  alm_temperature: float,
  alm_divergence: str,
):
  r"""``objective(params, teacher_params, batch, rng) -> (loss sum, student token count)``.

  .. math::
    \mathcal{L} = w_{ce} \sum_t m_t\,(-\log q(y_t)) + w \sum_c \ell_c

  with :math:`\ell_c` the ULD distance at the start of chunk ``c`` (``'uld'``) or its
  ALM loss (``'alm'``), over the chunks of ``batch['chunk_mask']``; the teacher runs in
  eval mode on ``batch['teacher_inputs']`` and gets no gradient.
  """
  if mode not in XTOK_MODES:
    raise ValueError(f"cross-tokenizer mode must be one of {XTOK_MODES}, got {mode!r}")

  def objective(params, teacher_params, batch, rng):
    logits = student.apply({"params": params}, batch["inputs"], train=True, rngs={"dropout": rng})
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32))
    token_log_q = jnp.take_along_axis(log_q, batch["targets"][..., None], axis=-1)[..., 0]
    ce_sum, count = losses.masked_sum_and_count(-token_log_q, batch["mask"])
    t_logits = jax.lax.stop_gradient(
      teacher.apply({"params": teacher_params}, batch["teacher_inputs"]).astype(jnp.float32)
    )
    rows = jnp.arange(logits.shape[0])[:, None]
    if mode == "uld":
      kd = losses.uld_loss(
        logits[rows, batch["student_starts"]],
        t_logits[rows, batch["teacher_starts"]],
        temperature=uld_temperature,
        where=batch["chunk_mask"],
      )
      weight = uld_weight
    else:
      log_p = jax.nn.log_softmax(t_logits)
      token_log_p = jnp.take_along_axis(log_p, batch["teacher_targets"][..., None], axis=-1)[..., 0]
      num_chunks = batch["chunk_mask"].shape[1]
      kd = losses.alm_loss(
        losses.chunk_log_likelihoods(token_log_q, batch["student_chunks"], num_chunks),
        losses.chunk_log_likelihoods(token_log_p, batch["teacher_chunks"], num_chunks),
        temperature=alm_temperature,
        divergence=alm_divergence,
        where=batch["chunk_mask"],
      )
      weight = alm_weight
    return ce_weight * ce_sum + weight * jnp.sum(kd), count

  return objective


def _objective_arguments(config) -> dict:
  x = config.xtok
  return {
    "ce_weight": float(x.ce_weight),
    "uld_weight": float(x.uld_weight),
    "uld_temperature": float(x.uld_temperature),
    "alm_weight": float(x.alm_weight),
    "alm_temperature": float(x.alm_temperature),
    "alm_divergence": str(x.alm_divergence),
  }


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every key (the lm keys of the teacher and the student phases, and ``xtok``)
  before any work; raises ValueError naming the key."""
  from kdjax.jobs import config as config_lib

  modes = [m for m in str(config.methods).split(",") if m]
  if "xtok" not in config or not config.xtok.student_tokenizer:
    raise ValueError(
      f"cross-tokenizer modes {XTOK_MODES} need a second tokenizer: set "
      "config.xtok.student_tokenizer (e.g. 'sentencepiece')"
    )
  x = config.xtok
  if x.student_tokenizer != "sentencepiece":
    raise ValueError(
      f"config.xtok.student_tokenizer must be 'sentencepiece', got {x.student_tokenizer!r}"
    )
  bad = [m for m in modes if m not in STUDENT_MODES]
  if bad or not modes or len(set(modes)) != len(modes):
    raise ValueError(
      f"config.methods must be distinct names from {STUDENT_MODES} for cross-tokenizer "
      f"students (the others need one vocabulary), got {config.methods!r}"
    )
  if config.dataset.name != "pystdlib" or config.dataset.tokenizer != "byte":
    raise ValueError(
      "cross-tokenizer students need the byte-level pystdlib teacher data: "
      f"config.dataset.name='pystdlib', dataset.tokenizer='byte', got "
      f"{config.dataset.name!r}, {config.dataset.tokenizer!r}"
    )
  for key in ("ce_weight", "uld_weight", "alm_weight"):
    config_lib.check_number(x[key], f"config.xtok.{key}", minimum=0)
  for key in ("uld_temperature", "alm_temperature"):
    config_lib.check_number(x[key], f"config.xtok.{key}", above=0)
  if x.alm_divergence not in losses.ALM_DIVERGENCES:
    raise ValueError(
      f"config.xtok.alm_divergence must be one of {losses.ALM_DIVERGENCES}, got "
      f"{x.alm_divergence!r}"
    )
  if x.model_type not in ("bpe", "unigram"):
    raise ValueError(f"config.xtok.model_type must be 'bpe' or 'unigram', got {x.model_type!r}")
  config_lib.check_int(x.vocab_size, "config.xtok.vocab_size", minimum=261)
  config_lib.check_int(x.spm_every, "config.xtok.spm_every")
  seq_len = config_lib.check_int(x.student_seq_len, "config.xtok.student_seq_len", minimum=2)
  teacher_view, student_view = _views(config)
  lm_job.validate(teacher_view)  # every lm key, as the teacher phase reads them
  max_len = config_lib.check_int(config.student.model.max_len, "config.student.model.max_len")
  if seq_len > max_len:
    raise ValueError(
      f"config.xtok.student_seq_len={seq_len} must be in [2, student.model.max_len={max_len}]"
    )
  if config_lib.check_int(
    config.student.model.vocab_size, "config.student.model.vocab_size"
  ) != int(x.vocab_size):
    raise ValueError(
      f"vocabulary mismatch: config.student.model.vocab_size={config.student.model.vocab_size}"
      f" but the student tokenizer has config.xtok.vocab_size={x.vocab_size} pieces"
    )
  # The student phases' keys: the lm checks with a teacher of the student's vocabulary.
  check = ml_collections.ConfigDict(student_view.to_dict(), type_safe=False)
  check.teacher.model.vocab_size = check.student.model.vocab_size
  check.teacher.model.max_len = max(int(check.teacher.model.max_len), seq_len)
  check.teacher_workdir = ""
  check.methods = "ce"
  del check["xtok"]
  lm_job.validate(check)


def _views(config) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """The lm job's configs of the teacher phase (bytes, ``dataset.seq_len``) and of the
  student phases (``xtok.student_seq_len``)."""
  teacher = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  teacher.methods = "ce"
  # (no student trains in this view; the teacher's block with the student-only key)
  teacher.student = {**teacher.teacher.to_dict(), "init_from_teacher": ""}
  del teacher["xtok"]
  student = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  student.dataset.seq_len = config.xtok.student_seq_len
  student.distill.prompt_len = min(config.distill.prompt_len, config.xtok.student_seq_len - 1)
  return teacher, student


class _StudentContext(lm_job._Context):
  """The lm job's context for the students: the student tokenizer's windows with the
  teacher's view (:class:`~kdjax.data.xtok.CrossTokenBatches`), and the steps of the
  cross-tokenizer modes."""

  same_vocabulary = False  # the lm job then skips the teacher's NLL of student samples

  def __init__(self, config, workdir, data, preemption, teacher_tokenizer):
    super().__init__(config, workdir, data, preemption)
    self.batches = xtok_data.CrossTokenBatches(
      self.batches.packed,
      student_tokenizer=data.tokenizer,
      teacher_tokenizer=teacher_tokenizer,
      teacher_len=int(config.teacher_seq_len),
      batch_size=int(config.batch_size),
      seed=int(config.seed),
    )

  def train_step(self, model, tx, mode, shardings):
    if mode not in XTOK_MODES:
      return super().train_step(model, tx, mode, shardings)
    key = (model, tx, mode)
    if key not in self._train_steps:
      c = self.config
      objective = make_objective(mode, model, self.teacher, **_objective_arguments(c))
      step = lm.make_train_step(objective, tx, seed=int(c.seed), micro_batches=int(c.micro_batches))
      self._train_steps[key] = lm.jit_train_step(step, self.mesh, shardings, self.teacher_shardings)
    return self._train_steps[key], True


def student_tokenizer(config, workdir: str) -> text_lib.SentencePieceTokenizer:
  """The student vocabulary: ``config.xtok.spm_model``, or trained into the workdir."""
  x = config.xtok
  path = str(x.spm_model) or os.path.join(
    workdir, "student_tokenizer", f"pystdlib_{x.model_type}{int(x.vocab_size)}.model"
  )
  return xtok_data.train_student_tokenizer(
    path, vocab_size=int(x.vocab_size), model_type=str(x.model_type), every=int(x.spm_every)
  )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or loads) the byte-level teacher, then one cross-tokenizer student per mode."""
  validate(config)
  teacher_config, student_config = _views(config)
  teacher_data = lm_job._load_data(teacher_config)
  if config.teacher_workdir:
    loaded = lm_job._load_teacher_config(str(config.teacher_workdir))
    teacher_config.teacher = teacher_config.student = loaded.teacher
    student_config.teacher = loaded.teacher
  lm_job.validate(teacher_config, teacher_data.vocab_size)
  student_config.teacher_seq_len = int(config.dataset.seq_len)
  if int(config.dataset.seq_len) > int(teacher_config.teacher.model.max_len):
    raise ValueError(
      f"config.dataset.seq_len={config.dataset.seq_len} (the teacher's view) exceeds "
      f"teacher.model.max_len={teacher_config.teacher.model.max_len}"
    )
  with workdir_lib.open_workdir(workdir, config) as wd, PreemptionFlag() as preemption:
    tokenizer = student_tokenizer(config, wd.path)
    if tokenizer.vocab_size != int(config.student.model.vocab_size):
      raise ValueError(
        f"vocabulary mismatch: the student tokenizer has {tokenizer.vocab_size} pieces, "
        f"config.student.model.vocab_size={config.student.model.vocab_size}"
      )
    student_data = xtok_data.pystdlib_student_data(tokenizer)
    tctx = lm_job._Context(teacher_config, wd.path, teacher_data, preemption)
    if config.teacher_workdir:
      params, teacher_summary = lm_job._load_teacher(tctx, str(config.teacher_workdir))
    else:
      params, teacher_summary = lm_job._train(tctx, "teacher", "teacher", "supervised")
    sctx = _StudentContext(
      student_config, wd.path, student_data, preemption, teacher_data.tokenizer
    )
    sctx.teacher, sctx.teacher_params = tctx.model("teacher"), params
    sctx.teacher_shardings = jax.tree.map(lambda x: x.sharding, params)
    results = {"teacher": teacher_summary}
    for mode in [m for m in str(config.methods).split(",") if m]:
      _, results[mode] = lm_job._train(sctx, mode, "student", mode)
    lm_job._compare(results, wd.path)
    info = student_data.info
    log = MetricsWriter(wd.path, resume_step=None, total_steps=None, name="xtok", rate=False)
    try:
      for index, (name, summary) in enumerate(results.items()):
        log.write(index, model=name, **{k: v for k, v in summary.items() if k != "step"})
    finally:
      log.close()
    results["student_tokenizer"] = {
      "vocab_size": tokenizer.vocab_size,
      "validation_bytes_per_token": info["validation_bytes"] / info["validation_tokens"],
    }
    flat = {f"{name}/{k}": v for name, figures in results.items() for k, v in figures.items()}
    return jobs_loop.write_summary(wd.path, flat)
