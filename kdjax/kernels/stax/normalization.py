"""`LayerNorm` and `Dropout` with neural-tangents' infinite-width kernels.

References:
  Ba, Kiros, Hinton, 2016, "Layer Normalization".
  Srivastava et al., 2014, "Dropout: A Simple Way to Prevent Neural Networks
    from Overfitting".
  Novak et al., 2020, "Neural Tangents: Fast and Easy Infinite Neural Networks
    in Python" (the kernels of both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from kdjax.kernels.stax import layout
from kdjax.kernels.stax.covariance import outer, single, variances, with_covs
from kdjax.kernels.stax.layer import layer


def LayerNorm(
  axis: int | Sequence[int] = -1,
  eps: float = 1e-12,
  batch_axis: int = 0,
  channel_axis: int = -1,
):
  r"""Normalises each example to zero mean and unit variance over `axis`.

  Over infinitely many channels the mean of a (zero-mean Gaussian)
  pre-activation is 0 and its variance is the kernel's, so with `v_i` the
  variance of point `i` (averaged over the normalised spatial axes):

  .. math::
    K'_{12} = \frac{K_{12}}{\sqrt{(\epsilon + v_1)(\epsilon + v_2)}}, \qquad
    \Theta'_{12} = \frac{\Theta_{12}}{\sqrt{(\epsilon + v_1)(\epsilon + v_2)}}.

  As in neural-tangents the inputs are taken to be zero-mean Gaussian (the
  layer should follow `Dense` or `Conv`).

  Args:
    axis: axes of the inputs to normalise over; they must include the channel
      axis and not the batch axis.
    eps: added to the variance.
    batch_axis: the batch axis of the inputs (see `layout`).
    channel_axis: the channel axis of the inputs.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  if not axes or any(not isinstance(a, int) for a in axes):
    raise ValueError(f"axis must be an int or a tuple of ints, got {axis!r}")
  if not isinstance(eps, (int, float)) or eps < 0:
    raise ValueError(f"eps must be a non-negative number, got {eps!r}")
  layout.check_arg("batch_axis", batch_axis)
  layout.check_arg("channel_axis", channel_axis)

  def canonical(ndim):
    """Normalised spatial axes (0-based among the spatial axes, in order)."""
    b, c = layout.normalized(batch_axis, channel_axis, ndim, "LayerNorm")
    resolved = sorted({a % ndim for a in axes if -ndim <= a < ndim})
    if len(resolved) != len(axes):
      raise ValueError(f"LayerNorm: axis {axis!r} out of range for {ndim}-D inputs")
    if c not in resolved:
      raise ValueError(
        f"LayerNorm: axis must include the channel axis ({c}) for an "
        f"infinite-width kernel, got axis={axis!r}"
      )
    if b in resolved:
      raise ValueError(f"LayerNorm over the batch axis is not supported, got axis={axis!r}")
    spatial = layout.permutation((b, c), ndim)[1:-1]
    return tuple(spatial.index(a) for a in resolved if a != c)

  def apply_fn(params, x, **kwargs):
    norm_axes = tuple(a % x.ndim for a in axes)
    canonical(x.ndim)
    mean = jnp.mean(x, axis=norm_axes, keepdims=True)
    var = jnp.var(x, axis=norm_axes, keepdims=True)
    return (x - mean) / jnp.sqrt(eps + var)

  def transform(k):
    k = single("LayerNorm", k)
    layout.require("LayerNorm", k, batch_axis, channel_axis)
    spatial_axes = canonical(len(k.spatial) + 2)

    def variance(cov):
      v = variances(cov, k)
      mean = jnp.mean(v, axis=tuple(1 + a for a in spatial_axes), keepdims=True)
      return jnp.broadcast_to(mean, v.shape)

    var1 = variance(k.cov1)
    var2 = var1 if k.cov2 is None else variance(k.cov2)
    a, b = outer(eps + var1, eps + var2, k, pairs=True)
    norm = jnp.sqrt(a * b)
    ntk = None if k.ntk is None else k.ntk / norm

    def cov_fn(cov):
      c, d = outer(eps + variance(cov), eps + variance(cov), k, pairs=False)
      return cov / jnp.sqrt(c * d)

    return with_covs(k, k.nngp / norm, ntk, cov_fn)

  requirements = {"batch_axis": batch_axis, "channel_axis": channel_axis}
  return layer(lambda key, shape: (shape, ()), apply_fn, transform, requirements=requirements)


def Dropout(rate: float, mode: str = "train"):
  r"""Dropout with keep probability `rate` (neural-tangents' and jax.example_libraries' meaning).

  `mode='train'`: each unit is kept with probability `rate` and scaled by
  `1 / rate`, so a unit's covariance with itself grows by `1 / rate` and
  everything else is unchanged; in the kernel of `x1` with itself the entries
  of the same example and pixel are scaled. `x1` against an explicit `x2` is
  unchanged (neural-tangents also scales when `x2` equals `x1` numerically; pass
  `x2=None` for that):

  .. math::
    K'(x, x', p, q) = K(x, x', p, q) \, (1 + (1/\text{rate} - 1) [x = x', p = q]),

  and the same for the NTK. `mode='test'` is the identity.
  `apply_fn(params, x, rng=key)` needs a key in train mode.

  Args:
    rate: keep probability, in (0, 1].
    mode: 'train' or 'test'.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if mode not in ("train", "test"):
    raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
  if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
    raise ValueError(f"rate (the keep probability) must be in (0, 1], got {rate!r}")
  factor = 1.0 / rate

  def apply_fn(params, x, rng=None, **kwargs):
    if mode == "test":
      return x
    if rng is None:
      raise ValueError("Dropout in train mode needs apply_fn(params, x, rng=key)")
    keep = jax.random.bernoulli(rng, rate, x.shape)
    return jnp.where(keep, x * factor, 0)

  def same_pixel(k):
    """1 where both pixels of a covariance entry coincide, `[*S]` or `[*S, *S]`."""
    if not k.full:
      return jnp.ones(k.spatial)
    size = math.prod(k.spatial)
    return jnp.eye(size).reshape(k.spatial + k.spatial)

  def transform(k):
    k = single("Dropout", k)
    if mode == "test":
      return k
    if k.is_input:
      raise ValueError("Dropout cannot be applied to the inputs: put a Dense or Conv before it")
    pixels = same_pixel(k)
    nngp, ntk = k.nngp, k.ntk
    if k.cov2 is None:  # x1 against itself: scale the (example, pixel) diagonal.
      n = k.nngp.shape[0]
      eye = jnp.eye(n).reshape((n, n) + (1,) * pixels.ndim)
      scale = 1 + (factor - 1) * eye * pixels
      nngp = nngp * scale
      ntk = None if ntk is None else ntk * scale
    cov_scale = 1 + (factor - 1) * pixels
    return with_covs(k, nngp, ntk, lambda c: c * cov_scale)

  return layer(lambda key, shape: (shape, ()), apply_fn, transform)
