"""The ConvNet of the dataset-distillation literature."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class ConvNet(nn.Module):
  r"""``depth`` blocks of conv3x3 -> instance norm -> ReLU -> 2x2 average pool, then a linear head.

  .. math::
    h_{l+1} = \mathrm{avgpool}_{2\times2}\big(\mathrm{relu}(\mathrm{IN}(W_l * h_l + b_l))\big),
    \quad \mathrm{logits} = W\,\mathrm{flatten}(h_{\mathrm{depth}}) + b

  Zhao, Mopuri & Bilen (2021), "Dataset condensation with gradient matching" (ConvNet-3,
  width 128, instance norm), also used by Cazenavette et al. (2022), "Dataset
  distillation by matching training trajectories".

  Attributes:
    num_classes: number of output logits.
    width: channels of every conv layer.
    depth: number of conv blocks.
    normalization: 'instance' (default) or 'none'.
  """

  num_classes: int = 10
  width: int = 128
  depth: int = 3
  normalization: str = "instance"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Maps NHWC images ``[batch, height, width, channels]`` to ``[batch, num_classes]`` logits."""
    if x.ndim == 3:
      x = x[..., None]
    if self.normalization not in ("instance", "none"):
      raise ValueError(f"normalization must be 'instance' or 'none', got {self.normalization!r}")
    h = x.astype(jnp.float32)
    for _ in range(self.depth):
      h = nn.Conv(self.width, (3, 3), padding="SAME")(h)
      if self.normalization == "instance":
        h = nn.InstanceNorm(epsilon=1e-5)(h)
      h = nn.relu(h)
      h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    return nn.Dense(self.num_classes)(h.reshape(h.shape[0], -1))
