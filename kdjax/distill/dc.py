r"""DC and DSA: dataset condensation with gradient matching.

Zhao, Mopuri & Bilen (2021), "Dataset Condensation with Gradient Matching" (ICLR), and
with differentiable siamese augmentation (``strategy``, :mod:`kdjax.distill.dsa`): Zhao
& Bilen (2021), "Dataset Condensation with Differentiable Siamese Augmentation" (ICML).

A network :math:`\theta` (the evaluation's ConvNet) is drawn fresh every ``outer_loop``
steps. Each step matches, per class, the gradient of the cross-entropy on the real
images of that class with the one on its synthetic images (both under the same
augmentation :math:`\mathcal A_{\omega_c}`) and updates the synthetic images,

.. math::
  L(S) = \sum_c D\big(\nabla_\theta \ell(T_c; \theta), \nabla_\theta \ell(S_c; \theta)\big),
  \qquad D(A, B) = \sum_{\text{layers}} \sum_{i}
    \Big(1 - \frac{\langle A_i, B_i\rangle}{\lVert A_i\rVert \lVert B_i\rVert + 10^{-6}}\Big),

the layer-wise distance of the paper: a layer's gradient is a matrix with one row
:math:`A_i` per output channel (a conv kernel's :math:`3 \cdot 3 \cdot C_{in}` entries,
a dense kernel's inputs); 1-D parameters (biases, norm scales) do not count. Unless it
is the last step of the network's ``outer_loop``, the network then trains
``inner_steps`` SGD steps on the (augmented) synthetic set, the paper's inner loop.
:math:`T_c` are the images of class :math:`c` in the shared stream's class-mixed target
batch (up to ``real_per_class`` of them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from kdjax.distill import dsa, kip

__all__ = ["DcState", "gradient_distance", "class_batch", "make_dc_step"]


class DcState(NamedTuple):
  """Support images ``x`` [m, H, W, C] (by class), labels ``y`` [m, c] (fixed), the images'
  optax state, the current network ``net`` and its optimizer state, and ``step``."""

  x: jax.Array
  y: jax.Array
  opt_state: Any
  net: Any
  net_opt_state: Any
  step: jax.Array


def gradient_distance(grads_a: Any, grads_b: Any) -> jax.Array:
  r""":math:`D(A, B)` of the module docstring over two gradient pytrees of one network."""
  total = jnp.zeros((), jnp.float32)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    if a.ndim < 2:
      continue
    a, b = a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]).T
    cos = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-6)
    total = total + jnp.sum(1 - cos)
  return total


def class_batch(labels: jax.Array, c: int, size: int) -> tuple[jax.Array, jax.Array]:
  """``(index [size], weight [size])``: up to ``size`` positions of class ``c`` in
  ``labels`` (others fill the rest with weight 0); the weights average over the class."""
  index = jnp.argsort((labels != c).astype(jnp.int32), stable=True)[:size]
  hit = (labels[index] == c).astype(jnp.float32)
  return index, hit / jnp.maximum(jnp.sum(hit), 1.0)


def make_dc_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  *,
  num_classes: int,
  per_class: int,
  seed: int,
  outer_loop: int,
  inner_steps: int,
  model_learning_rate: float,
  real_per_class: int,
  strategy: str = "none",
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> tuple[Callable[..., DcState], Callable[..., tuple[DcState, dict]]]:
  """Builds ``init(x, y) -> DcState`` and ``step(state, x_t, y_t)`` (DC; DSA with a
  ``strategy``).

  The network of step ``t`` is ``model.init(fold_in(key(seed), t))`` when ``t %
  outer_loop == 0``, else the one the previous step trained; augmentations are keyed by
  ``(seed, t)``, so a resumed run is identical. ``step`` is one jitted matching update
  plus (unless ``(t + 1) % outer_loop == 0``) ``inner_steps`` jitted SGD steps of the
  network on the synthetic set.

  The per-class distances are a Python loop over the classes (a straight-line program):
  the ``lax.map`` it replaced ran them in an XLA while loop, whose second-order
  convolutions XLA:CPU executed ~5x slower (mnist5k 10/class: 4.9 -> 1.0 CPU-s per step;
  compilation 34 -> 41 CPU-s).

  Args:
    model: a flax classifier, e.g. ``kdjax.models.ConvNet``.
    optimizer: optax transformation of the support images.
    num_classes, per_class: the support layout: ``per_class`` rows of class 0, then 1, ...
    seed: seed of the networks and augmentations.
    outer_loop: steps per network (>= 1).
    inner_steps: network SGD steps on the synthetic set between matchings (>= 1).
    model_learning_rate: the network's SGD learning rate.
    real_per_class: real images of a class per matching (from the target batch).
    strategy: a :mod:`kdjax.distill.dsa` strategy, or 'none' (DC).
    mesh: shard the target batch along ``data_axis`` (state replicated).

  Returns:
    ``(init, step)``; ``step`` returns ``(state, {'loss', 'grad_norm'})``.
  """
  for name, value in (
    ("outer_loop", outer_loop),
    ("inner_steps", inner_steps),
    ("real_per_class", real_per_class),
    ("per_class", per_class),
  ):
    if int(value) < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if strategy != "none":
    dsa.parse_strategy(strategy)
  base = jax.random.key(seed)
  net_optimizer = optax.sgd(model_learning_rate)
  layout = np.repeat(np.arange(num_classes), per_class)

  def augment(key, x, labels):
    if strategy == "none":
      return x
    return dsa.augment(key, x, labels, strategy, num_classes=num_classes)

  def xent(params, x, labels, weights):
    logits = model.apply(params, x)
    return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  def init(x_support, y_support) -> DcState:
    if not np.array_equal(np.argmax(np.asarray(y_support), -1), layout):
      raise ValueError(
        f"the support labels must be {per_class} rows of class 0, then of class 1, ..."
      )
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    net = model.init(base, x[:1])
    return DcState(x, y, optimizer.init(x), net, net_optimizer.init(net), jnp.zeros((), jnp.int32))

  # The seed's key is an argument of the jitted functions, not a constant baked into them:
  # runs that differ only in the seed share one compilation (and the persistent cache).
  def match(state: DcState, x_target, y_target, base):
    t = state.step
    fresh = model.init(jax.random.fold_in(base, t), state.x[:1])
    new_net = t % outer_loop == 0
    params = jax.tree.map(lambda a, b: jnp.where(new_net, a, b), fresh, state.net)
    net_opt = jax.tree.map(
      lambda a, b: jnp.where(new_net, a, b), net_optimizer.init(fresh), state.net_opt_state
    )
    key = jax.random.fold_in(jax.random.fold_in(base, t), 1)
    labels_t = jnp.argmax(y_target, -1)

    def class_distance(x, c):  # one class
      index, weight = class_batch(labels_t, c, real_per_class)
      labels = jnp.full((real_per_class,), c)
      real = augment(key, x_target[index], labels)
      g_real = jax.lax.stop_gradient(jax.grad(xent)(params, real, labels, weight))
      labels_s = jnp.full((per_class,), c)
      synthetic = augment(key, jax.lax.dynamic_slice_in_dim(x, c * per_class, per_class), labels_s)
      g_syn = jax.grad(xent)(params, synthetic, labels_s, jnp.full((per_class,), 1 / per_class))
      return jnp.where(jnp.sum(weight) > 0, gradient_distance(g_real, g_syn), 0.0)

    def loss_fn(x):  # the classes unrolled: see make_dc_step's docstring
      return sum(class_distance(x, c) for c in range(num_classes))

    loss, grads = jax.value_and_grad(loss_fn)(state.x)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.x)
    new = state._replace(
      x=optax.apply_updates(state.x, updates),
      opt_state=opt_state,
      net=params,
      net_opt_state=net_opt,
      step=t + 1,
    )
    return new, {"loss": loss, "grad_norm": optax.global_norm(grads)}

  def train_net(state: DcState, i, base):
    key = jax.random.fold_in(jax.random.fold_in(base, state.step - 1), 2 + i)
    labels = jnp.asarray(layout)
    x = augment(key, jax.lax.stop_gradient(state.x), labels)
    weights = jnp.full(labels.shape, 1 / labels.shape[0])
    grads = jax.grad(xent)(state.net, x, labels, weights)
    updates, net_opt = net_optimizer.update(grads, state.net_opt_state, state.net)
    return state._replace(net=optax.apply_updates(state.net, updates), net_opt_state=net_opt)

  match_jit = kip.jit_sharded_step(
    match, mesh, data_axis, args=("replicated", "batch", "batch", "replicated")
  )
  train_jit = jax.jit(train_net, donate_argnums=0)

  def step(state: DcState, x_target, y_target):
    state, metrics = match_jit(state, x_target, y_target, base)
    if int(state.step) % outer_loop:
      for i in range(inner_steps):
        state = train_jit(state, jnp.int32(i), base)
    return state, metrics

  return init, step
