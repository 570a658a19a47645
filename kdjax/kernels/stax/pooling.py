"""Parameter-free spatial layers: `AvgPool`, `SumPool`, `GlobalAvgPool`, `GlobalSumPool`, `Flatten`.

Pooling mixes pixels, so these layers need the pixel-by-pixel covariance of
their inputs (`full` layout); a network that only flattens keeps same-pixel
covariances throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax

from kdjax.kernels.stax import layout
from kdjax.kernels.stax.covariance import map_linear, single, to_diagonal
from kdjax.kernels.stax.layer import layer
from kdjax.kernels.stax.windows import check_padding, check_window, out_and_pads, pad, shifted_sum


def _axes_args(batch_axis, channel_axis) -> dict:
  """The layer's `requirements` (see `layout`), after checking both are ints."""
  layout.check_arg("batch_axis", batch_axis)
  layout.check_arg("channel_axis", channel_axis)
  return {"batch_axis": batch_axis, "channel_axis": channel_axis}


def _Pool(
  name: str,
  window_shape,
  strides,
  padding: str,
  average: bool,
  normalize_edges: bool,
  batch_axis: int,
  channel_axis: int,
):
  """Shared by `AvgPool` and `SumPool` (windows over the spatial axes, in order)."""
  requirements = _axes_args(batch_axis, channel_axis)
  window_shape = check_window("window_shape", window_shape)
  ndim = len(window_shape)
  strides = check_window("strides", strides or (1,) * ndim, ndim)
  padding = check_padding(padding)
  if not isinstance(normalize_edges, bool):
    raise ValueError(f"normalize_edges must be a bool, got {normalize_edges!r}")
  window_size = math.prod(window_shape)
  by_count = average and normalize_edges and padding == "SAME"

  def geometry(spatial):
    if len(spatial) != ndim:
      raise ValueError(
        f"{name} with window {window_shape} needs {ndim} spatial dimensions, got {spatial}"
      )
    return [out_and_pads(n, w, s, padding) for n, w, s in zip(spatial, window_shape, strides)]

  def window_sums(x, axes, geo):
    """Window sums of `x` along `axes` (axis `i` pooled by window `i`)."""
    for axis, w, s, (out, pads) in zip(axes, window_shape, strides, geo):
      x = shifted_sum(x, (axis,), w, s, pads, out, padding)
    return x

  def counts(spatial, geo):
    """`[*out]` number of in-image pixels in each window (SAME padding)."""
    return window_sums(jnp.ones(spatial), range(ndim), geo)

  def init_fn(key, input_shape):
    out = tuple(g[0] for g in geometry(tuple(input_shape[1:-1])))
    return (input_shape[0],) + out + (input_shape[-1],), ()

  def apply_fn(params, x, **kwargs):
    geo = geometry(x.shape[1:-1])
    if padding == "CIRCULAR":
      x = pad(x, range(1, ndim + 1), [g[1] for g in geo], padding)
    summed = lax.reduce_window(
      x,
      x.dtype.type(0),  # concrete, so reduce_window is the differentiable window sum
      lax.add,
      (1,) + window_shape + (1,),
      (1,) + strides + (1,),
      "VALID" if padding == "CIRCULAR" else padding,
    )
    if by_count:
      return summed / counts(x.shape[1:-1], geo).astype(x.dtype)[..., None]
    return summed / window_size if average else summed

  def transform(k):
    k = single(name, k)
    layout.require(name, k, batch_axis, channel_axis)
    if not k.full:
      raise ValueError(f"{name} needs pixel-pair covariances")
    geo = geometry(k.spatial)
    if by_count:
      c = counts(k.spatial, geo)
      norm = c.reshape(c.shape + (1,) * ndim) * c.reshape((1,) * ndim + c.shape)
    else:
      norm = window_size**2 if average else 1

    def pool(mat, batch_ndim):
      for i, (w, s, (out, pads)) in enumerate(zip(window_shape, strides, geo)):
        for axis in (batch_ndim + i, batch_ndim + ndim + i):
          mat = shifted_sum(mat, (axis,), w, s, pads, out, padding)
      return mat / norm

    return map_linear(k, pool, spatial=tuple(g[0] for g in geo))

  init_fn, apply_fn = layout.in_layout(name, init_fn, apply_fn, batch_axis, channel_axis)
  return layer(init_fn, apply_fn, transform, lambda full: True, requirements=requirements)


