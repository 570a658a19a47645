r"""MTT and DATM: dataset distillation by matching training trajectories.

Cazenavette, Wang, Torralba, Efros & Zhu (2022), "Dataset Distillation by Matching
Training Trajectories" (CVPR), and Guo, Wang, Chen, Zhang & You (2024), "Towards Lossless
Dataset Distillation via Difficulty-Aligned Trajectory Matching" (ICLR, DATM).

**Expert buffer.** ``num_experts`` networks (the evaluation's ConvNet) are trained from
their own random initialisations by plain SGD on the real training set (batches of
``target_batch_size``, optional DSA, :mod:`kdjax.distill.dsa`) for ``num_epochs`` epochs;
expert :math:`i`'s flattened parameters after every epoch, :math:`\theta^{*}_{i,0..E}`,
are one orbax checkpoint (step :math:`i`) under ``<buffer_dir>/checkpoints``, next to
``manifest.json`` naming the dataset, the network and the training protocol. A buffer is
reused by any run whose config asks for the same three (a different one is a ValueError
naming the difference). One epoch is one jitted function (``lax.scan`` over its
batches), the batches sharded over the mesh's ``data`` axis.

**MTT step.** Draw an expert :math:`i` and a start epoch :math:`t`; the student starts at
:math:`\hat\theta_0 = \theta^*_{i,t}` and takes ``syn_steps`` SGD steps on minibatches
:math:`b_n` of the synthetic set :math:`(S, Y)` (each optionally DSA-augmented) with a
learned step size :math:`\alpha = e^{\lambda}`,

.. math::
  \hat\theta_{n+1} = \hat\theta_n - \alpha\,\nabla_\theta\,
    \ell\big(f_{\hat\theta_n}(\mathcal A(S_{b_n})), Y_{b_n}\big), \qquad
  L(S, \lambda) = \frac{\lVert \hat\theta_N - \theta^*_{i,t+M} \rVert^2}
    {\lVert \theta^*_{i,t} - \theta^*_{i,t+M} \rVert^2}

(:func:`trajectory_matching_loss`; ``M = expert_epochs``, squared norms over all
parameters flattened; :math:`\ell` the cross-entropy). :math:`S` and :math:`\lambda` (and
DATM's labels) follow the gradient of :math:`L` through the unrolled student steps; every
step of the unroll is wrapped in ``jax.checkpoint`` (only the step's input parameters are
kept for the backward pass, the step's activations are recomputed), so the memory of the
meta-gradient grows with ``syn_steps`` by one parameter vector per step, not by a whole
network's activations per step.

**DATM.** (a) Difficulty-aligned windows: :math:`t \sim U\{m, \dots, u_k - 1\}` with
``m = min_start_epoch`` and an upper bound growing linearly from ``max_start_epoch`` at
step 0 to ``max_start_epoch_final`` at the last step (the paper's sequential generation;
the configs put the window early at 1 image per class and later at more). MTT is the
case ``m = 0``, ``max_start_epoch_final = max_start_epoch``. (b) Soft labels: the label
rows are learned logits :math:`Z`, initialised to an expert's logits on the initial real
images divided by ``label_temperature`` :math:`T` (the paper's :math:`T = 1`; :math:`T > 1`
softens the initial labels), the images drawn only among those that expert classifies
correctly; the student's loss is the cross-entropy against :math:`\mathrm{softmax}(Z)`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import models
from kdjax.distill import dsa, frepo, kip

__all__ = [
  "METHODS",
  "MANIFEST",
  "MttState",
  "flat_model",
  "student_trajectory",
  "trajectory_matching_loss",
  "max_start_schedule",
  "make_expert_epoch",
  "expert_manifest",
  "check_manifest",
  "load_or_train_buffer",
  "correct_initial_support",
  "make_mtt_step",
  "validate_block",
  "setup",
]

METHODS = ("mtt", "datm")
MANIFEST = "manifest.json"
BUFFER_SEED = 0  # experts are keyed by fold_in(key(BUFFER_SEED), i): part of the protocol


class MttState(NamedTuple):
  """Support images ``x`` [m, H, W, C], labels ``y`` [m, c] (MTT: fixed one-hot minus an
  offset; DATM: learned logits), the log step size ``log_lr``, the optax states of the
  three, and ``step``."""

  x: jax.Array
  y: jax.Array
  log_lr: jax.Array
  opt_state: Any
  lr_opt_state: Any
  label_opt_state: Any
  step: jax.Array


def flat_model(model: nn.Module, x: jax.typing.ArrayLike) -> tuple[Callable, Callable]:
  """``(init(key) -> theta [P], logits(theta, x) -> [n, C])`` of a flax model with only
  ``params`` (e.g. ``kdjax.models.ConvNet``), on parameters flattened by ``ravel_pytree``."""
  x = jnp.asarray(x[:1])
  _, unravel = ravel_pytree(model.init(jax.random.key(0), x))

  def init(key):
    return ravel_pytree(model.init(key, x))[0]

  def logits(theta, images):
    return model.apply(unravel(theta), images)

  return init, logits


def _cross_entropy(logits_fn, theta, x, targets):
  return jnp.mean(optax.softmax_cross_entropy(logits_fn(theta, x), targets))


def _augment(key, x, strategy):
  if strategy == "none":
    return x
  return dsa.apply(dsa.sample(key, x.shape[0], strategy, x.shape[1]), x, strategy)


def student_trajectory(
  logits_fn: Callable,
  theta: jax.Array,
  x: jax.Array,
  targets: jax.Array,
  learning_rate: jax.typing.ArrayLike,
  batches: jax.Array,
  *,
  keys: jax.Array | None = None,
  strategy: str = "none",
  checkpoint: bool = True,
  unroll: int | bool = 1,
) -> jax.Array:
  r"""The student's end point :math:`\hat\theta_N` after ``N = len(batches)`` SGD steps.

  Step ``n`` uses rows ``batches[n]`` of ``(x, targets)`` (augmented with ``keys[n]``
  when ``strategy`` is not 'none') and the mean soft cross-entropy
  :math:`-\tfrac1b\sum_j \sum_c T_{jc} \log\mathrm{softmax}(f_\theta(x_j))_c`.

  Args:
    logits_fn: ``logits_fn(theta, x) -> [n, C]`` on flat parameters ``theta`` [P].
    theta: [P] start parameters.
    x: [m, ...] synthetic inputs; targets: [m, C] distributions.
    learning_rate: the student's step size (a traced scalar: it gets a gradient).
    batches: int [N, b] row indices, one minibatch per step.
    keys: [N] PRNG keys of the augmentations (needed unless ``strategy == 'none'``).
    strategy: a :mod:`kdjax.distill.dsa` strategy or 'none'.
    checkpoint: wrap each step in ``jax.checkpoint`` (same values and gradients; the
      backward pass recomputes the step's activations instead of storing them).
    unroll: ``lax.scan``'s unroll factor (True: a straight-line program).
  """
  if keys is None:
    keys = jax.random.split(jax.random.key(0), batches.shape[0])

  def body(theta, inputs):
    index, key = inputs
    xb = _augment(key, x[index], strategy)
    grad = jax.grad(_cross_entropy, argnums=1)(logits_fn, theta, xb, targets[index])
    return theta - learning_rate * grad, None

  if checkpoint:
    body = jax.checkpoint(body)
  theta, _ = jax.lax.scan(body, theta, (batches, keys), unroll=unroll)
  return theta


def trajectory_matching_loss(
  logits_fn: Callable,
  start: jax.Array,
  target: jax.Array,
  x: jax.Array,
  targets: jax.Array,
  learning_rate: jax.typing.ArrayLike,
  batches: jax.Array,
  **kwargs: Any,
) -> jax.Array:
  r"""MTT's normalised parameter distance (Cazenavette et al., 2022, eq. 2):

  .. math:: L = \frac{\lVert \hat\theta_N - \theta^*_{t+M}\rVert_2^2}
     {\lVert \theta^*_t - \theta^*_{t+M}\rVert_2^2},\qquad
     \hat\theta_N = \texttt{student\_trajectory}(\theta^*_t, \dots)

  with ``start`` = :math:`\theta^*_t` and ``target`` = :math:`\theta^*_{t+M}` (flat
  [P]); the remaining arguments are :func:`student_trajectory`'s.
  """
  student = student_trajectory(logits_fn, start, x, targets, learning_rate, batches, **kwargs)
  return jnp.sum(jnp.square(student - target)) / jnp.sum(jnp.square(start - target))


def max_start_schedule(step, *, max_start_epoch: int, max_start_epoch_final: int, num_steps: int):
  """DATM's growing upper bound of the start epoch at ``step``: linear from
  ``max_start_epoch`` (step 0) to ``max_start_epoch_final`` (step ``num_steps - 1``),
  rounded down (exclusive bound of the draw)."""
  frac = jnp.asarray(step, jnp.float32) / max(int(num_steps) - 1, 1)
  grow = (max_start_epoch_final - max_start_epoch) * jnp.minimum(frac, 1.0)
  return max_start_epoch + jnp.floor(grow + 1e-6).astype(jnp.int32)


def make_expert_epoch(
  logits_fn: Callable,
  *,
  learning_rate: float,
  batch_size: int,
  strategy: str = "none",
  unroll: int | bool = 1,
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> Callable:
  """The jitted ``epoch(theta, x, targets, key) -> (theta, mean_loss)``: one pass of
  plain SGD (``learning_rate``) over a ``key``-permutation of the ``n`` real rows in
  ``n // batch_size`` batches (the remainder is dropped), a ``lax.scan`` over the batches;
  each batch is DSA-augmented (one draw per image) unless ``strategy`` is 'none' and, with
  a ``mesh``, sharded along ``data_axis``. ``unroll`` is ``lax.scan``'s (True: a
  straight-line program, no XLA while loop)."""

  def epoch(theta, x, targets, key):
    n = x.shape[0]
    num_batches = n // batch_size
    perm_key, aug_key = jax.random.split(key)
    index = jax.random.permutation(perm_key, n)[: num_batches * batch_size]
    index = index.reshape(num_batches, batch_size)

    def body(theta, inputs):
      rows, k = inputs
      xb, tb = x[rows], targets[rows]
      if mesh is not None:
        batch = NamedSharding(mesh, P(data_axis))
        xb = jax.lax.with_sharding_constraint(xb, batch)
        tb = jax.lax.with_sharding_constraint(tb, batch)
      loss, grad = jax.value_and_grad(_cross_entropy, argnums=1)(
        logits_fn, theta, _augment(k, xb, strategy), tb
      )
      return theta - learning_rate * grad, loss

    keys = jax.random.split(aug_key, num_batches)
    theta, losses = jax.lax.scan(body, theta, (index, keys), unroll=unroll)
    return theta, jnp.mean(losses)

  return jax.jit(epoch)


def expert_manifest(config: Any, num_classes: int) -> dict:
  """What an expert buffer of ``config`` (its ``config.<method>`` block) is made of."""
  r, d = config[config.method], config.dataset
  return {
    "dataset": {
      "name": d.name,
      "preprocess": d.get("preprocess", ""),
      "max_train": int(d.get("max_train", 0)),
    },
    "network": {
      "name": "convnet",
      "width": int(r.width),
      "depth": int(r.depth),
      "normalization": r.normalization,
      "num_classes": int(num_classes),
    },
    "protocol": {
      "optimizer": "sgd",
      "learning_rate": float(r.expert_learning_rate),
      "batch_size": int(r.target_batch_size),
      "augment": r.expert_augment,
      "num_epochs": int(r.num_epochs),
      "num_experts": int(r.num_experts),
      "seed": BUFFER_SEED,
    },
  }


def check_manifest(found: dict, expected: dict, where: str) -> None:
  """ValueError naming the first difference of a buffer's manifest from the expected one."""
  for part in ("dataset", "network", "protocol"):
    have, want = found.get(part, {}), expected[part]
    for key in want:
      if have.get(key) != want[key]:
        raise ValueError(
          f"the expert buffer {where} was made for another {part}: {part}.{key} is "
          f"{have.get(key)!r} there, the config asks for {want[key]!r} (set a new "
          "buffer_dir, or the config's values)"
        )


