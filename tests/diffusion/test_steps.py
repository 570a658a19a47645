"""The jitted, sharded train steps: sharded over the 8-device 'data' mesh, deterministic,
finite, the teacher's loss equal to the pure loss at the step's keys; tiny models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import mesh as mesh_lib
from kdjax.diffusion import flow, steps
from kdjax.models import TimeMLP
from kdjax.train import sharding
from kdjax.train.state import TrainState

MODEL = TimeMLP(hidden=8, depth=1, time_dim=8)
TX = optax.adam(1e-2)
X1 = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)


@functools.cache
def _params(two_times=False):
  z = jnp.zeros((1,))
  args = (jnp.zeros((1, 2)), z, z) if two_times else (jnp.zeros((1, 2)), z)
  return MODEL.init(jax.random.PRNGKey(0), *args)["params"]


def _state(two_times=False):
  p = jax.tree.map(jnp.copy, _params(two_times))
  return TrainState(jnp.int32(0), p, TX.init(p), {})


def _jit(step, state, teacher=None):
  mesh = mesh_lib.make_mesh()
  t_sh = None if teacher is None else sharding.tree_shardings(teacher, mesh)
  return steps.jit_step(step, mesh, sharding.tree_shardings(state, mesh), t_sh), mesh


def _run(step, state, batch, teacher=None, n=2, jitted=None):
  if jitted is None:
    jitted, mesh = _jit(step, state, teacher)
  batch = mesh_lib.global_batch(batch, mesh_lib.make_mesh())
  out = []
  for _ in range(n):
    state, m = jitted(state, batch) if teacher is None else jitted(state, batch, teacher)
    out.append({k: float(v) for k, v in m.items()})
  return state, out


def test_teacher_step_is_the_flow_matching_loss_at_its_keys():
  jitted, _ = _jit(steps.flow_matching_step(MODEL, TX, seed=3), _state())
  state, metrics = _run(None, _state(), {"x1": X1}, jitted=jitted)
  r0, r1 = jax.random.split(steps._keys(3, 1, 0))
  x0 = jax.random.normal(r0, X1.shape)
  t = jax.random.uniform(r1, (16,))
  v = MODEL.apply({"params": _params()}, flow.interpolate(x0, X1, t), t)
  ref = np.mean(np.mean((np.asarray(v) - (X1 - np.asarray(x0))) ** 2, axis=1))
  assert metrics[0]["train_loss"] == pytest.approx(ref, rel=1e-5)
  assert int(state.step) == 2 and metrics[1]["train_loss"] != metrics[0]["train_loss"]
  _, again = _run(None, _state(), {"x1": X1}, jitted=jitted)
  assert again == metrics  # a step depends only on state, batch and seed


@pytest.mark.parametrize(
  "kind",
  ["ct"]
  + [pytest.param(k, marks=pytest.mark.slow) for k in ("progressive", "cd", "flow_map", "dmd")],
)
def test_student_steps_run_sharded_and_finite(kind):
  teacher = _params()
  if kind == "progressive":
    step, state = steps.progressive_step(MODEL, TX, seed=0, student_steps=2), _state()
  elif kind in ("cd", "ct"):
    mode = "distillation" if kind == "cd" else "training"
    step = steps.consistency_step(
      MODEL, TX, seed=0, mode=mode, sigma_data=1.0, teacher=MODEL, s0=4, s1=16, total_steps=4
    )
    state = _state()
  elif kind == "flow_map":
    step, state = steps.flow_map_step(MODEL, TX, seed=0, objective="eulerian"), _state(True)
  else:
    step = steps.dmd_step(MODEL, TX, TX, seed=0)
    state = {"gen": _state(), "fake": _state()}
  batch = {"x1": X1} if kind != "dmd" else {"z_ref": X1, "y_ref": X1 * 2}
  with_teacher = kind in ("progressive", "cd", "dmd")
  state, metrics = _run(step, state, batch, teacher if with_teacher else None)
  for m in metrics:
    assert all(np.isfinite(v) for v in m.values()), (kind, m)
  if kind in ("cd", "ct"):
    assert [m["num_scales"] for m in metrics] == [5, 9]  # iCT curriculum, K' = 4 // 3 = 1


def test_consistency_ema_target_moves_by_mu_and_flow_parametrization_starts_as_teacher():
  # Song et al. (2023), Alg. 2: theta^- <- mu theta^- + (1 - mu) theta after the update
  mu = 0.9
  step = steps.consistency_step(
    MODEL, TX, seed=0, mode="training", sigma_data=1.0, s0=4, s1=4, ema_decay=mu
  )
  plain = steps.consistency_step(MODEL, TX, seed=0, mode="training", sigma_data=1.0, s0=4, s1=4)
  batch = {"x1": jnp.asarray(X1)}
  init = _state()
  state = {"online": init, "target": jax.tree.map(jnp.copy, init.params)}
  new, m = jax.jit(step)(state, batch)
  ref, m_ref = jax.jit(plain)(_state(), batch)  # same first update: the target equals theta
  assert float(m["train_loss"]) == pytest.approx(float(m_ref["train_loss"]), rel=1e-6)
  for a, b, p0 in zip(*map(jax.tree.leaves, (new["target"], ref.params, _params()))):
    np.testing.assert_allclose(a, mu * np.asarray(p0) + (1 - mu) * np.asarray(b), rtol=1e-5)
  for a, b in zip(*map(jax.tree.leaves, (new["online"].params, ref.params))):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # 'flow': f is read off the velocity network, so the teacher's params give its denoiser
  sample = steps.consistency_sampler(MODEL, sigma_data=1.0, parametrization="flow")
  z = jnp.asarray(X1)
  out = sample(_params(), z, jax.random.PRNGKey(0), 1)
  t = jnp.full((16,), 1 / 81.0)
  v = MODEL.apply({"params": _params()}, z * 80 / 81, t)
  np.testing.assert_allclose(out, 80 * z + (80 - 0.002) / 81 * (v - 80 * z), rtol=1e-5, atol=1e-5)


def _nonzero_teacher():
  # every weight nonzero (the initial output layer is zero: v = 0)
  bump = lambda p: np.asarray(p) + 0.3 * np.sin(np.arange(p.size) + 1.0).reshape(p.shape)  # noqa: E731
  return jax.tree.map(bump, _params())


def test_a_flow_map_from_the_teacher_has_a_zero_teacher_diagonal_loss():
  # the fast sibling of the next (slow) test: the pure losses
  from kdjax.diffusion import flow_map
  from kdjax.diffusion.job import two_time_from_teacher

  teacher = _nonzero_teacher()
  params = two_time_from_teacher(_params(True), teacher)
  x0, x1, t = jnp.asarray(X1[::-1]), jnp.asarray(X1), jnp.linspace(0.0, 1.0, 16)

  @jax.jit
  def losses(params, teacher):
    v = lambda x, s, t: MODEL.apply({"params": params}, x, s, t)  # noqa: E731
    b = lambda x, t: MODEL.apply({"params": teacher}, x, t)  # noqa: E731
    return flow_map.diagonal_loss(v, x0, x1, t, target=b), flow_map.diagonal_loss(v, x0, x1, t)

  anchored, data = losses(params, teacher)
  assert float(jnp.max(anchored)) < 1e-10 and float(jnp.min(data)) > 1e-3


@pytest.mark.slow
def test_dmd_fake_updates_and_a_flow_map_diagonal_anchored_to_the_teacher():
  # DMD2's two time-scale rule: k fake updates per generator update; the generator's update
  # is the same as with one
  teacher = _nonzero_teacher()
  batch = {"z_ref": jnp.asarray(X1), "y_ref": jnp.asarray(X1 * 2)}
  outs = []
  for k in (1, 2):
    step = steps.dmd_step(MODEL, TX, TX, seed=0, fake_updates=k)
    outs.append(jax.jit(step)({"gen": _state(), "fake": _state()}, batch, teacher))
  (one, m1), (two, m2) = outs
  assert (int(two["gen"].step), int(two["fake"].step)) == (1, 2)
  assert float(m1["train_loss"]) == pytest.approx(float(m2["train_loss"]), rel=1e-6)
  for a, b in zip(*map(jax.tree.leaves, (one["gen"].params, two["gen"].params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)  # (compiled apart: rounding)
  assert float(m1["fake_loss"]) != float(m2["fake_loss"])
  # a flow map started as the teacher (job.two_time_from_teacher) has v(x, t, t) = v_T(x, t):
  # its diagonal loss against the teacher is zero (against x1 - x0 it is ~1)
  from kdjax.diffusion.job import two_time_from_teacher

  params = two_time_from_teacher(_params(True), teacher)
  step = steps.flow_map_step(MODEL, TX, seed=0, diagonal="teacher", target="teacher")
  state = TrainState(jnp.int32(0), params, TX.init(params), {})
  _, m = jax.jit(step)(state, {"x1": jnp.asarray(X1)}, teacher)
  assert float(m["diagonal_loss"]) < 1e-10 and float(m["lagrangian_loss"]) > 1e-4


def test_bad_student_options():
  with pytest.raises(ValueError, match="consistency mode"):
    steps.consistency_step(MODEL, TX, seed=0, mode="both", sigma_data=1.0)
  with pytest.raises(ValueError, match="needs the flow teacher"):
    steps.consistency_step(MODEL, TX, seed=0, mode="distillation", sigma_data=1.0)
  with pytest.raises(ValueError, match="ema_decay"):
    steps.consistency_step(MODEL, TX, seed=0, mode="training", sigma_data=1.0, ema_decay=1.0)
  with pytest.raises(ValueError, match="parametrization"):
    steps.consistency_step(MODEL, TX, seed=0, mode="training", sigma_data=1.0, parametrization="x")
  with pytest.raises(ValueError, match="flow_map objective"):
    steps.flow_map_step(MODEL, TX, seed=0, objective="hamiltonian")
  with pytest.raises(ValueError, match="flow_map diagonal"):
    steps.flow_map_step(MODEL, TX, seed=0, diagonal="model")
  with pytest.raises(ValueError, match="flow_map target"):
    steps.flow_map_step(MODEL, TX, seed=0, target="data")
  with pytest.raises(ValueError, match="fake_updates"):
    steps.dmd_step(MODEL, TX, TX, seed=0, fake_updates=0)
  with pytest.raises(ValueError, match="t_min"):
    steps.dmd_step(MODEL, TX, TX, seed=0, t_min=0.5, t_max=0.5)
