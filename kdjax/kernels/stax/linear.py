"""Layers with weights: `Dense` and `Conv`, and the parameter-free `Identity`.

Both are affine maps with i.i.d. Gaussian weights. With `K`, `Theta` the input
NNGP and NTK, `M` the mean over the weight-sharing window (the identity for
`Dense`) and `n` the fan-in (`in_channels * filter_size / s[0]`):

.. math::
  K' = W_{std}^2 M[K] + b_{std}^2, \\quad
  \\Theta' = K' + W_{std}^2 M[\\Theta] \\;\\text{(ntk)}, \\quad
  \\Theta' = n M[K] + [b_{std} \\ne \\text{None}] + W_{std}^2 M[\\Theta]
  \\;\\text{(standard)}.

References:
  Jacot, Gabriel, Hongler, 2018, "Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks" (ntk parameterization).
  Sohl-Dickstein et al., 2020, "On the infinite width limit of neural networks
    with a standard parameterization" (standard parameterization, `s`).
  Novak et al., 2019, "Bayesian Deep Convolutional Networks with Many Channels
    are Gaussian Processes" (convolutions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from kdjax.kernels.stax.kernel import State, single, with_covs
from kdjax.kernels.stax.kernel_fn import check_parameterization, check_std, layer
from kdjax.kernels.stax.windows import (
  check_padding,
  check_window,
  materialized,
  out_and_pads,
  pad,
  shifted_sum,
  spatial_spec,
  window_matmul,
)


def Identity():
  """The identity layer (for residual branches)."""
  return layer(lambda key, shape: (shape, ()), lambda params, x, **kw: x, lambda k: k)


def _check_s(s, parameterization: str) -> tuple[int, int]:
  s = tuple(s) if isinstance(s, (tuple, list)) else s
  if not isinstance(s, tuple) or len(s) != 2 or any(not isinstance(v, int) or v < 1 for v in s):
    raise ValueError(f"s must be a pair of positive ints, got {s!r}")
  if parameterization == "ntk" and s != (1, 1):
    raise ValueError(f"s only applies to parameterization='standard', got s={s} with 'ntk'")
  return s


def _affine(
  k: State,
  mean: Callable[[jax.Array, int], jax.Array],
  W_std: float,
  b_std: float | None,
  parameterization: str,
  fan_in: float,
  **changes,
) -> State:
  """Kernels after `W_std * mean(.) + b_std` (see the module docstring)."""
  bias = 0.0 if b_std is None else b_std**2
  nngp_mean = mean(k.nngp, 2)
  nngp = W_std**2 * nngp_mean + bias
  ntk = None
  if k.with_ntk:
    ntk_mean = 0.0 if k.ntk is None else mean(k.ntk, 2)
    if parameterization == "ntk":
      ntk = nngp + W_std**2 * ntk_mean
    else:
      ntk = fan_in * nngp_mean + W_std**2 * ntk_mean + (0.0 if b_std is None else 1.0)
  cov_fn = lambda c: W_std**2 * mean(c, 1) + bias
  return with_covs(k, nngp, ntk, cov_fn, is_input=False, **changes)


def Dense(
  out_dim: int,
  W_std: float = 1.0,
  b_std: float | None = None,
  parameterization: str = "ntk",
  s: tuple[int, int] = (1, 1),
):
  r"""Fully connected layer acting on the last (channel) axis.

  NTK parameterization: `f = W_std / sqrt(fan_in) * x W + b_std * b` with
  standard normal `W`, `b`; standard: `f = x W / sqrt(s[0]) + b` with
  `W ~ N(0, W_std^2 s[0] / fan_in)`, `b ~ N(0, b_std^2)` and
  `s[1] * out_dim` units. Kernels: see the module docstring (`M` = identity).

  Args:
    out_dim: width of the finite layer (the kernel does not depend on it).
    W_std: weight standard deviation.
    b_std: bias standard deviation; None for no bias.
    parameterization: 'ntk' or 'standard'.
    s: standard parameterization only: widths scalings `(in, out)`; the weight
      is `[s[0] * in_dim, s[1] * out_dim]`.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if not isinstance(out_dim, int) or out_dim < 1:
    raise ValueError(f"out_dim must be a positive int, got {out_dim!r}")
  check_std("W_std", W_std, False)
  check_std("b_std", b_std, True)
  parameterization = check_parameterization(parameterization)
  s = _check_s(s, parameterization)
  width = out_dim * s[1]

  def init_fn(key, input_shape):
    kw, kb = jax.random.split(key)
    fan_in = input_shape[-1]
    W = jax.random.normal(kw, (fan_in, width))
    b = None if b_std is None else jax.random.normal(kb, (width,))
    if parameterization == "standard":
      W = W * W_std / math.sqrt(fan_in / s[0])
      b = None if b is None else b * b_std
    return tuple(input_shape[:-1]) + (width,), (W, b)

  def apply_fn(params, x, **kwargs):
    W, b = params
    if parameterization == "ntk":
      out = W_std / math.sqrt(x.shape[-1]) * (x @ W)
      return out if b is None else out + b_std * b
    out = (x @ W) / math.sqrt(s[0])
    return out if b is None else out + b

  def transform(k):
    k = single("Dense", k)
    return _affine(
      k, lambda m, _: m, W_std, b_std, parameterization, k.channels / s[0], channels=width
    )

  return layer(init_fn, apply_fn, transform)


