"""Sliding-window sums over covariance axes, shared by convolutions and pooling.

`padding` is 'VALID', 'SAME' (zeros outside the image) or 'CIRCULAR' (the
image wraps around: SAME's output size and pads, with periodic values), as in
neural-tangents.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

PADDINGS = ("SAME", "VALID", "CIRCULAR")


def check_padding(padding: str) -> str:
  if padding not in PADDINGS:
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
  return padding


def check_window(name: str, value, ndim: int | None = None) -> tuple:
  """`value` as a tuple of positive ints (of length `ndim`), else ValueError."""
  value = tuple(value) if isinstance(value, (tuple, list)) else value
  if (
    not isinstance(value, tuple)
    or not value
    or any(not isinstance(v, int) or v < 1 for v in value)
    or (ndim is not None and len(value) != ndim)
  ):
    length = "" if ndim is None else f" of length {ndim}"
    raise ValueError(f"{name} must be a tuple of positive ints{length}, got {value!r}")
  return value


def spatial_spec(ndim: int) -> str:
  if not 1 <= ndim <= 3:
    raise ValueError(f"1 to 3 spatial dimensions are supported, got {ndim}")
  return "HWD"[:ndim]


def out_and_pads(size: int, window: int, stride: int, padding: str) -> tuple[int, tuple]:
  """Output size and `(lo, hi)` pads of one spatial axis."""
  lax_padding = "SAME" if padding == "CIRCULAR" else padding
  (pads,) = lax.padtype_to_pads((size,), (window,), (stride,), lax_padding)
  out = (size + pads[0] + pads[1] - window) // stride + 1
  if out < 1:
    raise ValueError(f"window {window} does not fit spatial size {size} with padding {padding}")
  return out, tuple(pads)


def pad(x: jax.Array, axes: Sequence[int], pads: Sequence[tuple], padding: str) -> jax.Array:
  """Pads `axes` of `x` by `pads` with zeros, or periodically for CIRCULAR."""
  widths = [(0, 0)] * x.ndim
  for axis, p in zip(axes, pads):
    widths[axis] = tuple(p)
  return jnp.pad(x, widths, mode="wrap" if padding == "CIRCULAR" else "constant")


def shifted_sum(
  mat: jax.Array,
  axes: Sequence[int],
  window: int,
  stride: int,
  pads: tuple,
  out: int,
  padding: str,
) -> jax.Array:
  """`sum_d mat[..., s*o + d - pad, ...]` shifting all `axes` together.

  Out-of-range positions count as zero, or wrap around for CIRCULAR padding.
  """
  mat = pad(mat, axes, [pads] * len(axes), padding)
  total = None
  for d in range(window):
    index = [slice(None)] * mat.ndim
    for a in axes:
      index[a] = slice(d, d + stride * (out - 1) + 1, stride)
    term = mat[tuple(index)]
    total = term if total is None else total + term
  return total


def window_matmul(
  mat: jax.Array,
  batch_ndim: int,
  spatial: tuple,
  window: Sequence[int],
  strides: Sequence[int],
  geometry: Sequence[tuple],
  padding: str,
) -> jax.Array:
  """Window sums over the trailing spatial axes as products with 0/1 bands.

  `out[..., o] = sum_d mat[..., s * o + d - pad]`, one small matmul per
  spatial axis. XLA keeps these products as separate buffers, whereas slices
  and adds get fused into, and recomputed by, every consumer fusion.
  """
  for i, (n, w, s, (out, (lo, _))) in enumerate(zip(spatial, window, strides, geometry)):
    index = s * jnp.arange(out)[:, None] + jnp.arange(w)[None, :] - lo  # [out, w]
    if padding == "CIRCULAR":
      index = index % n
    # Out-of-range indices give all-zero one-hot rows (zero padding).
    band = jnp.sum(jax.nn.one_hot(index, n, dtype=mat.dtype), axis=1)  # [out, n]
    axis = batch_ndim + i
    mat = jnp.moveaxis(jnp.tensordot(mat, band, axes=((axis,), (1,))), -1, axis)
  return mat


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def materialized(fn, x):
  """`fn(x)` for a linear `fn`, computed once into its own buffer.

  XLA fuses cheap producers such as slice-and-add window sums into every
  consumer fusion, and the arc-cosine nonlinearity splits into several
  fusions, each of which would recompute them (measured ~1.4x slower for
  pooling ConvNets). A loop whose trip count XLA cannot know (1, or 2 for a
  NaN input, which changes nothing) keeps `fn(x)` in one buffer. The JVP is
  `fn` itself, so the loop is never differentiated.
  """
  first = x.reshape(-1)[0]
  trips = 1 + (first != first).astype(jnp.int32)
  shape = jax.eval_shape(fn, x)
  return lax.fori_loop(0, trips, lambda i, out: fn(x), jnp.zeros(shape.shape, shape.dtype))


@materialized.defjvp
def _materialized_jvp(fn, primals, tangents):
  return materialized(fn, primals[0]), fn(tangents[0])
