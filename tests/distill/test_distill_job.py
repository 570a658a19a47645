"""The distillation job (kdjax.distill.job) on its runlocal configs."""

import dataclasses
import functools
import json
import os
import shutil

import numpy as np
import pytest

from experiments import frepo_cifar10, frepo_mnist5k, rfad_cifar10, rfad_digits, rfad_mnist5k
from kdjax import data
from kdjax.distill import evaluation, job, support
from kdjax.jobs import loop as jobs_loop, workdir as workdir_lib
from launch import jobs
from tests._preemption import StopAt


def test_runlocal_writes_the_workdir_and_resumes(tmp_path, monkeypatch, capsys):
  config = rfad_mnist5k.get_config("2,runlocal")
  assert jobs.runner(config) is job.run and config.rfad.learn_labels
  calls, evaluate = [], evaluation.evaluate

  def spy(x, y, *args, **kwargs):
    calls.append((np.asarray(x), np.asarray(y), args[2]))
    return evaluate(x, y, *args, **kwargs)

  monkeypatch.setattr(evaluation, "evaluate", spy)
  summary = job.run(config, str(tmp_path))
  for name in (
    "support.npz",
    "support.png",
    "learning_curve.png",
    "loss.png",
    "summary.json",
    "metrics.jsonl",
    "config.json",
  ):
    assert os.path.exists(tmp_path / name), name
  with np.load(tmp_path / "support.npz") as f:
    x, y = f["x"], f["y"]
  assert x.shape == (20, 28, 28, 1) and y.shape == (20, 10)
  # The finite networks regress the learned, real-valued labels (MSE); the random real start
  # keeps its class ids and the pinned protocol's cross-entropy.
  (x_final, y_final, p_final), (_, y_init, p_init) = calls
  np.testing.assert_array_equal(x_final, x)
  np.testing.assert_array_equal(y_final, y)
  assert p_final.loss == "mse" and p_init.loss == config.evaluation.loss == "xent"
  np.testing.assert_array_equal(y_init, np.repeat(np.arange(10), 2))
  # The evaluation, minutes at 50/class, says what it trains before and what it scored after.
  said = capsys.readouterr().out
  for what, key in (
    ("distilled", "transfer_test_accuracy"),
    ("initial", "transfer_test_accuracy_init"),
  ):
    assert f"[rfad] finite networks on the {what} set: {p_final.seeds} x " in said
    assert f"on the {what} set: test accuracy {summary[key]:.4f} +- " in said
  assert json.loads((tmp_path / "summary.json").read_text()) == pytest.approx(summary)
  for key in (
    "test_accuracy",
    "test_accuracy_init",
    "transfer_test_accuracy",
    "transfer_test_accuracy_init",
  ):
    assert 0.0 <= summary[key] <= 1.0, key
  records = workdir_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in records] == [0, 2, 4]
  assert all(np.isfinite(r["train_loss"]) for r in records[1:])
  # The support set moved away from the random real images it started from.
  assert summary["num_support"] == 20 and not np.allclose(x[:1], 0)
  # The same command again resumes from the last checkpoint: same support set.
  again = job.run(config, str(tmp_path))
  with np.load(tmp_path / "support.npz") as f:
    np.testing.assert_array_equal(f["x"], x)
  assert again["test_accuracy"] == summary["test_accuracy"]
  # ... and, having run no step, keeps the timings of the run that did the steps
  assert summary["distill_timed_steps"] == 4 and summary["distill_seconds"] > 0
  assert again == summary


@pytest.mark.slow
def test_interrupted_run_ends_like_an_uninterrupted_one(tmp_path):
  config = rfad_digits.get_config("1,runlocal")
  job.run(config, str(tmp_path))
  with np.load(tmp_path / "support.npz") as f:
    uninterrupted = f["x"]
  # Lose the last checkpoint, as a run killed between steps 2 and 4 would.
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  os.remove(tmp_path / "support.npz")
  job.run(config, str(tmp_path))
  with np.load(tmp_path / "support.npz") as f:
    np.testing.assert_allclose(f["x"], uninterrupted, rtol=1e-6, atol=1e-6)


@functools.cache
def _rfad_digits():
  """RFAD's runlocal digits problem and its step, compiled once for the runs below."""
  config = rfad_digits.get_config("1,runlocal")
  problem = support.support_problem(config, "rfad")
  init, step, _ = job._method(config, problem.mesh, problem.ds.num_classes)
  return config, problem, init, step


def _rfad_train(workdir):
  """The RFAD job's training (kdjax.distill.support.train, 4 steps, checkpoints at 2 and 4)
  without its KRR evaluation (``test_accuracy`` is 0 here)."""
  config, problem, init, step = _rfad_digits()
  return support.train(
    config,
    str(workdir),
    name="rfad",
    state_key="support",
    state=init(problem.x0, problem.y0),
    step_fn=step,
    accuracy=lambda state: 0.0,
    problem=problem,
  )


