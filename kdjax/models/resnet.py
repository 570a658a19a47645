"""CIFAR-style ResNets (resnet8x4, resnet32x4 of the KD benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
  """Two 3x3 convs with batch norm and a residual connection (1x1 conv when the shape changes)."""

  channels: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    h = nn.Conv(self.channels, (3, 3), strides=self.stride, padding=1, use_bias=False)(x)
    h = nn.relu(norm()(h))
    h = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False)(h)
    h = norm()(h)
    if self.stride != 1 or x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1), strides=self.stride, use_bias=False)(x)
      x = norm()(x)
    return nn.relu(h + x)


class CifarResNet(nn.Module):
  r"""ResNet for 32x32 images: a 3x3 stem, three stages of basic blocks, global pooling.

  ``depth = 6 n + 2`` with ``n`` blocks per stage; stage strides 1, 2, 2.

  .. math::
    \mathrm{logits} = W\,\mathrm{GAP}(\mathrm{stage}_3 \circ \mathrm{stage}_2 \circ
    \mathrm{stage}_1 \circ \mathrm{stem}(x)) + b

  He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition" (CIFAR
  variant); the x4 widths (32, 64, 128, 256) are those of Tian, Krishnan & Isola (2020),
  "Contrastive representation distillation" (resnet8x4 / resnet32x4).

  Attributes:
    num_classes: number of output logits.
    depth: 6 n + 2 (8, 14, 20, 32, 56, 110).
    widths: channels of the stem and of the three stages.
  """

  num_classes: int = 10
  depth: int = 8
  widths: Sequence[int] = (32, 64, 128, 256)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Maps images ``[batch, height, width, channels]`` to logits ``[batch, num_classes]``."""
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ValueError(f"depth must be 6n+2 with n >= 1, got {self.depth}")
    if len(self.widths) != 4:
      raise ValueError(f"widths must hold 4 values (stem + 3 stages), got {self.widths}")
    if x.ndim == 3:
      x = x[..., None]
    blocks = (self.depth - 2) // 6
    h = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False)(x.astype(jnp.float32))
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h))
    for stage, (channels, stride) in enumerate(zip(self.widths[1:], (1, 2, 2))):
      for block in range(blocks):
        h = BasicBlock(
          channels, stride if block == 0 else 1, name=f"stage{stage + 1}_block{block + 1}"
        )(h, train=train)
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.num_classes)(h)


def resnet8x4(num_classes: int = 100) -> CifarResNet:
  """resnet8x4 (1 block per stage, widths 32/64/128/256) of Tian et al. (2020)."""
  return CifarResNet(num_classes=num_classes, depth=8, widths=(32, 64, 128, 256))


def resnet32x4(num_classes: int = 100) -> CifarResNet:
  """resnet32x4 (5 blocks per stage, widths 32/64/128/256) of Tian et al. (2020)."""
  return CifarResNet(num_classes=num_classes, depth=32, widths=(32, 64, 128, 256))
