r"""The finite-network evaluation protocol of dataset distillation, shared by every method.

A (distilled) training set is judged by training finite networks *from scratch* on it
alone and measuring their accuracy on the held-out split, over several seeds (mean and
standard deviation): Wang et al. (2018), "Dataset Distillation"; Zhao, Mopuri & Bilen
(2021), "Dataset Condensation with Gradient Matching" (the ConvNet-3 evaluation); the
KIP, RFAD and FRePo papers report their finite-network numbers the same way. The same
:func:`evaluate` runs on distilled sets, random real subsets and the full training set.

One network of :class:`Protocol` is trained with Adam (cosine-decayed learning rate) on
minibatches (the whole set when it is smaller than ``batch_size``), with optional random
translations by up to ``max_shift`` pixels (zero padding; differentiable, no flips, so
digits keep their meaning), on

.. math::
  \text{xent: } -\textstyle\sum_c y_c \log \mathrm{softmax}(f_\theta(x))_c, \qquad
  \text{mse: } \tfrac12 \lVert f_\theta(x) - y \rVert^2

to integer labels (one-hot) or soft label rows (distributions for ``xent``; any real
targets, e.g. learned KRR labels, for ``mse``). Each training step is one jitted function
(see :func:`_compiled` for why not one ``fori_loop`` or a ``vmap`` over seeds).

The *field* protocol of the DC, DSA, DM and MTT papers (Zhao et al. 2021; Zhao & Bilen 2021,
2023; Cazenavette et al. 2022), :data:`FIELD`, is the same loop with ``optimizer='sgd'``
(SGD, momentum 0.9, weight decay :math:`5\cdot10^{-4}` added to the gradient as PyTorch
does, learning rate 0.01 divided by 10 after half the steps), ``epochs=1000`` (passes over
the set: :math:`\text{steps} = \text{epochs}\cdot\lceil m / \text{batch}\rceil`), a
ConvNet of width 128 and DSA augmentation (``augment``: a :mod:`kdjax.distill.dsa` strategy,
each image its own transform and parameters) instead of shifts. It is for accelerators and
for comparison with published numbers; the pinned CPU protocol (Adam, cosine decay,
``steps`` steps, width 32, shifts) stays the default.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax import models
from kdjax.distill import dsa
from kdjax.jobs import config as config_lib

__all__ = [
  "NETWORKS",
  "LOSSES",
  "OPTIMIZERS",
  "FIELD",
  "Protocol",
  "protocol_from_config",
  "schedule",
  "make_optimizer",
  "make_network",
  "random_shift",
  "evaluate",
]

NETWORKS = config_lib.EVALUATION_NETWORKS
LOSSES = config_lib.EVALUATION_LOSSES
OPTIMIZERS = config_lib.EVALUATION_OPTIMIZERS
SGD_MOMENTUM = 0.9  # the field protocol's SGD (the papers' evaluate_synset)


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How finite networks are trained on a (distilled) set.

  Attributes:
    network: 'convnet' (``kdjax.models.ConvNet``, instance norm, the dataset-distillation
      ConvNet), 'mlp' (``kdjax.models.MLP``, ``depth`` hidden layers) or 'resnet'
      (``kdjax.models.CifarResNet``-8 with widths ``width/4, width/4, width/2, width``).
    width: channels (ConvNet, ResNet's last stage) or hidden units (MLP).
    depth: ConvNet blocks or MLP hidden layers (ignored by the ResNet).
    steps: Adam steps.
    batch_size: minibatch size (full batch when the set is smaller).
    learning_rate: peak Adam learning rate, cosine-decayed to 0 over ``steps``.
    weight_decay: decoupled weight decay (AdamW); 0 for plain Adam.
    loss: 'xent' or 'mse'.
    max_shift: random translation range in pixels (0: no augmentation).
    seeds: number of independently initialised networks (seeds 0..seeds-1 offset by
      the ``seed`` argument of :func:`evaluate`).
    augment: 'none', or a :mod:`kdjax.distill.dsa` strategy applied to every minibatch
      (after the shifts), each image with its own transform and parameters.
    epochs: 0 to train ``steps`` steps; else ``epochs * ceil(m / batch_size)`` steps on a
      set of ``m`` images (:meth:`num_steps`).
    optimizer: 'adam' (Adam or AdamW, cosine-decayed) or 'sgd' (momentum 0.9, coupled
      weight decay, the learning rate divided by 10 after half the steps: the papers').
  """

  network: str = "convnet"
  width: int = 64
  depth: int = 3
  steps: int = 1000
  batch_size: int = 256
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  loss: str = "xent"
  max_shift: int = 2
  seeds: int = 3
  augment: str = "none"
  epochs: int = 0
  optimizer: str = "adam"

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
    if self.augment != "none":
      dsa.parse_strategy(self.augment)
    if int(self.epochs) < 0:
      raise ValueError(f"epochs must be >= 0, got {self.epochs}")
    if self.network not in NETWORKS:
      raise ValueError(f"network must be one of {list(NETWORKS)}, got {self.network!r}")
    if self.loss not in LOSSES:
      raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
    for name in ("width", "depth", "steps", "batch_size", "seeds"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.max_shift < 0:
      raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")
    if not self.learning_rate > 0 or self.weight_decay < 0:
      raise ValueError(
        f"learning_rate must be > 0 and weight_decay >= 0, got "
        f"{self.learning_rate}, {self.weight_decay}"
      )

  def num_steps(self, num_examples: int) -> int:
    """Training steps on a set of ``num_examples`` images: ``steps``, or ``epochs`` passes
    of ``ceil(num_examples / batch_size)`` minibatches."""
    if not self.epochs:
      return self.steps
    return self.epochs * -(-max(num_examples, 1) // self.batch_size)


# The field protocol (module docstring) on top of a protocol's network, depth, loss and seeds.
FIELD = {
  "width": 128,
  "batch_size": 256,
  "optimizer": "sgd",
  "learning_rate": 0.01,
  "weight_decay": 5e-4,
  "epochs": 1000,
  "max_shift": 0,
  "augment": dsa.DIGITS,
}


def protocol_from_config(
  block: Any, path: str = "config.evaluation", *, num_support: int = 0
) -> Protocol:
  """The :class:`Protocol` of an ``evaluation`` config block (:class:`kdjax.jobs.config.Evaluation`;
  its ``num_steps`` is the protocol's ``steps``, ``batch_size=0`` the whole set of
  ``num_support`` images). ValueErrors name the key."""
  e = (
    block
    if isinstance(block, config_lib.Evaluation)
    else config_lib.Evaluation.from_config(block, path)
  )
  if e.augment != "none":
    try:
      dsa.parse_strategy(e.augment)
    except ValueError as err:
      raise ValueError(f"{path}.augment: {err} (or 'none')") from None
  return Protocol(
    network=e.network,
    width=e.width,
    depth=e.depth,
    steps=e.num_steps,
    batch_size=e.batch_size or max(num_support, 1),
    learning_rate=e.learning_rate,
    weight_decay=e.weight_decay,
    loss=e.loss,
    max_shift=e.max_shift,
    seeds=e.seeds,
    augment=e.augment,
    epochs=e.epochs,
    optimizer=e.optimizer,
  )


def make_network(protocol: Protocol, num_classes: int) -> nn.Module:
  """The flax network of ``protocol`` with ``num_classes`` outputs."""
  if protocol.network == "convnet":
    return models.ConvNet(num_classes=num_classes, width=protocol.width, depth=protocol.depth)
  if protocol.network == "mlp":
    return models.MLP(num_classes=num_classes, hidden=(protocol.width,) * protocol.depth)
  w = protocol.width
  return models.CifarResNet(
    num_classes=num_classes, depth=8, widths=(max(w // 4, 1), max(w // 4, 1), max(w // 2, 1), w)
  )


def random_shift(key: jax.Array, x: jax.typing.ArrayLike, max_shift: int) -> jax.Array:
  r"""Translates every image by its own random offset in ``[-max_shift, max_shift]`` squared.

  Zero padding, then a crop: :math:`x'_{i,h,w} = x_{i,h+\delta_i,w+\epsilon_i}` (0 outside).
  Differentiable in ``x`` (the differentiable augmentation of Zhao & Bilen, 2021,
  "Dataset Condensation with Differentiable Siamese Augmentation", restricted to shifts).

  Args:
    key: PRNG key.
    x: [n, H, W, C] images.
    max_shift: largest shift in pixels (0 returns ``x``).

  Returns:
    [n, H, W, C] shifted images.
  """
  x = jnp.asarray(x)
  if max_shift == 0:
    return x
  n, h, w, _ = x.shape
  s = max_shift
  padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * s + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, x.shape[3]))
  return jax.vmap(crop)(padded, offsets)


def _targets(y: Any, num_classes: int, loss: str) -> np.ndarray:
  """One-hot rows for integer labels; checked soft rows otherwise."""
  y = np.asarray(y)
  if np.issubdtype(y.dtype, np.integer):
    if y.ndim != 1:
      raise ValueError(f"integer labels must be 1-D, got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return np.eye(num_classes, dtype=np.float32)[y]
  if y.ndim != 2 or y.shape[1] != num_classes:
    raise ValueError(f"soft labels must be [m, {num_classes}], got shape {y.shape}")
  if not np.all(np.isfinite(y)):
    raise ValueError("labels hold NaN or inf")
  if loss == "xent" and (y.min() < 0 or not np.allclose(y.sum(1), 1.0, atol=1e-4)):
    raise ValueError(
      "loss 'xent' needs integer labels or rows that are distributions "
      "(non-negative, summing to 1); use loss='mse' for real-valued labels"
    )
  return y.astype(np.float32)


def _loss(logits: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
  if kind == "xent":
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))
  return 0.5 * jnp.mean(jnp.sum(jnp.square(logits - targets), axis=-1))


def schedule(protocol: Protocol) -> optax.Schedule:
  """The learning rate by step: cosine decay to 0 over ``steps`` (Adam), or the papers' SGD
  schedule, ``learning_rate`` and a tenth of it from step ``steps // 2`` on."""
  if protocol.optimizer == "adam":
    return optax.cosine_decay_schedule(protocol.learning_rate, protocol.steps)
  return optax.piecewise_constant_schedule(protocol.learning_rate, {protocol.steps // 2: 0.1})


def make_optimizer(protocol: Protocol) -> optax.GradientTransformation:
  """Adam (AdamW with ``weight_decay``) or SGD with momentum 0.9 and the weight decay added
  to the gradient (PyTorch's ``SGD(weight_decay=...)``), on :func:`schedule`."""
  lr = schedule(protocol)
  if protocol.optimizer == "sgd":
    return optax.chain(
      optax.add_decayed_weights(protocol.weight_decay), optax.sgd(lr, momentum=SGD_MOMENTUM)
    )
  if protocol.weight_decay:
    return optax.adamw(lr, weight_decay=protocol.weight_decay)
  return optax.adam(lr)


@functools.lru_cache(maxsize=16)
def _compiled(protocol: Protocol, num_classes: int) -> tuple[Callable, Callable, Callable]:
  """Jitted ``init(key, x)``, ``step(carry, x, targets, key, step)`` and ``predict``.

  The steps run in a Python loop over one jitted step, one seed after another: on XLA's
  CPU backend a convolution inside ``lax.fori_loop`` ran 20x slower than the same step
  jitted alone, and ``vmap`` over the seeds' parameters (grouped convolutions) 4x
  slower than the seeds in turn (measured on this project's 2-core CPU runners).
  """
  model = make_network(protocol, num_classes)
  optimizer = make_optimizer(protocol)

  def apply(variables, images, train):
    if set(variables) == {"params"} or not train:
      return model.apply(variables, images, train=train), variables
    logits, updates = model.apply(
      variables, images, train=True, mutable=[k for k in variables if k != "params"]
    )
    return logits, {**variables, **updates}

  def init(key, x):
    variables = model.init(key, x[:1])
    return variables, optimizer.init(variables["params"])

  def step(carry, x, targets, key, step_index):
    variables, opt_state = carry
    batch_key, shift_key = jax.random.split(jax.random.fold_in(key, step_index))
    m, batch = x.shape[0], min(protocol.batch_size, x.shape[0])
    if batch < m:
      index = jax.random.choice(batch_key, m, (batch,), replace=False)
      x, targets = x[index], targets[index]
    x = random_shift(shift_key, x, protocol.max_shift)
    if protocol.augment != "none":
      drawn = dsa.sample(jax.random.fold_in(shift_key, 1), batch, protocol.augment, x.shape[1])
      x = dsa.apply(drawn, x, protocol.augment)

    def loss_fn(params):
      logits, new_vars = apply({**variables, "params": params}, x, True)
      return _loss(logits, targets, protocol.loss), new_vars

    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    new_vars = {**new_vars, "params": optax.apply_updates(variables["params"], updates)}
    return (new_vars, opt_state), loss

  def correct(variables, x, labels):
    return jnp.sum(jnp.argmax(apply(variables, x, False)[0], -1) == labels)

  return jax.jit(init), jax.jit(step, donate_argnums=0), jax.jit(correct)


def evaluate(
  x_train: jax.typing.ArrayLike,
  y_train: Any,
  x_test: jax.typing.ArrayLike,
  labels_test: jax.typing.ArrayLike,
  protocol: Protocol = Protocol(),
  *,
  num_classes: int,
  seed: int = 0,
  test_chunk: int = 1000,
) -> dict:
  r"""Trains ``protocol.seeds`` finite networks on ``(x_train, y_train)``; test accuracy.

  The protocol of the module docstring: each network starts from its own random
  initialisation and sees only ``x_train`` (a distilled set, a random real subset or the
  full data), and is scored on ``x_test``:

  .. math:: \mathrm{acc}_s = \tfrac1n \textstyle\sum_i [\arg\max_c f_{\theta_s}(x_i)_c
     = \mathrm{label}_i],\qquad \text{report } \mathrm{mean}_s \pm \mathrm{std}_s.

  Args:
    x_train: [m, H, W, C] training images (preprocessed like ``x_test``).
    y_train: int [m] class ids, or float [m, num_classes] soft labels.
    x_test: [n, H, W, C] held-out images.
    labels_test: int [n] class ids.
    protocol: the training protocol.
    num_classes: number of classes.
    seed: base seed; network ``s`` uses ``jax.random.key(seed + s)``.
    test_chunk: test images per forward pass.

  Returns:
    ``{'mean': float, 'std': float, 'accuracies': list of floats (one per seed),
    'steps': training steps per network}``.

  Raises:
    ValueError: empty or mismatched inputs, labels out of ``[0, num_classes)``, soft labels
      that are not distributions with ``loss='xent'``.
  """
  x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
  labels_test = np.asarray(labels_test)
  if x_train.ndim != 4 or x_test.ndim != 4 or x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(
      f"x_train and x_test must be [m, H, W, C] images of one shape, got "
      f"{x_train.shape} and {x_test.shape}"
    )
  if len(x_train) == 0 or len(np.asarray(y_train)) != len(x_train):
    raise ValueError(
      f"y_train must have one row per image of x_train ({len(x_train)}), got {np.shape(y_train)}"
    )
  if labels_test.shape != (len(x_test),):
    raise ValueError(f"labels_test must be [{len(x_test)}], got {labels_test.shape}")
  targets = _targets(y_train, num_classes, protocol.loss)
  _targets(labels_test, num_classes, "xent")  # range check of the test labels
  if protocol.epochs:  # the schedules see the step count of this set's epochs
    protocol = dataclasses.replace(protocol, steps=protocol.num_steps(len(x_train)), epochs=0)
  init, step, correct = _compiled(protocol, num_classes)
  x, y = jnp.asarray(x_train), jnp.asarray(targets)
  accuracies = []
  for s in range(protocol.seeds):
    init_key, key = jax.random.split(jax.random.key(seed + s))
    carry = init(init_key, x)
    for i in range(protocol.steps):
      carry, loss = step(carry, x, y, key, i)
    if not np.isfinite(float(loss)):
      raise FloatingPointError(
        f"training loss became {float(loss)} (seed {seed + s}); lower protocol.learning_rate"
      )
    hits = sum(
      int(
        correct(
          carry[0],
          jnp.asarray(x_test[i : i + test_chunk]),
          jnp.asarray(labels_test[i : i + test_chunk]),
        )
      )
      for i in range(0, len(x_test), test_chunk)
    )
    accuracies.append(hits / len(x_test))
  accuracies = np.asarray(accuracies, np.float64)
  return {
    "mean": float(accuracies.mean()),
    "std": float(accuracies.std()),
    "accuracies": [float(a) for a in accuracies],
    "steps": protocol.steps,
  }