def test_rfad_sigterm_saves_exits_and_resumes_to_the_uninterrupted_support_set(
  tmp_path, monkeypatch
):
  full = _rfad_train(tmp_path / "full")
  monkeypatch.setattr(jobs_loop, "PreemptionFlag", lambda: StopAt(3))  # between ckpts 2 and 4
  with pytest.raises(jobs_loop.Preempted):
    _rfad_train(tmp_path / "stopped")
  assert sorted(os.listdir(tmp_path / "stopped" / "checkpoints")) == ["2", "3"]
  monkeypatch.setattr(jobs_loop, "PreemptionFlag", lambda: StopAt(10**6))
  resumed = _rfad_train(tmp_path / "stopped")
  np.testing.assert_array_equal(resumed.state.x, full.state.x)  # bit for bit
  np.testing.assert_array_equal(resumed.state.y, full.state.y)
  assert resumed.records == full.records  # identical train_loss values, step by step
  assert [r["step"] for r in full.records] == [0, 2, 4]


def test_finite_task_regresses_learned_labels_and_classifies_class_labels():
  finite = evaluation.Protocol(loss="xent", steps=7)
  y = np.eye(3, dtype=np.float32)[[2, 0]] - 0.1
  protocol, labels = job.finite_task(finite, y, learned=False)
  assert protocol == finite and labels.tolist() == [2, 0]
  protocol, labels = job.finite_task(finite, 3 * y, learned=True)
  assert protocol == dataclasses.replace(finite, loss="mse")
  np.testing.assert_array_equal(labels, 3 * y)


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("method", "kipp", "config.method must be one of"),
    ("evaluation.network", "vgg", "config.evaluation.network must be one of"),
    ("rfad.per_class", 500, "config.rfad.per_class"),
    (
      "rfad.target_batch_size",
      60,
      "config.rfad.target_batch_size=60 must be a positive multiple of the number of devices",
    ),
    ("rfad.loss", "l1", "config.rfad.loss must be one of"),
    ("rfad.reg", 0.0, "config.rfad.reg must be a finite number > 0"),
    ("frepo.normalization", "batch", "config.frepo.normalization must be one of"),
  ],
)
def test_bad_config(tmp_path, key, value, match):
  config = (frepo_mnist5k if key.startswith("frepo") else rfad_mnist5k).get_config("1,runlocal")
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=match):
    job.run(config, str(tmp_path))


def with_label_10(monkeypatch):
  """Makes ``kdjax.data.load`` return the digits with class 9 relabelled 10 (out of range)."""
  real = data.load

  def load(name, **kwargs):
    ds = real(name, **kwargs)
    return dataclasses.replace(ds, y_train=np.where(ds.y_train == 9, 10, ds.y_train))

  monkeypatch.setattr(data, "load", load)


@pytest.mark.parametrize("bad", ["per_class", "labels"])
def test_data_errors_name_the_key_before_the_workdir_is_made(tmp_path, monkeypatch, bad):
  config = rfad_digits.get_config("1,runlocal")
  if bad == "per_class":
    config.rfad.per_class = 1000
    match = r"config.rfad.per_class: per_class must be in \[1, "
  else:
    with_label_10(monkeypatch)
    match = r"config.dataset.name='digits': train labels must lie in \[0, 10\), got range \[0, 10\]"
  with pytest.raises(ValueError, match=match):
    job.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_frepo_runlocal(tmp_path):
  summary = job.run(frepo_mnist5k.get_config("1,runlocal"), str(tmp_path))
  with np.load(tmp_path / "support.npz") as f:
    assert f["x"].shape == (10, 28, 28, 1)
    assert not np.allclose(f["y"], np.eye(10) - 0.1)  # labels are learned
  for key in ("test_accuracy", "transfer_test_accuracy", "transfer_test_accuracy_init"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path))] == [0, 2, 4]


def test_configs_and_sweeps():
  for module in (rfad_mnist5k, rfad_digits, rfad_cifar10, frepo_mnist5k, frepo_cifar10):
    for arg in ("1", "50", "10,runlocal"):
      config = module.get_config(arg)
      job.validate(config)
    fifty = module.get_config("50")
    assert fifty[fifty.method].per_class == 50
    names = [p["name"] for p in module.sweep()]
    assert len(names) == len(set(names)) >= 3
  assert rfad_cifar10.get_config("10").dataset.preprocess == "zca"
  assert frepo_cifar10.get_config("10").dataset.preprocess == "zca"
