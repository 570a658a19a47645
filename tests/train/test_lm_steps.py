"""Tests of kdjax.train.lm: objectives vs float64 NumPy, exact accumulation, chunked path,
FSDP on 8 devices vs 1, generated batches, bits per byte."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import log_softmax

from kdjax import mesh as mesh_lib, models
from kdjax.train import lm, sharding, state as state_lib

V, L, B = 13, 8, 8
STUDENT = models.TransformerLM(
  vocab_size=V, max_len=L, embed_dim=16, num_layers=1, num_heads=2, mlp_dim=16
)
TEACHER = models.TransformerLM(
  vocab_size=V, max_len=L, embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32
)


def _batch(seed=0):
  rs = np.random.RandomState(seed)
  mask = rs.rand(B, L) < 0.6
  mask[:4, :] = True  # first half holds many more tokens than the second half
  return {
    "inputs": rs.randint(0, V, (B, L)).astype(np.int32),
    "targets": rs.randint(0, V, (B, L)).astype(np.int32),
    "mask": mask,
  }


@functools.cache
def _params(model, seed):
  """The model's parameters, initialised once per file (tests only read them)."""
  return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, L), jnp.int32))["params"]


def _logits(model, params, inputs):
  """``model.apply`` jitted once per model: the tests share its compiled program."""
  return _jitted_apply(model)({"params": params}, inputs)


@functools.cache
def _jitted_apply(model):
  return jax.jit(model.apply)


def test_kd_objective_is_the_masked_token_kl_in_float64():
  batch = _batch()
  s_params, t_params = _params(STUDENT, 0), _params(TEACHER, 1)
  objective = lm.make_objective("kd", STUDENT, TEACHER, divergence="kl", temperature=2.0)
  total, count = jax.jit(objective)(s_params, t_params, batch, jax.random.PRNGKey(0))
  s, t = _logits(STUDENT, s_params, batch["inputs"]), _logits(TEACHER, t_params, batch["inputs"])
  s, t = np.asarray(s, np.float64) / 2.0, np.asarray(t, np.float64) / 2.0
  kl = np.sum(np.exp(log_softmax(t, -1)) * (log_softmax(t, -1) - log_softmax(s, -1)), -1)
  assert int(count) == batch["mask"].sum()
  np.testing.assert_allclose(float(total), kl[batch["mask"]].sum(), rtol=1e-4)


