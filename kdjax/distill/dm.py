r"""DM: dataset condensation with distribution matching.

Zhao & Bilen (2023), "Dataset Condensation with Distribution Matching" (WACV). Each step
draws a fresh randomly initialised network :math:`\psi_\vartheta` (the evaluation's
ConvNet without its linear head: :func:`kdjax.distill.frepo.features`) and matches, per
class, the mean embedding of the real and the synthetic images, both under the same
differentiable siamese augmentation :math:`\mathcal A_{\omega_c}`
(:mod:`kdjax.distill.dsa`):

.. math::
  L(S) = \sum_{c} \Big\lVert \tfrac{1}{|T_c|}\textstyle\sum_{x \in T_c}
    \psi_\vartheta(\mathcal A_{\omega_c}(x)) - \tfrac{1}{|S_c|}\textstyle\sum_{s \in S_c}
    \psi_\vartheta(\mathcal A_{\omega_c}(s)) \Big\rVert^2,
  \qquad \vartheta \sim P_\vartheta,

over the classes present in the target batch :math:`T` (a class-mixed batch of the
shared stream; :math:`T_c` its images of class :math:`c`). The support labels stay the
class labels; only the images are learned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdjax.distill import dsa, frepo, kip

__all__ = ["DmState", "class_means", "dm_loss", "make_dm_step"]


class DmState(NamedTuple):
  """Support images ``x`` [m, H, W, C], labels ``y`` [m, c] (fixed), the images' optax
  state and ``step``."""

  x: jax.Array
  y: jax.Array
  opt_state: Any
  step: jax.Array


def class_means(embedding: jax.Array, labels: jax.Array, num_classes: int):
  """``(means [C, F], counts [C])``: the mean embedding of each class (0 for an absent one)."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=embedding.dtype)
  counts = jnp.sum(onehot, 0)
  return (onehot.T @ embedding) / jnp.maximum(counts, 1)[:, None], counts


def dm_loss(
  embed: Callable[[jax.Array], jax.Array],
  x_support: jax.Array,
  labels_support: jax.Array,
  x_target: jax.Array,
  labels_target: jax.Array,
  *,
  num_classes: int,
  augment_key: jax.Array | None = None,
  strategy: str = "none",
) -> jax.Array:
  r"""The DM loss of the module docstring for one network ``embed`` ([n, ...] -> [n, F])."""
  if strategy != "none":
    aug = lambda x, y: dsa.augment(augment_key, x, y, strategy, num_classes=num_classes)
    x_support, x_target = aug(x_support, labels_support), aug(x_target, labels_target)
  real, counts = class_means(jax.lax.stop_gradient(embed(x_target)), labels_target, num_classes)
  synthetic, _ = class_means(embed(x_support), labels_support, num_classes)
  return jnp.sum(jnp.where(counts > 0, jnp.sum(jnp.square(real - synthetic), -1), 0.0))


def make_dm_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  *,
  num_classes: int,
  seed: int,
  strategy: str = "none",
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> tuple[Callable[..., DmState], Callable[..., tuple[DmState, dict]]]:
  """Builds ``init(x, y) -> DmState`` and the jitted ``step(state, x_t, y_t)``.

  Step ``t`` draws the network ``model.init(fold_in(key(seed), t))`` and the augmentation
  key from the same ``(seed, t)`` (a resumed run draws the same), and applies
  ``optimizer`` to the gradient of :func:`dm_loss` in the support images. ``y_t`` are
  regression targets (one-hot minus an offset): their argmax is the class.

  Args:
    model: a flax classifier with an ``nn.Dense`` head, e.g. ``kdjax.models.ConvNet``.
    optimizer: optax transformation of the support images.
    num_classes: C.
    seed: seed of the networks and augmentations.
    strategy: a :mod:`kdjax.distill.dsa` strategy, or 'none'.
    mesh: shard the target batch along ``data_axis`` (state replicated).

  Returns:
    ``(init, step)``; ``step`` returns ``(state, {'loss', 'grad_norm'})`` and donates
    ``state``.
  """
  if strategy != "none":
    dsa.parse_strategy(strategy)
  base = jax.random.key(seed)

  def init(x_support, y_support) -> DmState:
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    return DmState(x, y, optimizer.init(x), jnp.zeros((), jnp.int32))

  def step(state: DmState, x_target, y_target):
    net_key, augment_key = jax.random.split(jax.random.fold_in(base, state.step))
    params = model.init(net_key, state.x[:1])
    embed = lambda x: frepo.features(model, params, x)

    def loss_fn(x):
      return dm_loss(
        embed,
        x,
        jnp.argmax(state.y, -1),
        x_target,
        jnp.argmax(y_target, -1),
        num_classes=num_classes,
        augment_key=augment_key,
        strategy=strategy,
      )

    loss, grads = jax.value_and_grad(loss_fn)(state.x)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.x)
    new = state._replace(
      x=optax.apply_updates(state.x, updates), opt_state=opt_state, step=state.step + 1
    )
    return new, {"loss": loss, "grad_norm": optax.global_norm(grads)}

  return kip.jit_support_step(init, step, mesh, data_axis)
