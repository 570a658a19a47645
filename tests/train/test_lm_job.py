"""Tests of the LM distillation job (kdjax.train.lm_job): config errors, a tiny end-to-end run,
resume, a teacher loaded from its own workdir; the whole runlocal comparison is slow."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest

from experiments import lm_kd_pystdlib
from kdjax.jobs import preemption, workdir as workdir_lib
from kdjax.train import lm, lm_job


def _run(config, workdir):
  """The job's flat summary grouped by model (``{model: {figure: value}}``)."""
  return lm_job.by_model(lm_job.run(config, workdir))


def _tiny(methods="ce,gkd"):
  c = lm_kd_pystdlib.get_config("runlocal")
  c.methods = methods
  c.dataset.seq_len = 16
  c.eval_sequences, c.eval_batch_size, c.num_sample_prompts = 8, 8, 8
  c.log_every, c.eval_every, c.checkpoint_every = 2, 4, 4
  c.teacher.num_steps, c.student.num_steps = 4, 4
  c.distill.prompt_len = 4
  c.distill.lam = 1.0  # every GKD step samples from the student
  return c


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("distill.lam", 1.5, "config.distill.lam must be a finite number >= 0 and <= 1, got 1.5"),
    ("distill.beta", -0.1, "config.distill.beta must be a finite number >= 0 and <= 1"),
    ("distill.loss_temperature", 0.0, "loss_temperature must be a finite number > 0"),
    ("distill.sample_temperature", -1.0, "sample_temperature must be a finite number > 0"),
    ("distill.prompt_len", 16, "prompt_len must be in \\[1, dataset.seq_len=16\\)"),
    ("dataset.seq_len", 64, "seq_len=64 does not fit config.teacher.model.max_len=32"),
    ("student.model.vocab_size", 300, "teacher vocab_size=259, student vocab_size=300"),
    ("batch_size", 12, "batch_size=12 must be a positive multiple"),
    ("methods", "ce,dpo", "config.methods must be"),
    ("distill.top_p", 0.0, "config.distill.top_p must be a finite number > 0 and <= 1"),
    ("micro_batches", 0, "config.micro_batches must be an integer >= 1"),
    ("num_sample_prompts", 12, "num_sample_prompts=12 must be a positive multiple"),
    ("student.optimizer.learning_rate", float("nan"), "config.student.optimizer.learning_rate"),
    ("student.num_steps", -1, "config.student.num_steps must be an integer >= 1, got -1"),
    ("methods", "adaspec,token_kd", "adaspec_reference='token_kd' must be one of"),
    ("methods", "ce,adaspec", "listed before 'adaspec'"),
    ("distill.adaspec_fraction", 1.5, "adaspec_fraction must be a finite number > 0 and <= 1"),
  ],
)
def test_bad_configs_raise_value_errors_naming_the_key(tmp_path, key, value, message):
  c = _tiny()
  first, _, last = key.rpartition(".")
  (c[first] if first else c)[last] = value
  with pytest.raises(ValueError, match=message):
    _run(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")  # validated before any work


def test_a_teacher_workdir_without_a_finished_teacher_is_refused(tmp_path):
  c = _tiny()
  c.teacher_workdir = str(tmp_path)
  with pytest.raises(ValueError, match="holds no finished teacher"):
    _run(c, str(tmp_path / "run"))


def _sigterm_after_the_first_step(monkeypatch):
  """Makes the next jitted train step send SIGTERM to this process after its first call."""
  jit_train_step = lm.jit_train_step

  def patched(*args, **kwargs):
    step_fn = jit_train_step(*args, **kwargs)
    calls = []

    def step(*step_args):
      out = step_fn(*step_args)
      calls.append(1)
      if len(calls) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
      return out

    return step

  monkeypatch.setattr(lm, "jit_train_step", patched)


def _two_step_run(tmp_path, mode: str, same_size: bool) -> tuple[str, dict]:
  """A 1-layer teacher and one student (2 steps each, batch 8); ``(workdir, summary)``."""
  c = _tiny(mode)
  c.teacher.model.num_layers = 1
  if same_size:  # the student also gets the teacher's optimizer block (both runlocal's)
    c.fsdp = False  # FSDP: test_lm_steps (8 devices vs 1) and the slow runs here
    c.student.model = c.teacher.model.to_dict()
  c.teacher.num_steps = c.student.num_steps = c.log_every = c.eval_every = 2
  c.checkpoint_every, c.batch_size = 2, 8
  workdir = str(tmp_path / "run")
  return workdir, _run(c, workdir)


def _check_two_model_run(workdir: str, summary: dict, mode: str) -> None:
  """summary.json, finite figures, the top-level metrics records and the last checkpoint."""
  assert list(summary) == ["teacher", mode]
  with open(os.path.join(workdir, "summary.json")) as f:
    _same(lm_job.by_model(json.load(f)), summary)
  for name, figures in summary.items():
    assert set(figures) == {
      "step",
      "eval_bits_per_byte",
      "teacher_nll_of_samples",
      "tokens_per_second",
      "wall_time_s",
    }, name
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), (name, figures)
    assert figures["step"] == 2 and figures["eval_bits_per_byte"] < 20, name
    assert figures["teacher_nll_of_samples"] < 20, name
  records = workdir_lib.read_metrics(workdir)
  assert [(r["step"], r["model"], r["steps"]) for r in records] == [(0, "teacher", 2), (1, mode, 2)]
  for record, name in zip(records, summary):
    assert record["eval_bits_per_byte"] == summary[name]["eval_bits_per_byte"]
  assert os.listdir(os.path.join(workdir, mode, "checkpoints")) == ["2"]


