"""Tests of kdjax.jobs.workdir: path errors, the lock, config records, atomic files."""

import errno
import json
import os
import signal
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from kdjax.jobs import figures, metrics, workdir


def _config(**kw):
  config = ml_collections.ConfigDict({"seed": 0, "model": {"width": 8}})
  config.update(kw)
  return config


def test_open_workdir_records_then_accepts_same_config(tmp_path):
  with workdir.open_workdir(str(tmp_path), _config()) as wd:
    assert wd.resuming is False and wd.path == str(tmp_path)
  with open(tmp_path / "config.json") as f:
    assert json.load(f) == {"seed": 0, "model": {"width": 8}}
  with workdir.open_workdir(str(tmp_path), _config()) as wd:
    assert wd.resuming is True


def test_open_workdir_refuses_different_config_and_names_keys(tmp_path):
  with workdir.open_workdir(str(tmp_path), _config()):
    pass
  other = _config(seed=1)
  other.model.width = 16
  with pytest.raises(workdir.WorkdirConfigMismatch, match=r"model\.width: 8 -> 16.*seed: 0 -> 1"):
    with workdir.open_workdir(str(tmp_path), other):
      pass
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["seed"] == 0  # untouched


_HOLD = (
  "import sys, time; from kdjax.jobs import workdir\n"
  "with workdir.lock(sys.argv[1]):\n"
  "  print('locked', flush=True); time.sleep(60)\n"
)


def _holder(path):
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLD, path], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
  )
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_run_is_refused_with_the_holders_pid_and_a_killed_holder_leaves_no_lock(tmp_path):
  proc = _holder(str(tmp_path))
  try:
    with pytest.raises(workdir.WorkdirBusy, match=rf"{tmp_path}.*pid {proc.pid}"):
      with workdir.open_workdir(str(tmp_path), _config()):
        pass
    assert not (tmp_path / "config.json").exists()  # refused before touching anything
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  with open(tmp_path / ".lock") as f:
    assert f.read().strip() == str(proc.pid)  # the stale lock file is still there ...
  with workdir.open_workdir(str(tmp_path), _config()) as wd:  # ... and does not block
    assert wd.resuming is False
    with open(tmp_path / ".lock") as f:
      assert f.read().strip() == str(os.getpid())


def test_workdir_path_errors_say_what_is_wrong_in_one_line(tmp_path, monkeypatch):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  cases = [
    ("", "empty"),
    (str(a_file), "the workdir is a file"),
    (str(a_file / "run"), f"its parent '{a_file}' is a file"),
  ]
  for path, message in cases:
    with pytest.raises(workdir.WorkdirError, match=message) as info:
      with workdir.open_workdir(path, _config()):
        pass
    assert "\n" not in str(info.value)

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))

  monkeypatch.setattr(os, "makedirs", read_only)
  with pytest.raises(workdir.WorkdirError, match=r"'/ro/run' cannot be created: Read-only"):
    workdir.check_path("/ro/run")


def test_metrics_writer_drops_records_after_resume_step(tmp_path):
  log = metrics.MetricsWriter(str(tmp_path), resume_step=None, total_steps=30, name="t")
  for step in (10, 20, 30):
    log.write(step, train_loss=np.float32(step / 10))
  log.close()
  assert [r["step"] for r in workdir.read_metrics(str(tmp_path))] == [10, 20, 30]
  resumed = metrics.MetricsWriter(str(tmp_path), resume_step=20, total_steps=30, name="t")
  resumed.write(30, train_loss=3.0)
  resumed.close()
  records = workdir.read_metrics(str(tmp_path))
  assert records == [
    {"step": 10, "train_loss": 1.0},
    {"step": 20, "train_loss": 2.0},
    {"step": 30, "train_loss": 3.0},
  ]
  fresh = metrics.MetricsWriter(str(tmp_path), resume_step=None, total_steps=30, name="t")
  assert fresh.records == []  # a fresh start clears the log
  fresh.close()


def test_atomic_write_leaves_no_temporary_files(tmp_path):
  path = str(tmp_path / "a.npz")
  workdir.save_npz(path, x=np.arange(3))
  workdir.save_npz(path, x=np.arange(4))
  assert os.listdir(tmp_path) == ["a.npz"]
  np.testing.assert_array_equal(np.load(path)["x"], np.arange(4))


def test_plot_curves_and_image_grid_write_png(tmp_path):
  path = str(tmp_path / "curve.png")
  figures.plot_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], ["loss"], path)
  figures.image_grid(np.random.rand(5, 4, 4, 1), 2, str(tmp_path / "grid.png"))
  for name in ("curve.png", "grid.png"):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(tmp_path)) == ["curve.png", "grid.png"]


def test_open_workdir_removes_temporary_files_of_a_killed_atomic_write(tmp_path):
  leftover = tmp_path / ".tmp-metrics.jsonlx8k2"
  leftover.write_text("half a file")
  (tmp_path / "keep.txt").write_text("x")
  with workdir.open_workdir(str(tmp_path), _config()):
    assert not leftover.exists() and (tmp_path / "keep.txt").exists()
