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

from kdjax.kernels.stax.kernel import map_linear, single, to_diagonal
from kdjax.kernels.stax.kernel_fn import layer
from kdjax.kernels.stax.windows import check_padding, check_window, out_and_pads, pad, shifted_sum


def _Pool(name: str, window_shape, strides, padding: str, average: bool, normalize_edges: bool):
  """Shared by `AvgPool` and `SumPool`."""
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

  return layer(init_fn, apply_fn, transform, lambda full: True)


def AvgPool(
  window_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str = "VALID",
  normalize_edges: bool = False,
):
  r"""Average pooling over NHWC images.

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

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  return _Pool("AvgPool", window_shape, strides, padding, True, normalize_edges)


def SumPool(
  window_shape: Sequence[int], strides: Sequence[int] | None = None, padding: str = "VALID"
):
  r"""Sum pooling over NHWC images: `K'(p, q) = sum_{a in w(p), b in w(q)} K(a, b)`.

  Args:
    window_shape: spatial window, e.g. `(2, 2)`.
    strides: spatial strides; None for ones.
    padding: 'SAME', 'VALID' or 'CIRCULAR' (periodic).

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  return _Pool("SumPool", window_shape, strides, padding, False, False)


def _GlobalPool(name: str, average: bool):
  def transform(k):
    k = single(name, k)
    if not k.spatial:
      raise ValueError(f"{name} needs spatial inputs [batch, *spatial, channels]")
    s = len(k.spatial)
    reduce = jnp.mean if average else jnp.sum

    def pool(mat, batch_ndim):
      return reduce(mat, axis=tuple(range(batch_ndim, batch_ndim + 2 * s)))

    return map_linear(k, pool, spatial=(), full=False)

  def init_fn(key, input_shape):
    return (input_shape[0], input_shape[-1]), ()

  def apply_fn(params, x, **kwargs):
    axes = tuple(range(1, x.ndim - 1))
    return jnp.mean(x, axis=axes) if average else jnp.sum(x, axis=axes)

  return layer(init_fn, apply_fn, transform, lambda full: True)


def GlobalAvgPool():
  r"""Mean over all pixels of NHWC images: `[n, *S, C] -> [n, C]`.

  .. math::
    K' = \frac{1}{P^2} \sum_{p, q} K(p, q).
  """
  return _GlobalPool("GlobalAvgPool", True)


def GlobalSumPool():
  r"""Sum over all pixels of NHWC images: `K' = sum_{p, q} K(p, q)`."""
  return _GlobalPool("GlobalSumPool", False)


def Flatten():
  r"""Flattens all non-batch axes: `[n, *S, C] -> [n, P * C]`.

  Every unit of the flat layer is one (pixel, channel), so the per-unit kernel
  is the mean of the same-pixel covariances:

  .. math::
    K' = \frac{1}{P} \sum_p K(p, p).
  """

  def transform(k):
    k = single("Flatten", k)
    if not k.spatial:
      return k
    k = to_diagonal(k)
    s = len(k.spatial)

    def mean(mat, batch_ndim):
      return jnp.mean(mat, axis=tuple(range(batch_ndim, batch_ndim + s)))

    return map_linear(k, mean, spatial=(), channels=k.channels * math.prod(k.spatial))

  def init_fn(key, input_shape):
    return (input_shape[0], math.prod(input_shape[1:])), ()

  return layer(
    init_fn,
    lambda params, x, **kw: x.reshape(x.shape[0], -1),
    transform,
    lambda full: False,
    flattens_input=True,
  )
