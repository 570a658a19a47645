"""MTT and DATM (kdjax.distill.mtt): the trajectory-matching loss against a float64 NumPy
unroll of the paper's formula on a linear softmax model, finite differences of the image
gradient through the unroll, jax.checkpoint's gradient equal to the plain one, the expert
buffer (orbax, manifest, mismatch errors), the windows, the steps on a tiny ConvNet, and
the distill job's 'mtt' / 'datm' (runlocal runs slow-marked; the steps are their fast
siblings)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import datm_digits, datm_mnist5k, mtt_digits, mtt_mnist5k
from kdjax import models
from kdjax.distill import evaluation, job, mtt, support
from kdjax.jobs import workdir as workdir_lib
from launch import sweep

D, C = 4, 3  # a linear model on 2x2x1 images: theta is the flat [D, C] weight


def linear_logits(theta, x):
  return x.reshape(x.shape[0], -1) @ theta.reshape(D, C)


def reference_loss(start, target, x, targets, lr, batches):
  """Cazenavette et al. (2022), eq. 2, unrolled in float64 NumPy: SGD on the mean softmax
  cross-entropy of a linear model, grad_W = X_b^T (softmax(X_b W) - T_b) / b."""
  w = start.reshape(D, C).copy()
  for rows in batches:
    xb, tb = x[rows].reshape(len(rows), -1), targets[rows]
    z = xb @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    w = w - lr * xb.T @ (p - tb) / len(rows)
  return np.sum((w.ravel() - target) ** 2) / np.sum((start - target) ** 2)


@functools.cache
def linear_problem():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 2, 2, 1))
  targets = rng.dirichlet(np.ones(C), size=6)
  start, target = rng.normal(size=D * C), rng.normal(size=D * C)
  batches = np.array([[0, 2, 4, 5], [1, 3, 5, 0], [2, 1, 4, 3]])
  return x, targets, start, target, batches


def x64_loss(**kwargs):
  x, targets, start, target, batches = linear_problem()

  def loss(images, lr):
    return mtt.trajectory_matching_loss(
      linear_logits, jnp.asarray(start), jnp.asarray(target), images, jnp.asarray(targets), lr,
      jnp.asarray(batches), **kwargs,
    )  # fmt: skip

  return loss


def test_loss_is_the_papers_normalised_distance_in_float64():
  x, targets, start, target, batches = linear_problem()
  with jax.enable_x64(True):
    got = float(jax.jit(x64_loss())(jnp.asarray(x), 0.7))
  want = reference_loss(start, target, x, targets, 0.7, batches)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert 0 < want != 1.0


def test_image_and_lr_gradients_through_the_unroll_match_finite_differences():
  x, *_ = linear_problem()
  rng = np.random.default_rng(1)
  direction, eps = rng.normal(size=x.shape), 1e-6
  with jax.enable_x64(True):
    loss = jax.jit(x64_loss())
    gx, glr = jax.jit(jax.grad(x64_loss(), argnums=(0, 1)))(jnp.asarray(x), 0.7)
    fd = (float(loss(x + eps * direction, 0.7)) - float(loss(x - eps * direction, 0.7))) / (2 * eps)
    np.testing.assert_allclose(np.sum(np.asarray(gx) * direction), fd, rtol=1e-6)
    fd_lr = (float(loss(x, 0.7 + eps)) - float(loss(x, 0.7 - eps))) / (2 * eps)
    np.testing.assert_allclose(float(glr), fd_lr, rtol=1e-6)


def test_checkpointed_unroll_has_the_plain_gradient_and_is_rematerialised():
  x, *_ = linear_problem()
  grads, jaxprs = {}, {}
  with jax.enable_x64(True):
    for checkpoint in (True, False):
      f = jax.grad(x64_loss(checkpoint=checkpoint), argnums=(0, 1))
      grads[checkpoint] = jax.jit(f)(jnp.asarray(x), 0.7)
      jaxprs[checkpoint] = str(jax.make_jaxpr(f)(jnp.asarray(x), 0.7))
  for a, b in zip(grads[True], grads[False]):
    np.testing.assert_allclose(a, b, rtol=1e-12)
  assert "remat" in jaxprs[True] and "remat" not in jaxprs[False]  # jax.checkpoint's primitive


def test_max_start_schedule_grows_linearly_to_the_final_bound():
  f = functools.partial(mtt.max_start_schedule, max_start_epoch=2, max_start_epoch_final=6)
  got = [int(f(t, num_steps=9)) for t in range(9)]
  assert got == [2, 2, 3, 3, 4, 4, 5, 5, 6]
  assert int(f(0, num_steps=1)) == 2


def manifest(**changes):
  m = {
    "dataset": {"name": "digits", "preprocess": "standardize", "max_train": 0},
    "network": {"name": "convnet", "width": 4, "depth": 1, "normalization": "instance",
                "num_classes": 3},
    "protocol": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 4, "augment": "none",
                 "num_epochs": 2, "num_experts": 2, "seed": 0},
  }  # fmt: skip
  for key, value in changes.items():
    part, name = key.split(".")
    m[part] = {**m[part], name: value}
  return m


@functools.cache
def tiny():
  model = models.ConvNet(num_classes=3, width=4, depth=1)
  rng = np.random.default_rng(2)
  x_train = rng.normal(size=(12, 4, 4, 1)).astype(np.float32)
  y_train = np.tile(np.arange(3), 4)
  return model, x_train, y_train


@pytest.mark.parametrize(
  "change,match",
  [
    ({"dataset.name": "mnist5k"}, r"another dataset: dataset.name is 'mnist5k' there, .* 'digits'"),
    ({"network.width": 8}, r"another network: network.width is 8 there, the config asks for 4"),
    ({"protocol.num_epochs": 5}, r"another protocol: protocol.num_epochs is 5 there"),
    ({"protocol.augment": "crop"}, r"another protocol: protocol.augment is 'crop' there"),
  ],
)
def test_a_buffer_of_another_dataset_network_or_protocol_is_refused(tmp_path, change, match):
  (tmp_path / mtt.MANIFEST).write_text(json.dumps(manifest(**change)))
  model, x, y = tiny()
  with pytest.raises(ValueError, match=match):
    mtt.load_or_train_buffer(
      str(tmp_path), manifest(), model=model, x_train=x, y_train=y, x_test=x, y_test=y
    )
  assert sorted(p.name for p in tmp_path.iterdir()) == [mtt.MANIFEST]  # nothing trained


@pytest.fixture(scope="module")
def tiny_buffer(tmp_path_factory):
  """``(directory, buffer, record)``: 2 experts of 2 epochs, trained once for the file."""
  model, x, y = tiny()
  directory = tmp_path_factory.mktemp("buffer")
  buffer, record = mtt.load_or_train_buffer(
    str(directory), manifest(), model=model, x_train=x, y_train=y, x_test=x, y_test=y, log=str
  )
  return directory, buffer, record


def test_the_expert_buffer_is_saved_per_epoch_and_reloaded(tiny_buffer):
  model, x, y = tiny()
  tmp_path, buffer, record = tiny_buffer
  init, logits = mtt.flat_model(model, x)
  assert buffer.shape == (2, 3, init(jax.random.key(0)).shape[0])
  np.testing.assert_array_equal(buffer[0, 0], init(jax.random.fold_in(jax.random.key(0), 0)))
  assert not np.allclose(buffer[:, 1], buffer[:, 2])  # every epoch moves
  # Epoch 1 of expert 0 is one jitted epoch: 3 SGD steps of lr 0.1 on batches of 4.
  epoch = mtt.make_expert_epoch(logits, learning_rate=0.1, batch_size=4)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 0), 0)
  theta, _ = epoch(jnp.asarray(buffer[0, 0]), jnp.asarray(x), jnp.eye(3)[y], key)
  np.testing.assert_allclose(theta, buffer[0, 1], rtol=1e-5, atol=1e-6)
  saved = json.loads((tmp_path / mtt.MANIFEST).read_text())
  assert saved["protocol"]["num_epochs"] == 2 and len(saved["test_accuracy"]) == 2
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0", "1"]
  again, record2 = mtt.load_or_train_buffer(
    str(tmp_path), manifest(), model=model, x_train=x, y_train=y, x_test=x, y_test=y
  )
  np.testing.assert_array_equal(again, buffer)
  assert record2["seconds"] == record["seconds"]  # loaded, not retrained


def make_step(buffer, **kw):
  model, x, _ = tiny()
  _, logits = mtt.flat_model(model, x)
  args = dict(
    num_classes=3, seed=0, num_steps=4, syn_steps=2, expert_epochs=1, min_start_epoch=0,
    max_start_epoch=1, max_start_epoch_final=2, syn_batch_size=4, lr_init=0.1,
    lr_learning_rate=0.1, learn_labels=True, label_learning_rate=1.0, strategy="none",
  )  # fmt: skip
  return mtt.make_mtt_step(logits, buffer, optax.sgd(10.0, momentum=0.5), **{**args, **kw})


@pytest.mark.parametrize(
  "kw,match",
  [
    ({"syn_steps": 0}, "syn_steps must be >= 1, got 0"),
    ({"expert_epochs": 2}, r"reaches epoch .* = 3, beyond the buffer's 2 epochs"),
    ({"max_start_epoch_final": 3}, r"= 3, beyond the buffer's 2 epochs"),
    ({"min_start_epoch": 1}, "0 <= min_start_epoch < max_start_epoch <= max_start_epoch_final"),
  ],
)
def test_bad_windows_and_step_counts(kw, match):
  with pytest.raises(ValueError, match=match):
    make_step(np.zeros((2, 3, 5), np.float32), **kw)


def test_steps_move_images_lr_and_labels_and_are_functions_of_seed_and_step(tiny_buffer):
  _, buffer, _ = tiny_buffer
  _, x, _ = tiny()
  x0, y0 = x[:6], np.repeat(np.eye(3, dtype=np.float32), 2, 0) * 2.0
  init, step = make_step(buffer)
  runs = []
  for _ in range(2):
    state, starts = init(x0, y0), []
    for _ in range(3):
      state, metrics = step(state, None, None)
      starts.append(int(metrics["start_epoch"]))
    runs.append(state)
    assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))
    assert all(0 <= s < 2 for s in starts)
  for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
    np.testing.assert_array_equal(a, b)
  state = runs[0]
  assert not np.allclose(state.x, x0) and not np.allclose(state.y, y0)
  assert float(state.log_lr) != pytest.approx(np.log(0.1))


@pytest.mark.slow  # a second compilation (~15 s under load); the test above is its fast sibling
def test_mtt_steps_with_dsa_keep_the_labels(tiny_buffer):
  _, buffer, _ = tiny_buffer
  _, x, _ = tiny()
  x0, y0 = x[:6], np.repeat(np.eye(3, dtype=np.float32), 2, 0)
  init, step = make_step(buffer, learn_labels=False, strategy="crop")
  state, _ = step(init(x0, y0), None, None)
  np.testing.assert_array_equal(state.y, y0)  # MTT: labels stay
  assert not np.allclose(state.x, x0)


def test_finite_task_softmax_labels_are_soft_cross_entropy_targets():
  z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
  p, y = job.finite_task(evaluation.Protocol(loss="mse"), z, learned=True, softmax=True)
  want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  assert p.loss == "xent"
  np.testing.assert_allclose(y, want, rtol=1e-6)
  np.testing.assert_allclose(evaluation._targets(y, 3, "xent"), want, rtol=1e-6)
  assert job.finite_task(evaluation.Protocol(), z, learned=True)[0].loss == "mse"


@pytest.mark.parametrize(
  "module,key,value,match",
  [
    (mtt_digits, "syn_steps", 0, r"config.mtt.syn_steps must be an integer >= 1, got 0"),
    (datm_digits, "max_start_epoch_final", 20, r"config.datm: the trajectory window reaches"),
    (mtt_digits, "expert_epochs", 30, r"= 35, beyond the buffer's num_epochs \(20\)"),
    (datm_digits, "min_start_epoch", 5, r"config.datm: the start window needs"),
    (mtt_digits, "augment", "zoom", r"config.mtt.augment: .*unknown: \['zoom'\]"),
    (datm_digits, "label_temperature", 0.0, r"datm.label_temperature must be a .* > 0, got 0.0"),
  ],
)
def test_bad_config(tmp_path, module, key, value, match):
  config = module.get_config("10")
  config[config.method][key] = value
  with pytest.raises(ValueError, match=match):
    job.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", [mtt_mnist5k, datm_mnist5k, mtt_digits, datm_digits])
def test_configs_and_sweeps(module):
  c = module.get_config("10")
  job.validate(c)
  for point in module.sweep():
    sweep.apply_point(c, point)
    job.validate(c)
  assert mtt_mnist5k.window("datm", 1)[2] < mtt_mnist5k.window("datm", 50)[2]  # DATM: later


@pytest.mark.slow  # loads the data
def test_per_class_and_syn_batch_beyond_the_data(tmp_path):
  config = mtt_digits.get_config("1,runlocal")
  config.mtt.per_class = 1000
  with pytest.raises(ValueError, match=r"config.mtt.per_class: per_class must be in \[1, "):
    job.run(config, str(tmp_path / "a"))
  config = mtt_digits.get_config("1,runlocal")
  config.mtt.syn_batch_size = 11
  with pytest.raises(ValueError, match=r"config.mtt.syn_batch_size \(11\) exceeds .* 10 images"):
    job.run(config, str(tmp_path / "b"))


@pytest.mark.slow
@pytest.mark.parametrize("module", [mtt_digits, datm_digits])
def test_runlocal_and_a_shared_buffer(tmp_path, module):
  config = module.get_config("2,runlocal")
  config[config.method].buffer_dir = str(tmp_path / "buffer")
  summary = job.run(config, str(tmp_path / "run"))
  with np.load(tmp_path / "run" / "support.npz") as f:
    assert f["x"].shape == (20, 8, 8, 1)
  for key in ("test_accuracy", "transfer_test_accuracy", "transfer_test_accuracy_init"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert summary["experts_seconds"] > 0
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path / "run"))] == [0, 2, 4]
  if module is datm_digits:  # the initial soft labels are the expert's logits / T
    labels = []
    for temperature in (1.0, 4.0):
      config.datm.label_temperature = temperature
      problem = support.support_problem(config, "datm")
      init, _, _, problem, _ = mtt.setup(config, str(tmp_path / "run"), problem, optax.sgd(1.0))
      labels.append(np.asarray(init(problem.x0, problem.y0).y))
    assert labels[0].max() - labels[0].min() > 1.0
    np.testing.assert_allclose(labels[1], labels[0] / 4.0, rtol=1e-6)
  other = module.get_config("2,runlocal")
  other[other.method].buffer_dir = str(tmp_path / "buffer")
  other[other.method].width = 16
  with pytest.raises(ValueError, match=r"another network: network.width is 8 there, .* 16"):
    job.run(other, str(tmp_path / "other"))


@pytest.mark.slow
def test_a_nan_meta_loss_stops_the_run_naming_the_step(tmp_path):
  config = mtt_digits.get_config("1,runlocal")
  config.optimizer.learning_rate = 1e38  # the images overflow after the first update
  with pytest.raises(FloatingPointError, match=r"\[mtt\].*step 2"):
    job.run(config, str(tmp_path))
