"""Tests of kdjax.workdir: atomic files, config records, resumable metrics logs."""
import json
import os

import ml_collections
import numpy as np
import pytest

from kdjax import workdir


def _config(**kw):
  config = ml_collections.ConfigDict({"seed": 0, "model": {"width": 8}})
  config.update(kw)
  return config


def test_prepare_records_then_accepts_same_config(tmp_path):
  assert workdir.prepare(str(tmp_path), _config()) is False
  with open(tmp_path / "config.json") as f:
    assert json.load(f) == {"seed": 0, "model": {"width": 8}}
  assert workdir.prepare(str(tmp_path), _config()) is True


def test_prepare_refuses_different_config_and_names_keys(tmp_path):
  workdir.prepare(str(tmp_path), _config())
  other = _config(seed=1)
  other.model.width = 16
  with pytest.raises(workdir.WorkdirConfigMismatch, match=r"model\.width: 8 -> 16.*seed: 0 -> 1"):
    workdir.prepare(str(tmp_path), other)
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["seed"] == 0  # untouched


def test_metrics_log_drops_records_after_resume_step(tmp_path):
  log = workdir.MetricsLog(str(tmp_path))
  for step in (10, 20, 30):
    log.write(step, train_loss=np.float32(step / 10))
  assert [r["step"] for r in workdir.read_metrics(str(tmp_path))] == [10, 20, 30]
  resumed = workdir.MetricsLog(str(tmp_path), resume_step=20)
  resumed.write(30, train_loss=3.0)
  records = workdir.read_metrics(str(tmp_path))
  assert records == [{"step": 10, "train_loss": 1.0}, {"step": 20, "train_loss": 2.0},
                     {"step": 30, "train_loss": 3.0}]
  assert workdir.MetricsLog(str(tmp_path)).records == []  # fresh start clears the log


def test_atomic_write_leaves_no_temporary_files(tmp_path):
  path = str(tmp_path / "a.npz")
  workdir.save_npz(path, x=np.arange(3))
  workdir.save_npz(path, x=np.arange(4))
  assert os.listdir(tmp_path) == ["a.npz"]
  np.testing.assert_array_equal(np.load(path)["x"], np.arange(4))


def test_plot_curves_writes_png(tmp_path):
  path = str(tmp_path / "curve.png")
  workdir.plot_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], ["loss"], path)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