def test_a_teacher_and_a_sequence_kd_student_of_its_size_run_one_compiled_train_step(
  tmp_path, monkeypatch, capsys
):
  """The default run's end-to-end LM job: a 1-layer teacher and a seq_kd student of the same
  architecture and optimizer share their train step, init, sampling and evaluation
  programs, so the job compiles each once (8 s of CPU, 13 s wall un-niced at load 10)."""
  jitted = []
  jit_train_step = lm.jit_train_step
  monkeypatch.setattr(lm, "jit_train_step", lambda *a: jitted.append(1) or jit_train_step(*a))
  workdir, summary = _two_step_run(tmp_path, "seq_kd", same_size=True)
  assert len(jitted) == 1
  _check_two_model_run(workdir, summary, "seq_kd")
  per_model = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[lm] ")]
  assert len(per_model) == 2 and not any("steps/s" in l for l in per_model)  # no rate there


# Slow: 13 s of CPU, 20 s wall (un-niced at load 10): a teacher and a student of different
# sizes compile two train steps, inits and sampling programs; the same-size seq_kd run
# above (8 s of CPU) is its default-run sibling.
@pytest.mark.slow
def test_tiny_teacher_and_token_kd_student_write_finite_summaries_and_metrics(tmp_path):
  """The smallest end-to-end token-KD job: two steps per model (the second one is timed)."""
  workdir, summary = _two_step_run(tmp_path, "token_kd", same_size=False)
  _check_two_model_run(workdir, summary, "token_kd")


# Slow: ~65 s of CPU on the 8 fake devices (each phase compiles its init, train step,
# evaluation and sampling programs).
@pytest.mark.slow
def test_tiny_run_of_every_mode_writes_finite_summaries_and_a_metrics_record_per_model(
  tmp_path,
):
  c = _tiny("ce,token_kd,seq_kd,gkd,adaspec")
  c.teacher.model.num_layers = 1
  c.teacher.num_steps = c.student.num_steps = c.log_every = c.eval_every = 2
  c.batch_size, c.distill.lam = 8, 0.5
  workdir = str(tmp_path / "run")
  summary = _run(c, workdir)
  models = ["teacher", "ce", "token_kd", "seq_kd", "gkd", "adaspec"]
  assert list(summary) == models
  with open(os.path.join(workdir, "summary.json")) as f:
    _same(lm_job.by_model(json.load(f)), summary)
  keys = {"eval_bits_per_byte", "teacher_nll_of_samples", "tokens_per_second", "wall_time_s"}
  for name in models:
    figures = summary[name]
    assert keys <= set(figures) and ("gap_closed" in figures) == (name != "teacher"), name
    assert all(math.isfinite(v) for v in figures.values()), (name, figures)
    assert figures["step"] == 2 and 0 < figures["eval_bits_per_byte"] < 20, name
  assert summary["ce"]["gap_closed"] == 0.0
  records = workdir_lib.read_metrics(workdir)
  assert [(r["step"], r["model"]) for r in records] == list(enumerate(models))
  assert [r["eval_bits_per_byte"] for r in records] == [
    summary[m]["eval_bits_per_byte"] for m in models
  ]


def _same(a, b):
  assert set(a) == set(b)
  for name in a:
    assert a[name] == pytest.approx(b[name]), name


