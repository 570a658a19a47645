"""Tests of kdjax.train.train_job.run: resume after preemption, teacher loading, generations,
errors."""

import glob
import importlib
import json
import os

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from kdjax.jobs import checkpoint, workdir as workdir_lib
from kdjax.train import train_job


def _config(path, arg="runlocal", **overrides):
  """``experiments/NAME.py``'s config for ``arg`` with dotted-key overrides."""
  name = os.path.splitext(os.path.basename(path))[0]
  config = importlib.import_module(f"experiments.{name}").get_config(arg)
  config.update_from_flattened_dict(overrides)
  return config


def _final_state(workdir):
  return checkpoint.load_arrays(os.path.join(workdir, "checkpoints"))


class _StopAfter(checkpoint.PreemptionFlag):
  """A SIGTERM that arrives after ``calls`` steps (the loop asks once per step)."""

  calls = 0

  def is_set(self):
    type(self).calls -= 1
    return type(self).calls < 0


def test_preempted_and_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
  config = _config(
    "experiments/kd_mnist5k.py",
    "runlocal,student_only",
    num_steps=30,
    checkpoint_every=10,
    eval_every=15,
  )
  straight = train_job.run(config, str(tmp_path / "a"))

  monkeypatch.setattr(train_job, "PreemptionFlag", _StopAfter)
  _StopAfter.calls = 17  # SIGTERM during step 18: saved at 18, after the checkpoint at 10
  with pytest.raises(train_job.Preempted):
    train_job.run(config, str(tmp_path / "b"))
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path / "b"))][-1] == 15
  assert _final_state(str(tmp_path / "b"))[0] == 18
  _StopAfter.calls = 10**6
  resumed = train_job.run(config, str(tmp_path / "b"))

  assert resumed == straight
  for d in "ab":  # job=train writes its summary (the final record's figures)
    assert json.loads((tmp_path / d / "summary.json").read_text()) == straight
  assert set(straight) >= {"test_accuracy", "test_loss", "train_loss"}
  logs = [workdir_lib.read_metrics(str(tmp_path / d)) for d in "ab"]
  assert [r["step"] for r in logs[0]] == [5, 10, 15, 20, 25, 30]
  assert logs[1] == logs[0]  # identical train_loss (and eval) values, step by step
  (step_a, state_a), (step_b, state_b) = (
    _final_state(str(tmp_path / "a")),
    _final_state(str(tmp_path / "b")),
  )
  assert step_a == step_b == 30
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)  # bit-identical
  assert os.path.exists(tmp_path / "b" / "loss.png")
  assert os.path.exists(tmp_path / "b" / "config.json")


@pytest.mark.slow
def test_kd_run_trains_its_teacher_then_reuses_it_from_teacher_workdir(tmp_path):
  config = _config("experiments/kd_mnist5k.py", num_steps=10, eval_every=10)
  first = train_job.run(config, str(tmp_path / "kd"))
  assert first["teacher_test_accuracy"] > 0.3  # 20 steps of the teacher already learn
  assert 0.0 <= first["test_accuracy"] <= 1.0
  teacher_dir = str(tmp_path / "kd" / "teacher")
  assert json.load(open(os.path.join(teacher_dir, "config.json")))["method"] == "supervised"
  for run_dir, steps in ((str(tmp_path / "kd"), 10), (teacher_dir, 20)):  # orbax + TensorBoard
    assert os.path.exists(os.path.join(run_dir, "checkpoints", str(steps), "default", "_METADATA"))
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))

  config.teacher_workdir = teacher_dir
  second = train_job.run(config, str(tmp_path / "kd_loaded"))
  assert not os.path.exists(tmp_path / "kd_loaded" / "teacher")
  assert second["test_accuracy"] == first["test_accuracy"]
  assert workdir_lib.read_metrics(str(tmp_path / "kd_loaded")) == workdir_lib.read_metrics(
    str(tmp_path / "kd")
  )


@pytest.mark.slow
def test_generations_train_each_from_the_previous(tmp_path):
  config = _config("experiments/born_again_mnist5k.py", num_steps=10, generations=2)
  summary = train_job.run(config, str(tmp_path / "ban"))
  assert set(summary) >= {"gen0_test_accuracy", "gen1_test_accuracy", "test_accuracy"}
  records = workdir_lib.read_metrics(str(tmp_path / "ban"))
  assert [r["step"] for r in records] == [0, 1]
  assert os.path.exists(tmp_path / "ban" / "gen_1" / "metrics.jsonl")
  # Generation 1 starts from the same initialisation and batches but a different loss.
  gen0, gen1 = (workdir_lib.read_metrics(str(tmp_path / "ban" / f"gen_{g}")) for g in (0, 1))
  assert gen0[0]["train_loss"] != gen1[0]["train_loss"]


