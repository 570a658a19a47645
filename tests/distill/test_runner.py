"""End-to-end tests of the KIP job: launcher, workdir files, resume equality, bad input."""

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import kip_mnist5k
from kdjax import data
from kdjax.distill import runner
from kdjax.jobs import workdir as workdir_lib
from kdjax.kernels import stax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "kip_mnist5k.py")


def config(arg="1", **overrides):
  c = kip_mnist5k.get_config(arg)
  c.update_from_flattened_dict(overrides)
  return c


def tiny(**overrides):
  """Digits, 2 images per class, 6 steps, no transfer check: a few seconds."""
  base = {
    "dataset.name": "digits",
    "kip.per_class": 2,
    "num_steps": 6,
    "kip.target_batch_size": 64,
    "eval_every": 2,
    "log_every": 2,
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
    "evaluation.enabled": False,
  }
  return config("2", **{**base, **overrides})


def test_launch_main_writes_metrics_support_and_plots(tmp_path):
  workdir = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "launch.main",
    f"--config={CONFIG}:1",
    f"--workdir={workdir}",
    "--config.num_steps=4",
    "--config.kip.target_batch_size=200",
    "--config.eval_every=2",
    "--config.checkpoint_every=2",
    "--config.evaluation.num_steps=3",
    "--config.evaluation.width=16",
  ]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
  assert "[kip] step 4/4  train_loss=" in out and "transfer (mlp, width 16)" in out
  assert "test_accuracy=" in out.split("[kip] step 4/4")[1].splitlines()[0]
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [0, 2, 4]
  assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records)
  assert "train_loss" in records[-1]
  support = np.load(workdir / "support.npz")
  assert support["x"].shape == (10, 28, 28, 1) and support["y"].shape == (10, 10)
  for name in ("support.png", "learning_curve.png", "loss.png", "config.json"):
    assert (workdir / name).stat().st_size > 0
  # orbax checkpoints (the newest keep_checkpoints=2) and TensorBoard event files
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert (workdir / "checkpoints" / "4" / "default" / "_METADATA").exists()
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["num_support"] == 10 and 0 <= summary["transfer_test_accuracy"] <= 1
  assert summary["test_accuracy"] == pytest.approx(records[-1]["test_accuracy"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """``(workdir, summary)`` of one uninterrupted ``tiny()`` run, shared by the resume tests
  (checkpoint_every does not change what a run computes or logs)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return workdir, runner.run(tiny(), str(workdir))


@pytest.mark.slow
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, uninterrupted):
  c = tiny()
  full_dir, full = uninterrupted
  resumed_dir = tmp_path / "resumed"
  runner.run(c, str(resumed_dir))
  # Simulate a kill just after the step-2 checkpoint: later checkpoints and outputs lost.
  for name in ("checkpoints/4", "checkpoints/6"):
    shutil.rmtree(resumed_dir / name)
  os.remove(resumed_dir / "support.npz")
  again = runner.run(c, str(resumed_dir))
  a, b = np.load(full_dir / "support.npz"), np.load(resumed_dir / "support.npz")
  np.testing.assert_array_equal(a["x"], b["x"])
  np.testing.assert_array_equal(a["y"], b["y"])
  assert again["test_accuracy"] == full["test_accuracy"]
  assert (full_dir / "metrics.jsonl").read_text() == (resumed_dir / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_label_solve_finishing_step_lowers_the_training_loss(tmp_path):
  summary = runner.run(tiny(**{"kip.label_solve": True}), str(tmp_path))
  assert 0.0 <= summary["label_solve_test_accuracy"] <= 1.0
  assert summary["test_accuracy"] == summary["label_solve_test_accuracy"]
  assert summary["label_solve_train_loss"] < summary["kip_train_loss"]


def test_fc_kernel_equals_stax_network_with_flatten():
  c = config("1")
  kernel = runner.build_kernel(c.kernel)
  k = c.kernel
  layers = [stax.Flatten()]
  for _ in range(k.depth):
    layers += [stax.Dense(k.width, W_std=k.W_std, b_std=k.b_std), stax.Relu()]
  _, _, reference = stax.serial(*layers, stax.Dense(1, W_std=k.W_std, b_std=k.b_std))
  x1 = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
  x2 = np.random.default_rng(1).normal(size=(5, 4, 4, 2)).astype(np.float32)
  np.testing.assert_allclose(kernel(x1, x2), reference(x1, x2, get="ntk"), rtol=1e-5)


def test_conv_kernel_builds_and_is_symmetric():
  c = config("1", **{"kernel.name": "conv", "kernel.depth": 1})
  kernel = runner.build_kernel(c.kernel)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 4, 1)), jnp.float32)
  k = np.asarray(kernel(x, x))
  assert k.shape == (3, 3)
  np.testing.assert_allclose(k, k.T, rtol=1e-5)


@pytest.mark.parametrize(
  "overrides,match",
  [
    ({"dataset.name": "imagenet21k"}, "name must be one of"),
    ({"kernel.name": "rbf"}, r"config.kernel.name must be one of"),
    ({"kernel.kind": "both"}, r"config.kernel.kind must be"),
    ({"dataset.preprocess": "pca"}, r"config.dataset.preprocess must be one of"),
    ({"kip.per_class": 500}, r"per_class must be in \[1, "),
    ({"optimizer.schedule": "step"}, r"config.optimizer.schedule must be"),
    ({"num_steps": 0}, r"config.num_steps must be an integer >= 1, got 0"),
    ({"optimizer.learning_rate": 0.0}, r"config.optimizer.learning_rate must be a finite"),
    (
      {"optimizer.learning_rate": float("nan")},
      r"config.optimizer.learning_rate must be a finite number > 0, got nan",
    ),
    ({"kip.target_batch_size": 60}, "divisible by the 8 devices"),
  ],
)
def test_bad_config_is_a_clear_error(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    runner.run(tiny(**overrides), str(tmp_path))


def test_bad_transfer_settings_are_refused_before_any_work(tmp_path):
  bad = tiny(**{"evaluation.enabled": True, "evaluation.learning_rate": 0.0})
  with pytest.raises(ValueError, match="config.evaluation.learning_rate must be a finite"):
    runner.run(bad, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # no workdir, no KIP step


def test_labels_out_of_range_are_refused_before_any_work(tmp_path, monkeypatch):
  real = data.load
  monkeypatch.setattr(
    data,
    "load",
    lambda name, **kw: dataclasses.replace(real(name, **kw), y_test=real(name, **kw).y_test - 1),
  )
  with pytest.raises(ValueError, match=r"config.dataset.name='digits': test labels must lie in"):
    runner.run(tiny(), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_diverging_support_is_a_clear_error(tmp_path):
  with pytest.raises(FloatingPointError, match="non-finite"):
    runner.run(
      tiny(**{"kip.reg": 1e30, "optimizer.learning_rate": 1e30, "optimizer.schedule": "constant"}),
      str(tmp_path),
    )


def test_resumed_run_logs_the_same_metrics_when_checkpoints_fall_between_records(
  tmp_path, uninterrupted
):
  """checkpoint_every=3 is not a multiple of log_every=eval_every=2: the step-4 record's
  train_loss averages steps 3 and 4, across the resume from the step-3 checkpoint."""
  c = tiny(checkpoint_every=3)
  full_dir, full = uninterrupted
  resumed_dir = tmp_path / "resumed"
  runner.run(c, str(resumed_dir))
  # The newest checkpoint (step 6) is corrupt: 16 garbled bytes in the middle of its largest
  # data file (which orbax alone restores as changed arrays). Its manifest check fails: the
  # run falls back to step 3, keeps the bad one aside and ends as the uninterrupted run did.
  path = max(
    glob.glob(
      str(resumed_dir / "checkpoints" / "6" / "default" / "**" / "d" / "*"), recursive=True
    ),
    key=os.path.getsize,
  )
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2 - 8)
    f.write(np.random.default_rng(0).bytes(16))
  again = runner.run(c, str(resumed_dir))
  assert [d for d in os.listdir(resumed_dir / "checkpoints") if d.startswith("corrupt-6-")]
  assert again["test_accuracy"] == full["test_accuracy"]
  full_log, resumed_log = (workdir_lib.read_metrics(str(d)) for d in (full_dir, resumed_dir))
  assert [r["step"] for r in full_log] == [0, 2, 4, 6]
  assert resumed_log == full_log  # identical train_loss values, step by step


def test_old_npz_workdir_gets_a_clear_message(tmp_path):
  os.makedirs(tmp_path / "checkpoints")
  (tmp_path / "checkpoints" / "ckpt_200.npz").write_bytes(b"old")
  with pytest.raises(ValueError, match=r"old npz format \(ckpt_200.npz\).*new --workdir"):
    runner.run(tiny(), str(tmp_path))