@pytest.mark.slow  # ~1 min on quiet cores (compiles three runs), minutes under load
def test_tiny_gkd_run_resumes_after_sigterm_to_the_figures_of_an_uninterrupted_run(
  tmp_path, monkeypatch
):
  c = _tiny("gkd")
  c.log_every = 1
  workdir = str(tmp_path / "run")
  summary = _run(c, workdir)
  assert set(summary) == {"teacher", "gkd"}
  with open(os.path.join(workdir, "summary.json")) as f:
    _same(lm_job.by_model(json.load(f)), summary)
  for path in ("teacher/metrics.jsonl", "gkd/checkpoints", "gkd/loss.png", "bits_per_byte.png"):
    assert os.path.exists(os.path.join(workdir, path)), path
  # The same command again: every model is finished, nothing retrains, same summary.
  _same(_run(c, workdir), summary)
  # SIGTERM after the first GKD step of a fresh run (its teacher already trained): the job
  # saves step 1 and stops; the same call then resumes it to the uninterrupted figures.
  killed = str(tmp_path / "killed")
  shutil.copytree(os.path.join(workdir, "teacher"), os.path.join(killed, "teacher"))
  shutil.copy(os.path.join(workdir, "config.json"), killed)
  _sigterm_after_the_first_step(monkeypatch)
  with pytest.raises(preemption.Preempted):
    _run(c, killed)
  assert sorted(os.listdir(os.path.join(killed, "gkd", "checkpoints"))) == ["1"]
  monkeypatch.undo()
  resumed = _run(c, killed)
  for key in ("eval_bits_per_byte", "teacher_nll_of_samples"):
    assert resumed["gkd"][key] == pytest.approx(summary["gkd"][key], rel=1e-5), key
  steps = [r["step"] for r in workdir_lib.read_metrics(os.path.join(killed, "gkd"))]
  assert steps == list(range(1, int(c.student.num_steps) + 1))


@pytest.mark.slow
def test_gap_closed_and_a_teacher_reused_from_its_own_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  summary = _run(_tiny("ce,token_kd"), workdir)
  t, ce = summary["teacher"]["eval_bits_per_byte"], summary["ce"]["eval_bits_per_byte"]
  assert summary["token_kd"]["gap_closed"] == pytest.approx(
    (ce - summary["token_kd"]["eval_bits_per_byte"]) / (ce - t)
  )
  assert summary["ce"]["gap_closed"] == 0.0
  # A new run with the finished teacher of the first one (loaded, not retrained).
  c = _tiny("seq_kd")
  c.teacher_workdir = workdir
  reused = _run(c, str(tmp_path / "second"))
  assert reused["teacher"] == pytest.approx(summary["teacher"])
  assert not os.path.exists(tmp_path / "second" / "teacher")
  # A teacher of another vocabulary size is refused, naming both sizes.
  c = _tiny("ce")
  c.teacher_workdir = workdir
  c.student.model.vocab_size = 300
  with pytest.raises(ValueError, match="teacher vocab_size=259, student vocab_size=300"):
    _run(c, str(tmp_path / "third"))


@pytest.mark.slow
def test_runlocal_comparison_through_the_launcher(tmp_path):
  subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.main",
      "--config=experiments/lm_kd_pystdlib.py:runlocal",
      f"--workdir={tmp_path}",
    ],
    check=True,
    cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  )
  with open(tmp_path / "summary.json") as f:
    summary = lm_job.by_model(json.load(f))
  assert set(summary) == {"teacher", "ce", "token_kd", "seq_kd", "gkd"}
  for name in ("ce", "token_kd", "seq_kd", "gkd"):
    assert {"eval_bits_per_byte", "teacher_nll_of_samples", "gap_closed"} <= set(summary[name])


def _lm1b_runlocal(tmp_path):
  from experiments import lm_kd_lm1b

  c = lm_kd_lm1b.get_config("runlocal")
  c.dataset.spm_model = str(tmp_path / "spm" / "lm1b.model")
  return c


@pytest.mark.slow
def test_lm1b_config_trains_its_sentencepiece_vocabulary_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  c = _lm1b_runlocal(tmp_path)
  with tfds.testing.mock_data(num_examples=64):
    data = lm_job._load_data(c)
    assert os.path.exists(c.dataset.spm_model)
    again = lm_job._load_data(c)  # reuses the trained model
  assert data.vocab_size == again.vocab_size == c.student.model.vocab_size == 300
  assert (data.train == again.train).all() and data.train.max() < 300
  lm_job.validate(c)
  lm_job.check_models(c, data.vocab_size)
  c.dataset.tokenizer = "wordpiece"
  with pytest.raises(ValueError, match="dataset.tokenizer must be"):
    lm_job._load_data(c)


@pytest.mark.slow
def test_lm1b_runlocal_job_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  c = _lm1b_runlocal(tmp_path)
  c.methods = "token_kd"
  c.dataset.seq_len, c.distill.prompt_len = 16, 4
  c.teacher.num_steps, c.student.num_steps = 4, 4
  with tfds.testing.mock_data(num_examples=64):
    summary = _run(c, str(tmp_path / "run"))
  assert summary["token_kd"]["eval_bits_per_byte"] > 0