def load_or_train_buffer(
  buffer_dir: str,
  manifest: dict,
  *,
  model: nn.Module,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray,
  y_test: np.ndarray,
  mesh: Mesh | None = None,
  log: Callable[[str], None] = print,
) -> tuple[np.ndarray, dict]:
  """The expert buffer ``[num_experts, num_epochs + 1, P]`` of ``manifest``, trained into
  ``buffer_dir`` (experts missing from it only: a killed run resumes) or loaded.

  Returns:
    ``(buffer, manifest)``; the written manifest adds ``seconds`` (the wall time of the
    experts' training, summed over the runs that trained them) and each expert's final
    ``test_accuracy``.

  Raises:
    ValueError: ``buffer_dir`` holds a buffer of another dataset, network or protocol.
  """
  from kdjax.jobs.checkpoint import Checkpointer

  p = manifest["protocol"]
  path = os.path.join(buffer_dir, MANIFEST)
  os.makedirs(buffer_dir, exist_ok=True)
  record = dict(manifest, seconds=0.0, test_accuracy=[])
  if os.path.exists(path):
    with open(path) as f:
      record = json.load(f)
    check_manifest(record, manifest, repr(buffer_dir))
  num_classes = manifest["network"]["num_classes"]
  init, logits_fn = flat_model(model, x_train)
  theta_template = init(jax.random.key(0))
  shape = (p["num_epochs"] + 1, theta_template.shape[0])
  targets = jnp.asarray(np.eye(num_classes, dtype=np.float32)[np.asarray(y_train)])
  x = jnp.asarray(x_train, jnp.float32)
  epoch = make_expert_epoch(
    logits_fn,
    learning_rate=p["learning_rate"],
    batch_size=p["batch_size"],
    strategy=p["augment"],
    unroll=True,  # on XLA:CPU a scan's while loop of convolutions ran ~2x slower
    mesh=mesh,
  )
  predict = jax.jit(lambda theta, images: jnp.argmax(logits_fn(theta, images), -1))
  experts = []
  checkpointer = Checkpointer(
    os.path.join(buffer_dir, "checkpoints"), keep=p["num_experts"], use_async=False
  )
  try:
    done = set(checkpointer.manager.all_steps())
    for i in range(p["num_experts"]):
      if i in done:
        restored = checkpointer.restore(i, {"trajectory": np.zeros(shape, np.float32)})
        experts.append(np.asarray(restored["trajectory"]))
        continue
      t0 = time.time()
      theta = init(jax.random.fold_in(jax.random.key(BUFFER_SEED), i))
      trajectory = [theta]
      for e in range(p["num_epochs"]):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BUFFER_SEED + 1), i), e)
        theta, loss = epoch(theta, x, targets, key)
        trajectory.append(theta)
      trajectory = np.asarray(jnp.stack(trajectory))
      if not np.all(np.isfinite(trajectory)):
        raise FloatingPointError(
          f"expert {i} diverged (loss {float(loss)}); lower expert_learning_rate"
        )
      acc = float(np.mean(np.asarray(predict(theta, jnp.asarray(x_test))) == np.asarray(y_test)))
      checkpointer.save(i, {"trajectory": trajectory})
      record["seconds"] = float(record["seconds"]) + time.time() - t0
      record["test_accuracy"] = list(record["test_accuracy"]) + [acc]
      with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
      os.replace(path + ".tmp", path)
      log(f"[experts] expert {i}: final loss {float(loss):.4f}, test accuracy {acc:.4f}")
      experts.append(trajectory)
  finally:
    checkpointer.close()
  return np.stack(experts), record


