"""Tests of the launcher plumbing: the job registry and sweeps."""

import inspect
import json

import ml_collections
import pytest

from experiments import kd_mnist5k
from launch import jobs, sweep


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

  monkeypatch.setattr(jobs, "runner", lambda config: fake_run)
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


def test_sweep_point_with_an_unknown_key_is_a_clear_error():
  base = ml_collections.ConfigDict({"job": "train", "b": {"c": 2}})
  assert sweep.apply_point(base, {"name": "ok", "b.c": 3}).b.c == 3
  with pytest.raises(ValueError, match="sweep point 'typo'.*cc"):
    sweep.apply_point(base, {"name": "typo", "b.cc": 3})
  with pytest.raises(ValueError, match="sweep point 'type'"):
    sweep.apply_point(base, {"name": "type", "b.c": "three"})
