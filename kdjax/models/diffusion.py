r"""Time-conditioned networks for flow/diffusion teachers and their few-step students.

Both are called ``model.apply(variables, x, t)`` or ``model.apply(variables, x, t, s)``
with ``x [B, ...]`` and one or two times ``t, s [B]`` (two for a flow map
:math:`X_{s,t}`), and return an array of ``x``'s shape (a velocity, a denoised sample or a
displacement, as the caller parametrises it). Times enter through the sinusoidal
embedding of Vaswani et al. (2017) / Ho et al. (2020) of ``time_scale * t``.

* :class:`TimeMLP`: for 2-D (or any flat) data: SiLU MLP on ``[x, emb(t)(, emb(s))]``
  with the embedding also added to every hidden layer.
* :class:`UNet`: a small U-Net (Ronneberger et al. (2015); the DDPM variant of Ho et al.
  (2020) with GroupNorm residual blocks and an additive time embedding) for NHWC images;
  each level halves the resolution, so 8x8 ``digits`` go 8 -> 4 -> 2 and 28x28 mnist5k
  28 -> 14 -> 7 with the default three levels. The output convolution starts at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["timestep_embedding", "TimeMLP", "UNet"]


def timestep_embedding(t, dim: int, *, max_period: float = 10000.0):
  r"""Sinusoidal embedding ``[B, dim]`` of ``t [B]``: :math:`[\cos(t\omega_i), \sin(t\omega_i)]`,
  :math:`\omega_i = P^{-i/(dim/2)}`."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class _TimeEmbed(nn.Module):
  dim: int
  time_scale: float

  @nn.compact
  def __call__(self, times):
    emb = jnp.concatenate([timestep_embedding(self.time_scale * t, self.dim) for t in times], -1)
    emb = nn.silu(nn.Dense(self.dim * 2)(emb))
    return nn.Dense(self.dim * 2)(emb)


class TimeMLP(nn.Module):
  """SiLU MLP on flattened ``x`` conditioned on one or two times.

  Attributes:
    hidden: width of each hidden layer.
    depth: number of hidden layers.
    time_dim: size of each time's sinusoidal embedding.
    time_scale: the embedding reads ``time_scale * t`` (1000 for t in [0, 1]).
  """

  hidden: int = 256
  depth: int = 3
  time_dim: int = 64
  time_scale: float = 1000.0

  @nn.compact
  def __call__(self, x, t, s=None, *, train: bool = False):
    shape = x.shape
    times = (t,) if s is None else (t, s)
    emb = _TimeEmbed(self.time_dim, self.time_scale)(times)
    h = jnp.concatenate([x.reshape(shape[0], -1).astype(jnp.float32), emb], axis=-1)
    h = nn.Dense(self.hidden)(h)
    for _ in range(self.depth):
      h = nn.silu(h + nn.Dense(self.hidden)(nn.silu(emb)))
      h = nn.Dense(self.hidden)(h)
    out = nn.Dense(math.prod(shape[1:]), kernel_init=nn.initializers.zeros)(nn.silu(h))
    return out.reshape(shape).astype(x.dtype)


class _ResBlock(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x, emb):
    groups = math.gcd(8, x.shape[-1])
    h = nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(num_groups=groups)(x)))
    h = h + nn.Dense(self.channels)(nn.silu(emb))[:, None, None, :]
    h = nn.GroupNorm(num_groups=math.gcd(8, self.channels))(h)
    h = nn.Conv(self.channels, (3, 3))(nn.silu(h))
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1))(x)
    return x + h


class UNet(nn.Module):
  """A small time-conditioned U-Net on NHWC images (``[B, H, W]`` gets a channel axis).

  Attributes:
    channels: channels per level; each level after the first halves H and W (H and W must
      be divisible by ``2 ** (len(channels) - 1)``).
    time_dim: size of each time's sinusoidal embedding.
    time_scale: the embedding reads ``time_scale * t``.
  """

  channels: Sequence[int] = (32, 64, 64)
  time_dim: int = 64
  time_scale: float = 1000.0

  @nn.compact
  def __call__(self, x, t, s=None, *, train: bool = False):
    squeeze = x.ndim == 3
    h = (x[..., None] if squeeze else x).astype(jnp.float32)
    factor = 2 ** (len(self.channels) - 1)
    if h.shape[1] % factor or h.shape[2] % factor:
      raise ValueError(
        f"UNet with {len(self.channels)} levels needs H and W divisible by {factor}, "
        f"got {h.shape[1:3]}"
      )
    out_channels = h.shape[-1]
    times = (t,) if s is None else (t, s)
    emb = _TimeEmbed(self.time_dim, self.time_scale)(times)
    h = nn.Conv(self.channels[0], (3, 3))(h)
    skips = []
    for i, ch in enumerate(self.channels):
      if i:
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
      h = _ResBlock(ch)(h, emb)
      skips.append(h)
    h = _ResBlock(self.channels[-1])(h, emb)
    for i in reversed(range(len(self.channels))):
      h = _ResBlock(self.channels[i])(jnp.concatenate([h, skips[i]], -1), emb)
      if i:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
    h = nn.silu(nn.GroupNorm(num_groups=math.gcd(8, h.shape[-1]))(h))
    h = nn.Conv(out_channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
    h = h[..., 0] if squeeze else h
    return h.astype(x.dtype)