def correct_initial_support(
  logits_fn: Callable,
  theta: jax.Array,
  x_train: np.ndarray,
  y_train: np.ndarray,
  *,
  per_class: int,
  num_classes: int,
  seed: int,
) -> tuple[np.ndarray, np.ndarray, int]:
  """DATM's initial support: per class, the first ``per_class`` images of a ``seed``
  permutation that the expert ``theta`` classifies correctly (topped up with misclassified
  ones when a class has too few). Returns ``(x, labels, number correctly classified)``."""
  predicted = np.concatenate(
    [
      np.asarray(jnp.argmax(logits_fn(theta, jnp.asarray(x_train[i : i + 1000])), -1))
      for i in range(0, len(x_train), 1000)
    ]
  )
  rng = np.random.default_rng(seed)
  rows, correct = [], 0
  for c in range(num_classes):
    members = rng.permutation(np.flatnonzero(np.asarray(y_train) == c))
    if len(members) < per_class:
      raise ValueError(f"per_class must be in [1, {len(members)}] (class {c}), got {per_class}")
    good = members[predicted[members] == c]
    bad = members[predicted[members] != c]
    chosen = np.concatenate([good, bad])[:per_class]
    correct += int(min(len(good), per_class))
    rows.append(chosen)
  rows = np.concatenate(rows)
  return np.asarray(x_train)[rows].astype(np.float32), np.asarray(y_train)[rows], correct