def test_bad_inputs_give_clear_errors(tmp_path):
  config = _config("experiments/kd_mnist5k.py", "runlocal,student_only")
  train_job.run(
    _config("experiments/kd_mnist5k.py", "runlocal,student_only", num_steps=5), str(tmp_path / "w")
  )
  with pytest.raises(workdir_lib.WorkdirConfigMismatch, match="num_steps: 5 -> 20"):
    train_job.run(config, str(tmp_path / "w"))
  with pytest.raises(ValueError, match="config.batch_size=12 must be a positive multiple"):
    train_job.run(
      _config("experiments/kd_mnist5k.py", "runlocal,student_only", batch_size=12),
      str(tmp_path / "b"),
    )
  with pytest.raises(ValueError, match="config.model.num_classes=7 but dataset 'mnist5k' has 10"):
    train_job.run(
      _config("experiments/kd_mnist5k.py", "runlocal,student_only", **{"model.num_classes": 7}),
      str(tmp_path / "c"),
    )
  with pytest.raises(
    ValueError, match="config.teacher.model.num_classes=100 but dataset 'mnist5k' has 10"
  ):
    train_job.run(
      _config("experiments/kd_mnist5k.py", **{"teacher.model.num_classes": 100}),
      str(tmp_path / "d"),
    )
  with pytest.raises(ValueError, match="teacher_workdir=.* holds no config.json"):
    train_job.run(
      _config("experiments/kd_mnist5k.py", teacher_workdir=str(tmp_path / "none")),
      str(tmp_path / "e"),
    )
  with pytest.raises(ValueError, match="unknown config arg 'runlocl'"):
    _config("experiments/kd_mnist5k.py", "runlocl")


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"method": "kdd"}, r"config.method must be one of"),
    ({"kd.loss": "nope"}, r"config.kd.loss: loss must be one of"),
    ({"kd.loss_kwargs.temperature": 0.0}, r"temperature must be .*> 0"),
    ({"kd.loss_kwargs.temperature": float("inf")}, r"temperature must be .*> 0"),
    ({"optimizer.learning_rate": 0.0}, r"learning_rate must be a finite number > 0, got 0.0"),
    ({"optimizer.learning_rate": float("nan")}, r"learning_rate must be a finite .*, got nan"),
    (
      {"teacher.optimizer.learning_rate": float("nan")},
      r"config.teacher.optimizer.learning_rate must be a finite number > 0",
    ),
    ({"optimizer.schedule": "linear"}, r"config.optimizer.schedule must be one of"),
    ({"teacher.augment": "flip"}, r"config.augment must be one of"),
    ({"dataset.preprocess": "pca"}, r"config.dataset.preprocess must be one of"),
  ],
)
def test_whole_config_is_validated_before_any_work(tmp_path, overrides, match):
  config = _config("experiments/kd_mnist5k.py", **overrides)
  with pytest.raises(ValueError, match=match):
    train_job.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # refused before the teacher (or anything) ran


def test_kd_loss_kwargs_are_validated_before_the_teacher_trains(tmp_path):
  config = _config("experiments/kd_mnist5k.py")
  config.kd.loss_kwargs = {"temp": 4.0}
  with pytest.raises(ValueError, match=r"kd.loss_kwargs \['temp'\] are not arguments"):
    train_job.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_teacher_workdir_without_a_finished_teacher_is_a_clear_error(tmp_path):
  unfinished = tmp_path / "teacher"
  unfinished.mkdir()
  (unfinished / "config.json").write_text(json.dumps({"num_steps": 20}))
  with pytest.raises(
    ValueError,
    match=r"teacher_workdir=.* holds no finished teacher \(last "
    r"checkpoint None, num_steps 20\)",
  ):
    train_job.run(
      _config("experiments/kd_mnist5k.py", teacher_workdir=str(unfinished)), str(tmp_path / "w")
    )


def test_diverging_teacher_stops_kd_with_an_error_naming_phase_and_step(tmp_path):
  """The issue's run, with a diverging instead of a NaN teacher learning rate (NaN is now
  refused by validation): it used to train a student on a NaN teacher and exit 0."""
  config = _config(
    "experiments/kd_mnist5k.py", **{"teacher.optimizer.learning_rate": 1e30, "kd.ce_weight": 0.0}
  )
  with pytest.raises(FloatingPointError, match=r"\[teacher\] step 5: non-finite train_loss"):
    train_job.run(config, str(tmp_path / "kd"))
  assert not os.path.exists(tmp_path / "kd" / "teacher" / "checkpoints" / "10")  # nothing saved
  assert not os.path.exists(tmp_path / "kd" / "metrics.jsonl")  # no student was trained


def test_unknown_override_key_is_rejected_by_the_launcher_flags():
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values)
  with pytest.raises(Exception, match="sed"):
    values(["main", "--config=experiments/kd_mnist5k.py:runlocal", "--config.sed=3"])
    values.config  # noqa: B018  (parsing of overrides is lazy in some versions)