def Conv(
  out_chan: int,
  filter_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str = "VALID",
  W_std: float = 1.0,
  b_std: float | None = None,
  parameterization: str = "ntk",
  s: tuple[int, int] = (1, 1),
):
  r"""Convolution over NHWC images (also 1-D and 3-D: N...C).

  The infinite-channel kernel averages the input covariance along the filter,
  shifting both pixels together (weights are shared and independent across
  filter taps); `|F|` is the filter size and padding counts as zero (or wraps
  around, for CIRCULAR):

  .. math::
    M[K](p, q) = \frac{1}{|F|} \sum_{d \in F} K(sp + d, sq + d),

  then the affine rule of the module docstring with fan-in `C |F| / s[0]`.

  Args:
    out_chan: channels of the finite layer (the kernel does not depend on it).
    filter_shape: spatial filter shape, e.g. `(3, 3)`.
    strides: spatial strides; None for ones.
    padding: 'SAME', 'VALID' or 'CIRCULAR' (periodic).
    W_std: weight standard deviation.
    b_std: bias standard deviation; None for no bias.
    parameterization: 'ntk' or 'standard'.
    s: standard parameterization only: channel scalings `(in, out)`.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if not isinstance(out_chan, int) or out_chan < 1:
    raise ValueError(f"out_chan must be a positive int, got {out_chan!r}")
  filter_shape = check_window("filter_shape", filter_shape)
  ndim = len(filter_shape)
  strides = check_window("strides", strides or (1,) * ndim, ndim)
  padding = check_padding(padding)
  check_std("W_std", W_std, False)
  check_std("b_std", b_std, True)
  parameterization = check_parameterization(parameterization)
  s = _check_s(s, parameterization)
  spec = spatial_spec(ndim)
  dimension_numbers = ("N" + spec + "C", spec + "IO", "N" + spec + "C")
  filter_size = math.prod(filter_shape)
  width = out_chan * s[1]

  def geometry(spatial):
    if len(spatial) != ndim:
      raise ValueError(
        f"Conv with filter_shape {filter_shape} needs inputs with {ndim} spatial "
        f"dimensions [batch, *spatial, channels], got spatial shape {spatial}"
      )
    return [out_and_pads(n, f, st, padding) for n, f, st in zip(spatial, filter_shape, strides)]

  def init_fn(key, input_shape):
    out_spatial = tuple(g[0] for g in geometry(tuple(input_shape[1:-1])))
    kw, kb = jax.random.split(key)
    fan_in = input_shape[-1] * filter_size
    W = jax.random.normal(kw, filter_shape + (input_shape[-1], width))
    b = None if b_std is None else jax.random.normal(kb, (width,))
    if parameterization == "standard":
      W = W * W_std / math.sqrt(fan_in / s[0])
      b = None if b is None else b * b_std
    return (input_shape[0],) + out_spatial + (width,), (W, b)

  def apply_fn(params, x, **kwargs):
    W, b = params
    geo = geometry(x.shape[1:-1])
    if padding == "CIRCULAR":
      x = pad(x, range(1, ndim + 1), [g[1] for g in geo], padding)
    out = lax.conv_general_dilated(
      x,
      W.astype(x.dtype),
      strides,
      "VALID" if padding == "CIRCULAR" else padding,
      dimension_numbers=dimension_numbers,
    )
    if parameterization == "ntk":
      out = out * (W_std / math.sqrt(x.shape[-1] * filter_size))
      return out if b is None else out + b_std * b
    out = out / math.sqrt(s[0])
    return out if b is None else out + b

  def transform(k):
    k = single("Conv", k)
    geo = geometry(k.spatial)

    def mean_over_filter(mat, batch_ndim):
      if not k.full:
        summed = window_matmul(mat, batch_ndim, k.spatial, filter_shape, strides, geo, padding)
        return summed / filter_size
      for i, (f, st, (out, pads)) in enumerate(zip(filter_shape, strides, geo)):
        axes = (batch_ndim + i, batch_ndim + ndim + i)
        mat = shifted_sum(mat, axes, f, st, pads, out, padding)
      return mat / filter_size

    def mean(mat, batch_ndim):
      if k.full and batch_ndim == 2:
        return materialized(lambda m: mean_over_filter(m, 2), mat)
      return mean_over_filter(mat, batch_ndim)

    fan_in = k.channels * filter_size / s[0]
    out_spatial = tuple(g[0] for g in geo)
    return _affine(
      k, mean, W_std, b_std, parameterization, fan_in, spatial=out_spatial, channels=width
    )

  return layer(init_fn, apply_fn, transform)


_NCH = ("NCH", "HIO", "NCH")
_NCHW = ("NCHW", "HWIO", "NCHW")


def _transpose_out(size: int, window: int, stride: int, padding: str) -> int:
  """Output size of a 1-D `lax.conv_transpose` along one axis."""
  shape = jax.eval_shape(
    lambda x, w: lax.conv_transpose(x, w, (stride,), padding, dimension_numbers=_NCH),
    jax.ShapeDtypeStruct((1, 1, size), jnp.float32),
    jax.ShapeDtypeStruct((window, 1, 1), jnp.float32),
  ).shape
  return shape[-1]


def _transpose_sum(mat: jax.Array, axes: tuple, window: int, stride: int, padding: str):
  """`lax.conv_transpose` of `mat` along one axis (or two axes shifted together) with ones."""
  ndim = len(axes)
  x = jnp.moveaxis(mat, axes, tuple(range(-ndim, 0)))
  lead = x.shape[:-ndim]
  x = x.reshape((-1, 1) + x.shape[-ndim:])
  ones = jnp.ones((window, 1, 1), mat.dtype) if ndim == 1 else jnp.eye(window, dtype=mat.dtype)
  rhs = ones if ndim == 1 else ones[:, :, None, None]
  x = lax.conv_transpose(
    x, rhs, (stride,) * ndim, padding, dimension_numbers=_NCH if ndim == 1 else _NCHW
  )
  x = x.reshape(lead + x.shape[2:])
  return jnp.moveaxis(x, tuple(range(-ndim, 0)), axes)


def ConvTranspose(
  out_chan: int,
  filter_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str = "VALID",
  W_std: float = 1.0,
  b_std: float | None = None,
  parameterization: str = "ntk",
  s: tuple[int, int] = (1, 1),
):
  r"""Transposed convolution over NHWC images (`lax.conv_transpose` semantics).

  Output pixel `p` sums the filter taps `d` over input pixels `i` with
  `s i + d = p` (after padding); the kernel sums the input covariance over
  taps shared by both pixels:

  .. math::
    M[K](p, q) = \frac{1}{|F|} \sum_{d \in F} K\Big(\frac{p - d}{s},
      \frac{q - d}{s}\Big),

  over integer in-range positions, then the affine rule of the module
  docstring with fan-in `C |F| / s[0]`.

  Args:
    out_chan: channels of the finite layer (the kernel does not depend on it).
    filter_shape: spatial filter shape, e.g. `(3, 3)`.
    strides: spatial strides (upsampling factors); None for ones.
    padding: 'SAME' or 'VALID' (CIRCULAR is not supported here).
    W_std: weight standard deviation.
    b_std: bias standard deviation; None for no bias.
    parameterization: 'ntk' or 'standard'.
    s: standard parameterization only: channel scalings `(in, out)`.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if not isinstance(out_chan, int) or out_chan < 1:
    raise ValueError(f"out_chan must be a positive int, got {out_chan!r}")
  filter_shape = check_window("filter_shape", filter_shape)
  ndim = len(filter_shape)
  strides = check_window("strides", strides or (1,) * ndim, ndim)
  if check_padding(padding) == "CIRCULAR":
    raise ValueError("ConvTranspose supports padding 'SAME' or 'VALID', got 'CIRCULAR'")
  check_std("W_std", W_std, False)
  check_std("b_std", b_std, True)
  parameterization = check_parameterization(parameterization)
  s = _check_s(s, parameterization)
  spec = spatial_spec(ndim)
  dimension_numbers = ("N" + spec + "C", spec + "IO", "N" + spec + "C")
  filter_size = math.prod(filter_shape)
  width = out_chan * s[1]

  def out_spatial(spatial):
    if len(spatial) != ndim:
      raise ValueError(
        f"ConvTranspose with filter_shape {filter_shape} needs inputs with {ndim} spatial "
        f"dimensions [batch, *spatial, channels], got spatial shape {spatial}"
      )
    return tuple(
      _transpose_out(n, f, st, padding) for n, f, st in zip(spatial, filter_shape, strides)
    )

  def init_fn(key, input_shape):
    out = out_spatial(tuple(input_shape[1:-1]))
    kw, kb = jax.random.split(key)
    W = jax.random.normal(kw, filter_shape + (input_shape[-1], width))
    b = None if b_std is None else jax.random.normal(kb, (width,))
    if parameterization == "standard":
      W = W * W_std / math.sqrt(input_shape[-1] * filter_size / s[0])
      b = None if b is None else b * b_std
    return (input_shape[0],) + out + (width,), (W, b)

  def apply_fn(params, x, **kwargs):
    W, b = params
    out_spatial(x.shape[1:-1])
    out = lax.conv_transpose(
      x, W.astype(x.dtype), strides, padding, dimension_numbers=dimension_numbers
    )
    if parameterization == "ntk":
      out = out * (W_std / math.sqrt(x.shape[-1] * filter_size))
      return out if b is None else out + b_std * b
    out = out / math.sqrt(s[0])
    return out if b is None else out + b

  def transform(k):
    k = single("ConvTranspose", k)
    new_spatial = out_spatial(k.spatial)

    def mean(mat, batch_ndim):
      for i, (f, st) in enumerate(zip(filter_shape, strides)):
        axes = (batch_ndim + i, batch_ndim + ndim + i) if k.full else (batch_ndim + i,)
        mat = _transpose_sum(mat, axes, f, st, padding)
      return mat / filter_size

    fan_in = k.channels * filter_size / s[0]
    return _affine(
      k, mean, W_std, b_std, parameterization, fan_in, spatial=new_spatial, channels=width
    )

  return layer(init_fn, apply_fn, transform)