def make_mtt_step(
  logits_fn: Callable,
  buffer: jax.Array,
  optimizer: optax.GradientTransformation,
  *,
  num_classes: int,
  seed: int,
  num_steps: int,
  syn_steps: int,
  expert_epochs: int,
  min_start_epoch: int,
  max_start_epoch: int,
  max_start_epoch_final: int,
  syn_batch_size: int,
  lr_init: float,
  lr_learning_rate: float,
  learn_labels: bool = False,
  label_learning_rate: float = 0.0,
  strategy: str = "none",
  unroll: int | bool = 1,
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> tuple[Callable[..., MttState], Callable[..., tuple[MttState, dict]]]:
  """Builds ``init(x, y) -> MttState`` and the jitted ``step(state, x_t, y_t)`` of MTT
  (DATM with a growing window and ``learn_labels``); the real target batch is unused.

  Step ``t`` draws the expert, the start epoch, the ``syn_steps`` minibatches of
  ``syn_batch_size`` synthetic rows (0: all) and their augmentations from
  ``fold_in(key(seed), t)`` (a resumed run draws the same), takes the gradient of
  :func:`trajectory_matching_loss` in the images, ``log_lr`` and (``learn_labels``) the
  label logits, and applies ``optimizer`` to the images, SGD (momentum 0.5,
  ``lr_learning_rate``) to ``log_lr`` and SGD (momentum 0.9, ``label_learning_rate``) to
  the labels (as the papers' code).

  Raises:
    ValueError: ``syn_steps`` or ``expert_epochs`` < 1, a window
      ``[min_start_epoch, max_start_epoch_final)`` that is empty or whose last target
      epoch ``max_start_epoch_final - 1 + expert_epochs`` lies beyond the buffer's epochs.
  """
  buffer = jnp.asarray(buffer)
  num_epochs = buffer.shape[1] - 1
  for name, value in (("syn_steps", syn_steps), ("expert_epochs", expert_epochs)):
    if int(value) < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if not 0 <= min_start_epoch < max_start_epoch <= max_start_epoch_final:
    raise ValueError(
      "the start window needs 0 <= min_start_epoch < max_start_epoch <= "
      f"max_start_epoch_final, got {min_start_epoch}, {max_start_epoch}, "
      f"{max_start_epoch_final}"
    )
  if max_start_epoch_final - 1 + expert_epochs > num_epochs:
    raise ValueError(
      f"the trajectory window reaches epoch max_start_epoch_final - 1 + expert_epochs = "
      f"{max_start_epoch_final - 1 + expert_epochs}, beyond the buffer's {num_epochs} epochs"
    )
  if strategy != "none":
    dsa.parse_strategy(strategy)
  base = jax.random.key(seed)
  lr_optimizer = optax.sgd(lr_learning_rate, momentum=0.5)
  label_optimizer = optax.sgd(label_learning_rate, momentum=0.9)

  def init(x_support, y_support) -> MttState:
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    log_lr = jnp.log(jnp.float32(lr_init))
    return MttState(
      x,
      y,
      log_lr,
      optimizer.init(x),
      lr_optimizer.init(log_lr),
      label_optimizer.init(y),
      jnp.zeros((), jnp.int32),
    )

  def step(state: MttState, buffer, x_target, y_target):
    del x_target, y_target
    m = state.x.shape[0]
    b = syn_batch_size or m
    keys = jax.random.split(jax.random.fold_in(base, state.step), 4)
    upper = max_start_schedule(
      state.step,
      max_start_epoch=max_start_epoch,
      max_start_epoch_final=max_start_epoch_final,
      num_steps=num_steps,
    )
    expert = jax.random.randint(keys[0], (), 0, buffer.shape[0])
    start_epoch = jax.random.randint(keys[1], (), min_start_epoch, upper)
    start = buffer[expert, start_epoch]
    target = buffer[expert, start_epoch + expert_epochs]
    batches = jax.vmap(lambda k: jax.random.permutation(k, m)[:b])(
      jax.random.split(keys[2], syn_steps)
    )
    augment_keys = jax.random.split(keys[3], syn_steps)

    def loss_fn(x, log_lr, y):
      targets = (
        jax.nn.softmax(y, -1) if learn_labels else jax.nn.one_hot(jnp.argmax(y, -1), num_classes)
      )
      return trajectory_matching_loss(
        logits_fn,
        start,
        target,
        x,
        targets,
        jnp.exp(log_lr),
        batches,
        keys=augment_keys,
        strategy=strategy,
        unroll=unroll,
      )

    loss, (gx, glr, gy) = jax.value_and_grad(loss_fn, argnums=(0, 1, 2))(
      state.x, state.log_lr, state.y
    )
    updates, opt_state = optimizer.update(gx, state.opt_state, state.x)
    lr_updates, lr_opt_state = lr_optimizer.update(glr, state.lr_opt_state, state.log_lr)
    new = state._replace(
      x=optax.apply_updates(state.x, updates),
      log_lr=optax.apply_updates(state.log_lr, lr_updates),
      opt_state=opt_state,
      lr_opt_state=lr_opt_state,
      step=state.step + 1,
    )
    if learn_labels:
      y_updates, label_opt_state = label_optimizer.update(gy, state.label_opt_state, state.y)
      new = new._replace(y=optax.apply_updates(state.y, y_updates), label_opt_state=label_opt_state)
    metrics = {
      "loss": loss,
      "grad_norm": optax.global_norm(gx),
      "learning_rate": jnp.exp(new.log_lr),
      "start_epoch": start_epoch,
    }
    return new, metrics

  jitted = kip.jit_sharded_step(
    step, mesh, data_axis, args=("replicated", "replicated", "batch", "batch")
  )
  if mesh is not None:  # as kip.jit_support_step, plus the replicated buffer
    replicated = NamedSharding(mesh, P())
    init = jax.jit(init, out_shardings=replicated)
    buffer = jax.device_put(buffer, replicated)
  return init, lambda state, x_t, y_t: jitted(state, buffer, x_t, y_t)


def validate_block(r: Any, path: str) -> None:
  """Checks a ``config.mtt`` / ``config.datm`` block (pure Python); ValueError names the key."""
  from kdjax.jobs import config as config_lib

  for key in ("per_class", "width", "depth", "target_batch_size", "num_experts", "num_epochs"):
    config_lib.check_int(r[key], f"{path}.{key}")
  for key in ("syn_steps", "expert_epochs", "max_start_epoch", "max_start_epoch_final"):
    config_lib.check_int(r[key], f"{path}.{key}")
  config_lib.check_int(r.min_start_epoch, f"{path}.min_start_epoch", minimum=0)
  config_lib.check_int(r.syn_batch_size, f"{path}.syn_batch_size", minimum=0)
  config_lib.check_int(r.scan_unroll, f"{path}.scan_unroll")
  for key in ("reg", "expert_learning_rate", "lr_init", "lr_learning_rate"):
    config_lib.check_number(r[key], f"{path}.{key}", above=0)
  config_lib.check_number(r.label_learning_rate, f"{path}.label_learning_rate", above=0)
  config_lib.check_number(r.label_temperature, f"{path}.label_temperature", above=0)
  config_lib.check_number(r.label_offset, f"{path}.label_offset", minimum=0, below=1)
  config_lib.check_choice(r.normalization, f"{path}.normalization", ("instance", "none"))
  config_lib.check_bool(r.learn_labels, f"{path}.learn_labels")
  if not isinstance(r.buffer_dir, str):
    raise ValueError(f"{path}.buffer_dir must be a path string ('' = WORKDIR/experts)")
  for key in ("augment", "expert_augment"):
    if r[key] != "none":
      try:
        dsa.parse_strategy(r[key])
      except ValueError as err:
        raise ValueError(f"{path}.{key}: {err} (or 'none')") from None
  if not r.min_start_epoch < r.max_start_epoch <= r.max_start_epoch_final:
    raise ValueError(
      f"{path}: the start window needs min_start_epoch < max_start_epoch <= "
      f"max_start_epoch_final, got {r.min_start_epoch}, {r.max_start_epoch}, "
      f"{r.max_start_epoch_final}"
    )
  last = r.max_start_epoch_final - 1 + r.expert_epochs
  if last > r.num_epochs:
    raise ValueError(
      f"{path}: the trajectory window reaches epoch max_start_epoch_final - 1 + expert_epochs"
      f" = {last}, beyond the buffer's num_epochs ({r.num_epochs})"
    )


def setup(config: Any, workdir: str, problem: Any, optimizer: optax.GradientTransformation):
  """The distill job's ``config.method`` 'mtt' / 'datm': loads or trains the expert buffer
  (``config.<method>.buffer_dir``, '' = ``WORKDIR/experts``), then builds the step.

  Returns:
    ``(init, step, features, problem, extra)``: ``features(state, x)`` is one random
    ConvNet's embedding (the job's KRR ``test_accuracy``, as DM's); ``problem`` has DATM's
    correctly classified initial support and its expert-logit labels; ``extra`` the
    summary's ``experts_seconds`` (the buffer's training time, whichever run did it),
    ``experts_test_accuracy`` (mean final expert) and, for DATM, ``init_correct``.

  Raises:
    ValueError: a buffer of another dataset, network or protocol; a ``syn_batch_size``
      beyond the support set.
  """
  r, ds = config[config.method], problem.ds
  m = len(problem.x0)
  if r.syn_batch_size > m:
    raise ValueError(
      f"config.{config.method}.syn_batch_size ({r.syn_batch_size}) exceeds the support "
      f"set's {m} images (0 = all)"
    )
  model = models.ConvNet(
    num_classes=ds.num_classes, width=r.width, depth=r.depth, normalization=r.normalization
  )
  buffer_dir = r.buffer_dir or os.path.join(workdir, "experts")
  buffer, record = load_or_train_buffer(
    buffer_dir,
    expert_manifest(config, ds.num_classes),
    model=model,
    x_train=ds.x_train,
    y_train=ds.y_train,
    x_test=ds.x_test,
    y_test=ds.y_test,
    mesh=problem.mesh,
  )
  _, logits_fn = flat_model(model, problem.x0)
  extra = {
    "experts_seconds": float(record["seconds"]),
    "experts_test_accuracy": float(np.mean(record["test_accuracy"])),
  }
  if r.learn_labels:
    expert = jnp.asarray(buffer[0, -1])
    x0, labels, correct = correct_initial_support(
      logits_fn,
      expert,
      np.asarray(ds.x_train),
      np.asarray(ds.y_train),
      per_class=r.per_class,
      num_classes=ds.num_classes,
      seed=config.seed,
    )
    logits0 = np.asarray(logits_fn(expert, jnp.asarray(x0)), np.float32) / r.label_temperature
    y0 = np.eye(ds.num_classes, dtype=np.float32)[labels] - np.float32(r.label_offset)
    problem = problem._replace(x0=x0, y0=y0)  # the class labels: the *_init evaluation's
    extra["init_correct"] = correct
  init, step = make_mtt_step(
    logits_fn,
    buffer,
    optimizer,
    num_classes=ds.num_classes,
    seed=config.seed,
    num_steps=config.num_steps,
    syn_steps=r.syn_steps,
    expert_epochs=r.expert_epochs,
    min_start_epoch=r.min_start_epoch,
    max_start_epoch=r.max_start_epoch,
    max_start_epoch_final=r.max_start_epoch_final,
    syn_batch_size=r.syn_batch_size,
    lr_init=r.lr_init,
    lr_learning_rate=r.lr_learning_rate,
    learn_labels=r.learn_labels,
    label_learning_rate=r.label_learning_rate,
    strategy=r.augment,
    unroll=r.scan_unroll,
    mesh=problem.mesh,
  )
  if r.learn_labels:
    init_labels = init
    init = lambda x, y: init_labels(x, logits0)  # noqa: E731 (DATM: the expert's logits)
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 2**30)
  return (
    init,
    step,
    lambda state, x: frepo.features(model, model.init(eval_key, x[:1]), x),
    problem,
    extra,
  )
