"""Tests of the launcher plumbing: the job registry, sweeps and one-line config errors."""

import inspect
import json
import os
import subprocess
import sys
import types

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from experiments import kd_mnist5k
from launch import cli, jobs, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registry_maps_names_to_job_modules_and_unknown_job_lists_the_valid_ones():
  from kdjax.distill import runner
  from kdjax.train import train_job

  assert jobs.JOBS["train"] is train_job and jobs.JOBS["kip"] is runner
  assert jobs.runner(ml_collections.ConfigDict({"job": "kip"})) is runner.run
  assert jobs.module(ml_collections.ConfigDict({"job": "kip"})) is runner
  for name, module in jobs.JOBS.items():  # the Job protocol: validate(config), run(config, dir)
    assert list(inspect.signature(module.validate).parameters)[:1] == ["config"], name
    assert list(inspect.signature(module.run).parameters) == ["config", "workdir"], name
  with pytest.raises(
    ValueError,
    match=r"config.job must be one of \[.*'kip'.*'train'\], got 'nope'",
  ):
    jobs.runner(ml_collections.ConfigDict({"job": "nope"}))
  with pytest.raises(ValueError, match="got None"):
    jobs.runner(ml_collections.ConfigDict({"seed": 0}))


def test_sweep_points_import_the_config_module():
  points = sweep.sweep_points("experiments/kd_mnist5k.py")
  assert points == kd_mnist5k.sweep()
  with pytest.raises(ValueError, match="must be experiments/NAME.py"):
    sweep.sweep_points("launch/jobs.py")


def _fake_sweep(tmp_path, monkeypatch):
  calls = []

  def fake_run(config, workdir):
    calls.append((config.a, config.b.c, workdir))
    return {"score": float(config.a * config.b.c)}

  def validate(config):
    if config.a < 0:
      raise ValueError(f"config.a must be >= 0, got {config.a}")

  module = types.SimpleNamespace(validate=validate, run=fake_run)
  monkeypatch.setattr(jobs, "runner", lambda config: fake_run)
  monkeypatch.setattr(jobs, "module", lambda config: module)
  base = ml_collections.ConfigDict({"job": "train", "a": 1, "b": {"c": 2}})
  points = [{"name": f"p{a}", "a": a, "b.c": 5} for a in (3, 4)]
  return calls, base, points


def test_sweep_runs_each_point_in_its_own_workdir(tmp_path, monkeypatch):
  calls, base, points = _fake_sweep(tmp_path, monkeypatch)
  rows = sweep.run_sweep(base, points, str(tmp_path / "root"))
  assert calls == [(3, 5, str(tmp_path / "root" / "p3")), (4, 5, str(tmp_path / "root" / "p4"))]
  assert rows[1] == {"name": "p4", "a": 4, "b.c": 5, "score": 20.0}
  lines = (tmp_path / "root" / "results.jsonl").read_text().splitlines()
  assert [json.loads(l)["score"] for l in lines] == [15.0, 20.0]
  assert "| name | a | b.c | score |" in sweep.markdown_table(rows)


def test_sweep_only_runs_aggregate_every_finished_point(tmp_path, monkeypatch):
  calls, base, points = _fake_sweep(tmp_path, monkeypatch)
  root = str(tmp_path / "root")
  sweep.run_sweep(base, points, root, only=["p4"])
  rows = sweep.run_sweep(base, points, root, only=["p3"])
  assert [c[0] for c in calls] == [4, 3]
  assert [r["name"] for r in rows] == ["p3", "p4"]  # both, in sweep order
  assert [r["name"] for r in sweep.read_results(root)] == ["p3", "p4"]


def test_misspelled_only_is_an_error_listing_the_valid_names(tmp_path, monkeypatch):
  calls, base, points = _fake_sweep(tmp_path, monkeypatch)
  with pytest.raises(ValueError, match=r"--only names \['p5'\].*valid: \['p3', 'p4'\]"):
    sweep.run_sweep(base, points, str(tmp_path / "root"), only=["p3", "p5"])
  assert calls == []


def test_every_sweep_point_is_validated_before_any_runs(tmp_path, monkeypatch):
  calls, base, points = _fake_sweep(tmp_path, monkeypatch)
  points.append({"name": "bad", "a": -1})
  with pytest.raises(ValueError, match="sweep point 'bad': config.a must be >= 0"):
    sweep.run_sweep(base, points, str(tmp_path / "root"))
  assert calls == [] and not (tmp_path / "root").exists()


def test_sweep_point_with_an_unknown_key_is_a_clear_error():
  base = ml_collections.ConfigDict({"job": "train", "b": {"c": 2}})
  assert sweep.apply_point(base, {"name": "ok", "b.c": 3}).b.c == 3
  with pytest.raises(ValueError, match="sweep point 'typo'.*cc"):
    sweep.apply_point(base, {"name": "typo", "b.cc": 3})
  with pytest.raises(ValueError, match="sweep point 'type'"):
    sweep.apply_point(base, {"name": "type", "b.c": "three"})


def _parse(argv):
  """``launch.cli.parse_flags`` on fresh flags like ``launch.main``'s."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  return cli.parse_flags(argv, values)


@pytest.mark.parametrize(
  "override, message",
  [
    (
      "--config.bogus_key=1",
      "error: --config.bogus_key: config has no key 'bogus_key'; valid keys: augment, "
      "batch_size, checkpoint_every, dataset,",
    ),
    (
      "--config.dataset.nme=mnist",
      "error: --config.dataset.nme: config.dataset has no key 'nme'; did you mean 'name'? "
      "valid keys: data_dir, max_test, max_train, name, preprocess, zca_strength",
    ),
    (
      "--config.num_steps.x=1",
      "error: --config.num_steps.x: config.num_steps is of type int, not a block with keys",
    ),
    (
      "--config.num_steps=abc",
      "error: flag --config.num_steps=abc: invalid literal for int() with base 10: 'abc' "
      "(config.num_steps is of type int, default 20)",
    ),
  ],
)
def test_bad_override_is_one_line_naming_the_key_and_the_valid_choices(override, message):
  argv = ["main", "--config=experiments/kd_mnist5k.py:runlocal", "--workdir=w", override]
  with pytest.raises(SystemExit) as exit_info:
    _parse(argv)
  assert str(exit_info.value).startswith(message) and "\n" not in str(exit_info.value)
  assert exit_info.value.__cause__ is None and exit_info.value.__suppress_context__


def test_job_refusing_a_config_value_is_one_line_and_other_errors_keep_their_traceback(tmp_path):
  config = kd_mnist5k.get_config("runlocal")
  config.num_steps = -1
  with pytest.raises(SystemExit, match=r"^error: config.num_steps must be positive, got -1"):
    cli.run_job(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  with pytest.raises(ValueError, match="^unrelated$"):
    with cli.one_line_config_errors():
      raise ValueError("unrelated")


def test_launch_main_prints_an_unknown_key_as_one_line_without_traceback(tmp_path):
  """The issue's case end to end (it printed three chained tracebacks)."""
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.main",
      "--config=experiments/kd_mnist5k.py:runlocal",
      f"--workdir={tmp_path / 'run'}",
      "--config.bogus_key=1",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1 and result.stdout == ""
  # One line, and quickly: launch.main imports the jobs (seconds) only once the flags parse.
  [line] = result.stderr.splitlines()
  assert line.startswith("error: --config.bogus_key: config has no key 'bogus_key'; valid keys:")
  assert not (tmp_path / "run").exists()