def AvgPool(
  window_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str = "VALID",
  normalize_edges: bool = False,
  batch_axis: int = 0,
  channel_axis: int = -1,
):
  r"""Average pooling over images (NHWC by default).

  Each output averages its window; the kernel averages over both windows:

  .. math::
    K'(p, q) = \frac{1}{|w(p)| |w(q)|} \sum_{a \in w(p)} \sum_{b \in w(q)} K(a, b).

  `|w|` is the window size, or with `normalize_edges=True` and SAME padding
  the number of in-image pixels of the window (as `jax.example_libraries.stax`).

  Args:
    window_shape: spatial window, e.g. `(2, 2)`.
    strides: spatial strides; None for ones (as in neural-tangents).
    padding: 'SAME', 'VALID' or 'CIRCULAR' (periodic).
    normalize_edges: divide by the in-image window size at SAME edges.
    batch_axis: the batch axis of the inputs (see `layout`).
    channel_axis: the channel axis of the inputs; the window runs over the
      other axes in order.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  return _Pool(
    "AvgPool", window_shape, strides, padding, True, normalize_edges, batch_axis, channel_axis
  )


def SumPool(
  window_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str = "VALID",
  batch_axis: int = 0,
  channel_axis: int = -1,
):
  r"""Sum pooling over images: `K'(p, q) = sum_{a in w(p), b in w(q)} K(a, b)`.

  Args:
    window_shape: spatial window, e.g. `(2, 2)`.
    strides: spatial strides; None for ones.
    padding: 'SAME', 'VALID' or 'CIRCULAR' (periodic).
    batch_axis: the batch axis of the inputs (see `layout`).
    channel_axis: the channel axis of the inputs.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  return _Pool("SumPool", window_shape, strides, padding, False, False, batch_axis, channel_axis)


def _GlobalPool(name: str, average: bool, batch_axis: int, channel_axis: int):
  requirements = _axes_args(batch_axis, channel_axis)

  def out_axes(axes, ndim):
    """neural-tangents keeps the order of the batch and channel axes: `[n, C]` or `[C, n]`."""
    return (0, 1) if axes[0] < axes[1] else (1, 0)

  def transform(k):
    k = single(name, k)
    layout.require(name, k, batch_axis, channel_axis)
    if not k.spatial:
      raise ValueError(f"{name} needs spatial inputs [batch, *spatial, channels]")
    s = len(k.spatial)
    reduce = jnp.mean if average else jnp.sum

    def pool(mat, batch_ndim):
      return reduce(mat, axis=tuple(range(batch_ndim, batch_ndim + 2 * s)))

    return map_linear(k, pool, spatial=(), full=False, axes=out_axes(k.axes, 2))

  def init_fn(key, input_shape):
    return (input_shape[0], input_shape[-1]), ()

  def apply_fn(params, x, **kwargs):
    axes = tuple(range(1, x.ndim - 1))
    return jnp.mean(x, axis=axes) if average else jnp.sum(x, axis=axes)

  init_fn, apply_fn = layout.in_layout(name, init_fn, apply_fn, batch_axis, channel_axis, out_axes)
  return layer(init_fn, apply_fn, transform, lambda full: True, requirements=requirements)


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1):
  r"""Mean over all spatial axes: `[n, *S, C] -> [n, C]` (NHWC by default).

  .. math::
    K' = \frac{1}{P^2} \sum_{p, q} K(p, q).

  Args:
    batch_axis: the batch axis of the inputs (see `layout`).
    channel_axis: the channel axis of the inputs; the output is `[n, C]` if the
      batch axis comes first, else `[C, n]` (as neural-tangents).
  """
  return _GlobalPool("GlobalAvgPool", True, batch_axis, channel_axis)


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1):
  r"""Sum over all spatial axes: `K' = sum_{p, q} K(p, q)` (arguments as `GlobalAvgPool`)."""
  return _GlobalPool("GlobalSumPool", False, batch_axis, channel_axis)


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0):
  r"""Flattens all non-batch axes: `[n, *S, C] -> [n, P * C]`.

  Every unit of the flat layer is one (pixel, channel), so the per-unit kernel
  is the mean of the same-pixel covariances:

  .. math::
    K' = \frac{1}{P} \sum_p K(p, p).

  Args:
    batch_axis: the batch axis of the inputs (the channel axis may be anywhere).
    batch_axis_out: 0 for `[n, P * C]` outputs, 1 (or -1) for `[P * C, n]`.
  """
  layout.check_arg("batch_axis", batch_axis)
  if layout.check_arg("batch_axis_out", batch_axis_out) not in (0, 1, -1, -2):
    raise ValueError(f"batch_axis_out must be 0 or 1, got {batch_axis_out}")
  out_axes = (0, 1) if batch_axis_out in (0, -2) else (1, 0)

  def out_shape(shape):
    if not -len(shape) <= batch_axis < len(shape):
      raise ValueError(f"Flatten: batch_axis={batch_axis} is out of range for shape {shape}")
    n = shape[batch_axis]
    rest = math.prod(shape) // n
    return (n, rest) if out_axes == (0, 1) else (rest, n)

  def transform(k):
    k = single("Flatten", k)
    if k.axes is None:  # kernel_fn flattened the inputs along this layer's batch_axis
      return k.replace(axes=out_axes)
    layout.require("Flatten", k, batch_axis, None)
    if not k.spatial:
      return k.replace(axes=out_axes)
    k = to_diagonal(k)
    s = len(k.spatial)

    def mean(mat, batch_ndim):
      return jnp.mean(mat, axis=tuple(range(batch_ndim, batch_ndim + s)))

    return map_linear(
      k, mean, spatial=(), channels=k.channels * math.prod(k.spatial), axes=out_axes
    )

  def apply_fn(params, x, **kwargs):
    shape = out_shape(x.shape)
    return jnp.moveaxis(x, batch_axis, -out_axes[0]).reshape(shape)

  return layer(
    lambda key, input_shape: (out_shape(tuple(input_shape)), ()),
    apply_fn,
    transform,
    lambda full: False,
    flattens_input=True,
    requirements={"batch_axis": batch_axis, "channel_axis": None},
  )
