"""Tests of the jitted train/eval steps, sharding rules and objectives."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy.special import log_softmax, softmax

from kdjax import mesh as mesh_lib, models
from kdjax.jobs import evaluate
from kdjax.train import objectives, sharding, state as state_lib, steps


def _optimizer(name, learning_rate, momentum=0.9):
  """A complete optimizer block with a constant learning rate (make_optimizer reads every key)."""
  return ml_collections.ConfigDict(
    {
      "name": name,
      "learning_rate": learning_rate,
      "schedule": "constant",
      "warmup_steps": 0,
      "final_lr_fraction": 0.0,
      "momentum": momentum,
      "nesterov": False,
      "weight_decay": 0.0,
      "grad_clip_norm": 0.0,
    }
  )


def _data(n=16, shape=(8, 8, 1), classes=5, seed=0):
  rs = np.random.RandomState(seed)
  return {
    "inputs": rs.randn(n, *shape).astype(np.float32),
    "labels": rs.randint(0, classes, size=n).astype(np.int32),
  }


def _kd_setup(mesh, rules=(), student=None):
  student = student or models.CifarResNet(num_classes=5, depth=8, widths=(4, 8, 8, 16))
  teacher = models.MLP(num_classes=5, hidden=(32,))
  batch = _data()
  tx = state_lib.make_optimizer(_optimizer("sgd", 0.1), 10)
  state, shardings = state_lib.create_state(student, tx, batch["inputs"], 0, mesh, rules)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), batch["inputs"])
  teacher_shardings = sharding.tree_shardings(teacher_variables, mesh, rules)
  teacher_variables = jax.device_put(teacher_variables, teacher_shardings)
  objective = objectives.distillation("kd_loss", {"temperature": 2.0}, ce_weight=0.5)
  step = steps.jit_train_step(
    steps.make_train_step(student, tx, objective, seed=0, teacher=teacher),
    mesh,
    shardings,
    teacher_shardings,
  )
  return step, state, batch, teacher_variables


def _run_two_steps(mesh, rules=(), student=None):
  step, state, batch, teacher_variables = _kd_setup(mesh, rules, student)
  losses = []
  for _ in range(2):
    state, metrics = step(state, mesh_lib.global_batch(batch, mesh), teacher_variables)
    losses.append(float(metrics["train_loss"]))
  return jax.device_get(state), losses


@pytest.mark.slow
def test_resnet_step_on_8_devices_equals_step_on_1_device():
  assert len(jax.devices()) == 8
  single, single_losses = _run_two_steps(mesh_lib.make_mesh(jax.devices()[:1]))
  multi, multi_losses = _run_two_steps(mesh_lib.make_mesh())
  np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
  # Parameters and batch-norm statistics (over the global batch, not per device) agree.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), multi, single)
  assert int(multi.step) == 2


def test_replicated_and_fsdp_steps_on_8_devices_equal_the_single_device_step():
  mlp = models.MLP(num_classes=5, hidden=(16, 16))
  single, single_losses = _run_two_steps(mesh_lib.make_mesh(jax.devices()[:1]), student=mlp)
  for rules in ((), ((".*kernel", "fsdp"),)):
    multi, multi_losses = _run_two_steps(mesh_lib.make_mesh(), rules=rules, student=mlp)
    np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), multi, single)


def test_fsdp_rules_shard_the_largest_divisible_axis():
  mesh = mesh_lib.make_mesh()
  tree = {
    "params": {
      "Dense_0": {"kernel": jnp.zeros((12, 16)), "bias": jnp.zeros(16)},
      "odd": {"kernel": jnp.zeros((3, 5))},
    }
  }
  specs = jax.tree.map(
    lambda s: s.spec, sharding.tree_shardings(tree, mesh, ((".*kernel", "fsdp"),))
  )
  assert specs["params"]["Dense_0"]["kernel"] == jax.sharding.PartitionSpec(None, "data")
  assert specs["params"]["Dense_0"]["bias"] == jax.sharding.PartitionSpec()
  assert specs["params"]["odd"]["kernel"] == jax.sharding.PartitionSpec()
  with pytest.raises(ValueError, match="kind in"):
    sharding.tree_shardings(tree, mesh, ((".*", "shard_everything"),))


def test_batch_size_not_divisible_by_device_count_is_a_clear_error():
  with pytest.raises(
    ValueError, match="batch_size=12 must be a positive multiple of the number of devices \\(8"
  ):
    mesh_lib.check_batch_size(12, mesh_lib.make_mesh())


def test_kd_step_loss_and_update_match_a_numpy_reference():
  mesh = mesh_lib.make_mesh()
  student = models.MLP(num_classes=4, hidden=())  # linear: logits = x W + b
  teacher = models.MLP(num_classes=4, hidden=(6,))
  batch = _data(n=8, shape=(3,), classes=4)
  lr, temperature, ce_weight = 0.5, 3.0, 0.25
  tx = state_lib.make_optimizer(_optimizer("sgd", lr, momentum=0.0), 10)
  state, shardings = state_lib.create_state(student, tx, batch["inputs"], 0, mesh)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), batch["inputs"])
  objective = objectives.distillation("kd_loss", {"temperature": temperature}, ce_weight=ce_weight)
  step = steps.jit_train_step(
    steps.make_train_step(student, tx, objective, seed=0, teacher=teacher),
    mesh,
    shardings,
    sharding.tree_shardings(teacher_variables, mesh),
  )
  w0 = np.asarray(state.params["Dense_0"]["kernel"], np.float64)
  b0 = np.asarray(state.params["Dense_0"]["bias"], np.float64)
  new_state, metrics = step(state, mesh_lib.global_batch(batch, mesh), teacher_variables)

  x, y = batch["inputs"].astype(np.float64), batch["labels"]
  tp = teacher_variables["params"]
  h = np.maximum(x @ np.asarray(tp["Dense_0"]["kernel"], np.float64) + tp["Dense_0"]["bias"], 0)
  t = h @ np.asarray(tp["Dense_1"]["kernel"], np.float64) + tp["Dense_1"]["bias"]

  def loss(w, b):
    s = x @ w + b
    p = softmax(t / temperature, axis=-1)
    kl = np.sum(p * (np.log(p) - log_softmax(s / temperature, axis=-1)), axis=-1)
    ce = -log_softmax(s, axis=-1)[np.arange(len(y)), y]
    return np.mean(temperature**2 * kl + ce_weight * ce)

  np.testing.assert_allclose(float(metrics["train_loss"]), loss(w0, b0), rtol=1e-5)
  # One SGD step: w1 = w0 - lr * dL/dw, checked with central finite differences in float64.
  eps = 1e-6
  grad = np.zeros_like(w0)
  for i in range(w0.shape[0]):
    for j in range(w0.shape[1]):
      d = np.zeros_like(w0)
      d[i, j] = eps
      grad[i, j] = (loss(w0 + d, b0) - loss(w0 - d, b0)) / (2 * eps)
  np.testing.assert_allclose(
    new_state.params["Dense_0"]["kernel"], w0 - lr * grad, rtol=1e-4, atol=1e-6
  )


def test_teacher_with_a_different_output_shape_is_rejected():
  x = jnp.zeros((2, 8))
  student, teacher = models.MLP(num_classes=10), models.MLP(num_classes=100)
  with pytest.raises(
    ValueError,
    match=r"teacher logits have shape \(2, 100\) but the student's "
    r"have shape \(2, 10\)",
  ):
    steps.check_teacher(
      student,
      student.init(jax.random.PRNGKey(0), x),
      teacher,
      teacher.init(jax.random.PRNGKey(0), x),
      x,
    )


def test_unknown_kd_loss_and_kwargs_are_clear_errors():
  with pytest.raises(ValueError, match="kd.loss must name a function of kdjax.losses"):
    objectives.distillation("kl_div")
  with pytest.raises(ValueError, match=r"kd.loss_kwargs \['temprature'\]"):
    objectives.distillation("kd_loss", {"temprature": 2.0})


def test_evaluate_pads_the_last_batch_and_matches_numpy_accuracy():
  mesh = mesh_lib.make_mesh()
  model = models.MLP(num_classes=3, hidden=())
  data = _data(n=21, shape=(4,), classes=3)
  variables = model.init(jax.random.PRNGKey(0), data["inputs"])
  eval_step = steps.jit_eval_step(
    steps.make_eval_step(model), mesh, sharding.tree_shardings(variables, mesh)
  )
  batches = [{k: v[i : i + 8] for k, v in data.items()} for i in range(0, 21, 8)]
  result = evaluate.evaluate(eval_step, variables, batches, mesh, batch_size=8)
  p = variables["params"]["Dense_0"]
  logits = data["inputs"].astype(np.float64) @ np.asarray(p["kernel"], np.float64) + p["bias"]
  assert result["eval_accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == data["labels"]))
  ce = -log_softmax(logits, axis=-1)[np.arange(21), data["labels"]].mean()
  assert result["eval_loss"] == pytest.approx(ce, rel=1e-5)


@pytest.mark.slow
def test_sequence_kd_step_averages_over_unmasked_tokens():
  mesh = mesh_lib.make_mesh()
  student = models.TransformerLM(
    vocab_size=13, max_len=6, embed_dim=8, num_layers=1, num_heads=2, mlp_dim=16
  )
  teacher = models.TransformerLM(
    vocab_size=13, max_len=6, embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32
  )
  rs = np.random.RandomState(0)
  tokens = rs.randint(0, 13, size=(8, 7)).astype(np.int32)
  mask = rs.rand(8, 6) < 0.7
  batch = {"inputs": tokens[:, :-1], "labels": tokens[:, 1:], "mask": mask}
  tx = state_lib.make_optimizer(_optimizer("adam", 1e-3), 10)
  state, shardings = state_lib.create_state(student, tx, batch["inputs"], 0, mesh)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), batch["inputs"])
  objective = objectives.distillation("kd_loss", {"temperature": 2.0})
  step = steps.jit_train_step(
    steps.make_train_step(student, tx, objective, seed=0, teacher=teacher),
    mesh,
    shardings,
    sharding.tree_shardings(teacher_variables, mesh),
  )
  s = np.asarray(student.apply(state.variables(), batch["inputs"]), np.float64)
  t = np.asarray(teacher.apply(teacher_variables, batch["inputs"]), np.float64)
  _, metrics = step(state, mesh_lib.global_batch(batch, mesh), teacher_variables)
  p = softmax(t / 2.0, axis=-1)
  per_token = 4.0 * np.sum(p * (np.log(p) - log_softmax(s / 2.0, axis=-1)), axis=-1)
  np.testing.assert_allclose(float(metrics["train_loss"]), per_token[mask].mean(), rtol=1e-4)
  accuracy = (s.argmax(-1) == batch["labels"])[mask].mean()
  assert float(metrics["train_accuracy"]) == pytest.approx(accuracy)


def test_nan_in_a_masked_example_reaches_neither_loss_nor_gradient():
  # Padded examples carry the ignore label -1, for which this objective's loss is NaN.
  def objective(logits, teacher_logits, labels, rng):
    ce = objectives.cross_entropy(logits, jnp.maximum(labels, 0))
    return jnp.where(labels >= 0, ce, jnp.nan)

  mesh = mesh_lib.make_mesh()
  student = models.MLP(num_classes=4, hidden=(5,))
  batch = _data(n=8, shape=(3,), classes=4)
  mask = np.arange(8) < 6
  poisoned = dict(batch, mask=mask, labels=np.where(mask, batch["labels"], -1).astype(np.int32))
  clean = dict(batch, mask=mask)
  tx = optax.sgd(0.5)
  step = steps.make_train_step(student, tx, objective, seed=0)
  # The plain step and the jitted, sharded one (which donates its input state).
  for run in ("eager", "jit"):
    results = []
    for data in (poisoned, clean):
      state, shardings = state_lib.create_state(student, tx, batch["inputs"], 0, mesh)
      if run == "jit":
        new_state, metrics = steps.jit_train_step(step, mesh, shardings)(
          state, mesh_lib.global_batch(data, mesh)
        )
      else:
        new_state, metrics = step(state, {k: jnp.asarray(v) for k, v in data.items()})
      results.append((float(metrics["train_loss"]), jax.device_get(new_state.params)))
    (loss_poisoned, params_poisoned), (loss_clean, params_clean) = results
    assert np.isfinite(loss_poisoned), run
    assert loss_poisoned == pytest.approx(loss_clean, rel=1e-6), run
    # The update (hence the gradient) ignores the masked examples entirely.
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      params_poisoned,
      params_clean,
    )