@pytest.mark.slow
def test_chunked_kd_objective_equals_the_dense_one_with_gradients():
  batch = _batch(1)
  s_params, t_params = _params(STUDENT, 0), _params(TEACHER, 1)
  dense = lm.make_objective("kd", STUDENT, TEACHER, divergence="jsd", beta=0.3)
  chunked = lm.make_objective(
    "kd", STUDENT, TEACHER, divergence="jsd", beta=0.3, chunked=True, chunk_size=5
  )
  key = jax.random.PRNGKey(0)
  (d, dc), dg = jax.value_and_grad(dense, has_aux=True)(s_params, t_params, batch, key)
  (c, cc), cg = jax.value_and_grad(chunked, has_aux=True)(s_params, t_params, batch, key)
  assert int(dc) == int(cc)
  np.testing.assert_allclose(float(c), float(d), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(cg), jax.tree.leaves(dg)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def _one_step(mesh, micro_batches, rules=lm.LM_RULES, batch=None, kind="kd"):
  batch = _batch() if batch is None else batch
  tx = optax.sgd(0.5)
  state, shardings = state_lib.create_state(STUDENT, tx, batch["inputs"], 0, mesh, rules)
  t_params = _params(TEACHER, 1)
  objective = lm.make_objective(kind, STUDENT, TEACHER)
  step = lm.jit_train_step(
    lm.make_train_step(objective, tx, seed=0, micro_batches=micro_batches),
    mesh,
    shardings,
    sharding.tree_shardings(t_params, mesh, rules),
  )
  state, metrics = step(state, mesh_lib.global_batch(batch, mesh), t_params)
  return jax.device_get(state.params), metrics


def test_gradient_accumulation_is_exact_with_unequal_token_counts():
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  full, full_metrics = _one_step(mesh, 1)
  accumulated, metrics = _one_step(mesh, 2)
  np.testing.assert_allclose(
    float(metrics["train_loss"]), float(full_metrics["train_loss"]), rtol=1e-5
  )
  for a, b in zip(jax.tree.leaves(accumulated), jax.tree.leaves(full)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # Averaging the two micro-batch means instead would differ: the halves' counts differ.
  batch = _batch()
  assert batch["mask"][:4].sum() != batch["mask"][4:].sum()


def test_a_step_on_8_fsdp_devices_equals_a_step_on_one():
  assert len(jax.devices()) == 8
  one, _ = _one_step(mesh_lib.make_mesh(jax.devices()[:1]), 1, kind="ce")
  mesh = mesh_lib.make_mesh()
  shardings = sharding.tree_shardings(_params(STUDENT, 0), mesh, lm.LM_RULES)
  specs = {
    sharding.path_string(p): s.spec for p, s in jax.tree_util.tree_leaves_with_path(shardings)
  }
  assert specs["block0/attention/query/kernel"] == jax.sharding.PartitionSpec("data")
  assert specs["block0/LayerNorm_0/scale"] == jax.sharding.PartitionSpec()
  eight, _ = _one_step(mesh, 1, kind="ce")
  for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_generated_batch_masks_prompt_tokens_and_follows_the_model():
  batch = _batch()
  params = _params(TEACHER, 1)
  out = lm.generated_batch(
    TEACHER,
    params,
    batch,
    jax.random.PRNGKey(0),
    prompt_len=3,
    temperature=1.0,
    eos_id=None,
    pad_id=0,
  )
  np.testing.assert_array_equal(out["inputs"][:, :3], batch["inputs"][:, :3])
  np.testing.assert_array_equal(out["inputs"][:, 1:], out["targets"][:, :-1])
  assert not np.asarray(out["mask"][:, :2]).any() and np.asarray(out["mask"][:, 2:]).all()
  greedy = lm.generated_batch(
    TEACHER,
    params,
    batch,
    jax.random.PRNGKey(0),
    prompt_len=3,
    temperature=1e-6,
    eos_id=None,
    pad_id=0,
  )
  logits = _logits(TEACHER, params, greedy["inputs"])
  np.testing.assert_array_equal(np.asarray(logits.argmax(-1))[:, 2:], greedy["targets"][:, 2:])


def test_bits_per_byte_matches_numpy_and_ignores_masked_and_zero_byte_tokens():
  batch = _batch()
  params = _params(STUDENT, 0)
  token_bytes = np.ones(V, np.int32)
  token_bytes[0] = 0
  result = lm.bits_per_byte(lm.make_nll_step(STUDENT), params, [batch, batch], token_bytes)
  logits = np.asarray(_logits(STUDENT, params, batch["inputs"]), np.float64)
  nll = -np.take_along_axis(log_softmax(logits, -1), batch["targets"][..., None], -1)[..., 0]
  m = batch["mask"]
  expected = nll[m].sum() / (math.log(2) * token_bytes[batch["targets"]][m].sum())
  assert result["bits_per_byte"] == pytest.approx(expected, rel=1e-5)
  assert result["nll_per_token"] == pytest.approx(nll[m].mean(), rel=1e-5)


def test_adaspec_objective_trains_on_the_tokens_the_reference_fits_better_in_float64():
  """AdaSPEC (Hu et al. 2025) from the paper in NumPy: forward KL of the student and of a
  reference student against the teacher; the ceil(0.4 C) real tokens of largest excess."""
  batch = _batch()
  s_params, r_params, t_params = _params(STUDENT, 0), _params(STUDENT, 2), _params(TEACHER, 1)
  objective = lm.make_objective("adaspec", STUDENT, TEACHER, divergence="kl", fraction=0.4)
  teacher = {"target": t_params, "reference": r_params}
  total, count = jax.jit(objective)(s_params, teacher, batch, jax.random.PRNGKey(0))
  logp = log_softmax(np.asarray(_logits(TEACHER, t_params, batch["inputs"]), np.float64), -1)
  kl = {}
  for name, p in (("student", s_params), ("reference", r_params)):
    logq = log_softmax(np.asarray(_logits(STUDENT, p, batch["inputs"]), np.float64), -1)
    kl[name] = np.sum(np.exp(logp) * (logp - logq), -1)[batch["mask"]]
  keep = math.ceil(0.4 * batch["mask"].sum())
  chosen = np.argsort(-(kl["student"] - kl["reference"]), kind="stable")[:keep]
  assert int(count) == keep
  np.testing.assert_allclose(float(total), kl["student"][chosen].sum(), rtol=1e-4)


def test_unknown_objective_and_divergence_raise():
  with pytest.raises(ValueError, match="objective kind"):
    lm.make_objective("dpo", STUDENT)
  with pytest.raises(ValueError, match="divergence must be one of"):
    lm.make_objective("kd", STUDENT, TEACHER, divergence="hellinger")
