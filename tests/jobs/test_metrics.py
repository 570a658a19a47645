"""Tests of kdjax.jobs.metrics: TensorBoard events, NaN kept, progress line, check_finite."""

import math

import numpy as np
import pytest

from kdjax.jobs import metrics, workdir

from .tensorboard_events import read_events, read_scalars


def test_writes_jsonl_tensorboard_and_progress_line_and_keeps_nan(tmp_path, capsys):
  log = metrics.MetricsWriter(str(tmp_path), resume_step=None, total_steps=30, name="demo")
  log.write(10, train_loss=np.float32(0.5), test_accuracy=0.25)
  log.write(20, train_loss=float("nan"), test_accuracy=float("inf"), note="x")
  log.close()
  records = workdir.read_metrics(str(tmp_path))
  assert records[0] == {"step": 10, "train_loss": 0.5, "test_accuracy": 0.25}
  assert math.isnan(records[1]["train_loss"]) and records[1]["test_accuracy"] == math.inf
  scalars = read_scalars(str(tmp_path))
  assert scalars["train_loss"][0] == (10, 0.5) and scalars["test_accuracy"][0] == (10, 0.25)
  assert scalars["train_loss"][1][0] == 20 and math.isnan(scalars["train_loss"][1][1])
  assert "note" not in scalars
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "[demo] step 10/30  train_loss=0.5  test_accuracy=0.25"
  assert lines[1].startswith("[demo] step 20/30  train_loss=nan  test_accuracy=inf  note=x  ")
  assert "steps/s  ETA " in lines[1]


def test_resumed_writer_hides_the_interrupted_runs_later_events(tmp_path):
  log = metrics.MetricsWriter(str(tmp_path), resume_step=None, total_steps=None, name="a")
  for step in (1, 2, 3):
    log.write(step, loss=float(step))
  log.close()
  log = metrics.MetricsWriter(str(tmp_path), resume_step=1, total_steps=None, name="a")
  log.write(2, loss=20.0)
  log.close()
  # tensorboardX's purge_step writes a SessionLog.START at step 2: TensorBoard drops the
  # older events from step 2 on, so the visible curve is 1 -> 1.0, 2 -> 20.0.
  starts = [
    e.step for e in read_events(str(tmp_path)) if e.session_log.status == e.session_log.START
  ]
  assert starts == [2]
  assert read_scalars(str(tmp_path))["loss"][-1] == (2, 20.0)
  assert [r["loss"] for r in workdir.read_metrics(str(tmp_path))] == [1.0, 20.0]


def test_check_finite_names_phase_step_and_value():
  metrics.check_finite("teacher", 3, train_loss=1.0, logits=np.ones(4))
  message = r"\[teacher\] step 7: non-finite train_loss=\[nan\]"
  with pytest.raises(FloatingPointError, match=message):
    metrics.check_finite("teacher", 7, train_loss=float("nan"), accuracy=0.5)
  with pytest.raises(FloatingPointError, match=r"logits=\[1.0, inf"):
    metrics.check_finite("student", 1, logits=np.array([1.0, np.inf]))


def test_writer_without_rate_prints_no_steps_per_second(tmp_path, capsys):
  """Records written at once (one per model, per precomputed round) have no rate to show."""
  log = metrics.MetricsWriter(str(tmp_path), resume_step=None, total_steps=3, name="lm", rate=False)
  for index in range(3):
    log.write(index, model=f"m{index}", eval_bits_per_byte=1.5)
  log.close()
  lines = capsys.readouterr().out.splitlines()
  assert lines == [f"[lm] step {i}/3  model=m{i}  eval_bits_per_byte=1.5" for i in range(3)]
