"""A multilayer perceptron classifier."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  r"""Fully connected ReLU network on flattened inputs.

  .. math::
    h_0 = \mathrm{flatten}(x), \quad h_{l+1} = \mathrm{relu}(W_l h_l + b_l), \quad
    \mathrm{logits} = W_L h_L + b_L

  The classic KD student/teacher of Hinton, Vinyals & Dean (2015), "Distilling the
  knowledge in a neural network" (MNIST experiments with fully connected nets).

  Attributes:
    num_classes: number of output logits.
    hidden: widths of the hidden layers.
    dropout_rate: dropout on hidden activations during training (needs a 'dropout' rng).
  """

  num_classes: int = 10
  hidden: Sequence[int] = (256,)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Maps inputs ``[batch, ...]`` to logits ``[batch, num_classes]``."""
    h = x.reshape(x.shape[0], -1).astype(jnp.float32)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
      if self.dropout_rate > 0:
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(self.num_classes)(h)
