"""The diffusion job: bad input is a ValueError naming it (before any work), a non-finite
loss stops the run with its step, and (slow) the runlocal configs run end to end, resume,
and write every output."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import diffusion_digits, diffusion_toy2d
from kdjax.diffusion import job


def _config(**overrides):
  c = diffusion_toy2d.get_config("eight_gaussians,runlocal")
  for key, value in overrides.items():
    block = c
    *path, last = key.split(".")
    for part in path:
      block = block[part]
    block[last] = value
  return c


@pytest.mark.parametrize(
  "key, value, match",
  [
    ("dataset.name", "three_moons", "config.dataset.name must be one of"),
    ("sample.teacher_nfe", "1,0,4", "teacher_nfe.*>= 1"),
    ("sample.student_nfe", "-2", "student_nfe.*>= 1"),
    ("dmd.pair_nfe", 0, "config.dmd.pair_nfe"),
    ("progressive.rounds", 7, "2\\*\\*rounds=128 must divide teacher_steps=64"),
    ("students", "progressive,gan", "config.students entry must be one of"),
    ("consistency.mode", "both", "config.consistency.mode"),
    ("flow_map.objective", "hamiltonian", "config.flow_map.objective"),
    ("consistency.parametrization", "vp", "config.consistency.parametrization"),
    ("flow_map.diagonal", "model", "config.flow_map.diagonal"),
    ("flow_map.target", "data", "config.flow_map.target"),
    ("dmd.fake_updates", 0, "config.dmd.fake_updates"),
    ("dmd.t_max", 0.01, "config.dmd.t_max"),  # below t_min = 0.02
    ("dmd.t_min", 1.0, "config.dmd.t_min"),
  ],
)
def test_bad_input_is_a_value_error_naming_it(key, value, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    job.run(_config(**{key: value}), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")  # validated before the workdir is touched


def test_a_student_needs_a_finished_teacher(tmp_path):
  (tmp_path / "other" / "teacher").mkdir(parents=True)
  with pytest.raises(ValueError, match="holds no finished teacher"):
    job.validate(_config(teacher_workdir=str(tmp_path / "other")))


@pytest.mark.parametrize("name", ["time_mlp", pytest.param("unet", marks=pytest.mark.slow)])
def test_a_flow_map_from_the_teacher_starts_as_its_euler_step(name):
  import jax

  from kdjax.models import TimeMLP, UNet

  if name == "time_mlp":
    model, x = TimeMLP(hidden=8, depth=1, time_dim=8), np.ones((3, 2))
  else:
    model, x = UNet((4, 8), 8), np.ones((3, 4, 4))
  x = jnp.asarray(np.random.default_rng(0).normal(size=x.shape), jnp.float32)
  s, t = jnp.array([0.0, 0.3, 0.5]), jnp.array([1.0, 0.4, 0.9])
  teacher = model.init(jax.random.PRNGKey(1), x, s)["params"]
  rng = np.random.default_rng(3)  # non-zero output layer (it starts at zero)
  teacher = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(p.dtype), teacher)
  fresh = model.init(jax.random.PRNGKey(2), x, s, t)["params"]
  two = job.two_time_from_teacher(fresh, teacher)
  apply = jax.jit(model.apply)
  np.testing.assert_allclose(
    apply({"params": two}, x, s, t), apply({"params": teacher}, x, s), atol=1e-5
  )
  assert not np.allclose(apply({"params": two}, x, s, t), apply({"params": teacher}, x, t))


def test_config_args():
  assert diffusion_toy2d.get_config("two_moons").dataset.name == "two_moons"
  assert diffusion_toy2d.get_config("students=dmd+flow_map").students == "dmd,flow_map"
  with pytest.raises(ValueError, match="eight_gaussians' or 'two_moons'"):
    diffusion_toy2d.get_config("three_moons")
  for c in (diffusion_toy2d.get_config(), diffusion_digits.get_config("runlocal")):
    job.validate(c)
    assert c.sample.num_samples >= 4096


def test_non_finite_loss_stops_the_run_with_the_step(tmp_path, monkeypatch):
  # fast: a stand-in step whose loss is NaN from step 3 on (the real divergence is slow)
  def fake_jit(step, mesh, shardings, teacher_shardings=None):
    def jitted(state, batch, *teacher):
      loss = jnp.where(state.step >= 2, jnp.nan, 1.0)
      return state.replace(step=state.step + 1), {"train_loss": loss}

    return jitted

  monkeypatch.setattr(job.steps, "jit_step", fake_jit)
  c = _config(students="", num_steps=6, log_every=1, checkpoint_every=6)
  with pytest.raises(job.NonFiniteLoss, match="step 3") as e:
    job.run(c, str(tmp_path / "w"))
  assert isinstance(e.value, ValueError) and isinstance(e.value, FloatingPointError)
  assert not os.listdir(tmp_path / "w" / "teacher" / "checkpoints")  # nothing diverged saved


@pytest.mark.slow
def test_a_diverging_teacher_stops_with_the_step(tmp_path):
  c = _config(students="", num_steps=6, log_every=1, checkpoint_every=6)
  c.teacher.optimizer.learning_rate = 1e30
  with pytest.raises(job.NonFiniteLoss, match=r"step \d"):
    job.run(c, str(tmp_path / "w"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eight_gaussians", "digits"])
def test_runlocal_end_to_end_and_resume(name, tmp_path):
  if name == "digits":
    c = diffusion_digits.get_config("runlocal")
  else:
    c = diffusion_toy2d.get_config(f"{name},runlocal")
  workdir = str(tmp_path / "w")
  summary = job.run(c, workdir)
  shape = (8, 8) if name == "digits" else (2,)
  expected = [f"teacher_nfe{k}" for k in (1, 4, 64)] + ["dmd_nfe1"]
  expected += [f"{s}_nfe{k}" for s in ("progressive", "consistency", "flow_map") for k in (1, 2, 4)]
  metric = "fid" if name == "digits" else "energy_distance"
  for key in expected:
    x = np.load(os.path.join(workdir, "samples", f"{key}.npy"))
    assert x.shape == (4096, *shape) and x.dtype == np.float32
    if name == "digits":
      assert x.min() >= 0 and x.max() <= 1
    assert np.isfinite(summary[f"{key}/{metric}"])
    assert summary[f"{key}/nfe"] == int(key.split("_nfe")[1])
  for png in ("teacher", "progressive", "consistency", "dmd", "flow_map"):
    assert os.path.getsize(os.path.join(workdir, "samples", f"{png}.png")) > 0
  assert summary["teacher/wall_time_s"] > 0
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)[f"teacher_nfe64/{metric}"] == summary[f"teacher_nfe64/{metric}"]
  again = job.run(c, workdir)  # every phase is finished: reloaded, same samples and figures
  for key in expected:
    assert again[f"{key}/{metric}"] == summary[f"{key}/{metric}"]
  assert again["teacher/wall_time_s"] == summary["teacher/wall_time_s"]
  # a second run that reuses the finished teacher
  c2 = diffusion_toy2d.get_config(f"{name},runlocal") if name != "digits" else c
  c2.teacher_workdir, c2.students = workdir, "dmd"
  other = job.run(c2, str(tmp_path / "w2"))
  assert other[f"teacher_nfe64/{metric}"] == summary[f"teacher_nfe64/{metric}"]


@pytest.mark.slow
def test_a_preempted_phase_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
  from kdjax.jobs import loop as loop_lib

  c = _config(students="dmd", num_steps=6, log_every=2, checkpoint_every=2)
  c.dmd.num_steps = 4
  straight = job.run(c, str(tmp_path / "a"))
  calls = {"n": 0}
  real = loop_lib.stop_requested

  def stop_once(flag, step, every):
    calls["n"] += 1
    return calls["n"] == 2 or real(flag, step, every)  # SIGTERM during the teacher's step 2

  monkeypatch.setattr(loop_lib, "stop_requested", stop_once)
  with pytest.raises(SystemExit):
    job.run(c, str(tmp_path / "b"))
  resumed = job.run(c, str(tmp_path / "b"))
  for key, value in straight.items():
    if not key.endswith("wall_time_s"):
      assert resumed[key] == value, key
