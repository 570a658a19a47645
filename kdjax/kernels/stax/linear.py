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
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from kdjax.kernels.stax import layout
from kdjax.kernels.stax.covariance import State, single, with_covs
from kdjax.kernels.stax.layer import check_parameterization, check_std, layer
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


class _Weights(NamedTuple):
  """The checked arguments of a layer `W_std * x W / sqrt(fan_in) + b_std * b` (or standard)."""

  W_std: float
  b_std: float | None
  parameterization: str
  s: tuple[int, int]
  width: int

  @classmethod
  def checked(cls, width_name, width, W_std, b_std, parameterization, s) -> _Weights:
    if not isinstance(width, int) or width < 1:
      raise ValueError(f"{width_name} must be a positive int, got {width!r}")
    check_std("W_std", W_std, False)
    check_std("b_std", b_std, True)
    parameterization = check_parameterization(parameterization)
    s = _check_s(s, parameterization)
    return cls(W_std, b_std, parameterization, s, width * s[1])

  def init(self, key, shape: tuple, fan_in: int) -> tuple:
    """`(W, b)`: `W` of `shape + (width,)`, standard normal (ntk) or scaled (standard)."""
    kw, kb = jax.random.split(key)
    W = jax.random.normal(kw, tuple(shape) + (self.width,))
    b = None if self.b_std is None else jax.random.normal(kb, (self.width,))
    if self.parameterization == "standard":
      W = W * self.W_std / math.sqrt(fan_in / self.s[0])
      b = None if b is None else b * self.b_std
    return W, b

  def output(self, product: jax.Array, b: jax.Array | None, fan_in: int) -> jax.Array:
    """The layer's output from the raw product `x W` (last axis: units)."""
    if self.parameterization == "ntk":
      out = product * (self.W_std / math.sqrt(fan_in))
      return out if b is None else out + self.b_std * b
    out = product / math.sqrt(self.s[0])
    return out if b is None else out + b

  def kernels(
    self, k: State, mean: Callable[[jax.Array, int], jax.Array], fan_in: float, **changes
  ):
    """Kernels after this layer (the module docstring's rule) from the window `mean`.

    Args:
      k: the input state.
      mean: `mean(mat, batch_ndim)`, `M` of the module docstring (identity for `Dense`).
      fan_in: `in_channels * filter_size / s[0]` (the standard parameterization's NTK).
      **changes: other `State` fields of the output (e.g. `spatial`).
    """
    bias = 0.0 if self.b_std is None else self.b_std**2
    nngp_mean = mean(k.nngp, 2)
    nngp = self.W_std**2 * nngp_mean + bias
    ntk = None
    if k.with_ntk:
      ntk_mean = 0.0 if k.ntk is None else mean(k.ntk, 2)
      if self.parameterization == "ntk":
        ntk = nngp + self.W_std**2 * ntk_mean
      else:
        ntk = fan_in * nngp_mean + self.W_std**2 * ntk_mean + float(self.b_std is not None)
    cov_fn = lambda c: self.W_std**2 * mean(c, 1) + bias
    return with_covs(k, nngp, ntk, cov_fn, is_input=False, channels=self.width, **changes)


class _ConvArgs(NamedTuple):
  """The checked arguments shared by `Conv` and `ConvTranspose`.

  Computation is in NHWC (`dimension_numbers`); `lhs_spec` / `rhs_spec` are the user's
  layouts of the inputs (and outputs) and of `W` (neural-tangents' `dimension_numbers`).
  """

  filter_shape: tuple
  strides: tuple
  padding: str
  weights: _Weights
  dimension_numbers: tuple
  filter_size: int
  lhs_spec: str
  rhs_spec: str

  @classmethod
  def checked(
    cls, out_chan, filter_shape, strides, padding, dimension_numbers, *weights
  ) -> _ConvArgs:
    filter_shape = check_window("filter_shape", filter_shape)
    ndim = len(filter_shape)
    strides = check_window("strides", strides or (1,) * ndim, ndim)
    weights = _Weights.checked("out_chan", out_chan, *weights)
    spec = spatial_spec(ndim)
    nhwc = ("N" + spec + "C", spec + "IO", "N" + spec + "C")
    lhs, rhs = _check_dimension_numbers(dimension_numbers or nhwc, ndim)
    return cls(
      filter_shape,
      strides,
      check_padding(padding),
      weights,
      nhwc,
      math.prod(filter_shape),
      lhs,
      rhs,
    )

  @property
  def requirements(self) -> dict:
    """The input axes `lhs_spec` names (channels counted from the end: -1 for NHWC)."""
    channel_axis = self.lhs_spec.index("C") - len(self.lhs_spec)
    return {"batch_axis": self.lhs_spec.index("N"), "channel_axis": channel_axis}

  def check_spatial(self, name: str, spatial: tuple) -> None:
    if len(spatial) != len(self.filter_shape):
      raise ValueError(
        f"{name} with filter_shape {self.filter_shape} needs inputs with "
        f"{len(self.filter_shape)} spatial dimensions [batch, *spatial, channels], got "
        f"spatial shape {spatial}"
      )

  def init(self, key, input_shape: tuple, out_spatial: tuple) -> tuple:
    """`(output_shape, (W, b))` for NHWC `input_shape` (`W` in HWIO)."""
    fan_in = input_shape[-1] * self.filter_size
    params = self.weights.init(key, self.filter_shape + (input_shape[-1],), fan_in)
    return (input_shape[0],) + tuple(out_spatial) + (self.weights.width,), params

  def in_layout(self, name: str, init_fn: Callable, apply_fn: Callable) -> tuple:
    """NHWC/HWIO `init_fn`, `apply_fn` on inputs laid out as `lhs_spec`, `W` as `rhs_spec`."""
    hwio = self.dimension_numbers[1]
    to_rhs = tuple(hwio.index(c) for c in self.rhs_spec)
    from_rhs = tuple(self.rhs_spec.index(c) for c in hwio)
    init_fn, apply_fn = layout.in_layout(
      name, init_fn, apply_fn, self.requirements["batch_axis"], self.requirements["channel_axis"]
    )

    def init(key, input_shape):
      out_shape, (W, b) = init_fn(key, input_shape)
      return out_shape, (jnp.transpose(W, to_rhs), b)

    def apply(params, x, **kwargs):
      W, b = params
      return apply_fn((jnp.transpose(W, from_rhs), b), x, **kwargs)

    return init, apply

  def kernels(self, name: str, k, mean, out_spatial: tuple) -> State:
    """The affine rule after the window `mean`."""
    axes = self.requirements
    fix = f"set dimension_numbers (now lhs {self.lhs_spec!r}) to match"
    layout.require(name, k, axes["batch_axis"], axes["channel_axis"], fix)
    fan_in = k.channels * self.filter_size / self.weights.s[0]
    return self.weights.kernels(k, mean, fan_in, spatial=tuple(out_spatial))


def _check_dimension_numbers(dimension_numbers, ndim: int) -> tuple[str, str]:
  """`(lhs_spec, rhs_spec)` of neural-tangents' `(lhs, rhs, out)` string specs.

  Supported: the output laid out like the input, and the input's spatial axes in the
  filter's order (e.g. `('NCHW', 'OIHW', 'NCHW')`); others are a ValueError.
  """
  specs = dimension_numbers
  if (
    not isinstance(specs, (tuple, list))
    or len(specs) != 3
    or not all(isinstance(spec, str) for spec in specs)
  ):
    raise ValueError(
      f"dimension_numbers must be three strings (lhs, rhs, out), e.g. ('NCHW', 'OIHW', "
      f"'NCHW'), got {dimension_numbers!r}"
    )
  lhs, rhs, out = specs
  spatial = [c for c in lhs if c not in "NC"]
  if (
    len(lhs) != ndim + 2
    or len(set(lhs)) != len(lhs)
    or "N" not in lhs
    or "C" not in lhs
    or sorted(rhs) != sorted("IO" + "".join(spatial))
  ):
    raise ValueError(
      f"dimension_numbers {dimension_numbers!r} do not describe {ndim}-D convolutions: lhs "
      f"needs N, C and {ndim} spatial letters, rhs I, O and the same spatial letters"
    )
  if out != lhs or [c for c in rhs if c not in "IO"] != spatial:
    raise ValueError(
      f"dimension_numbers {dimension_numbers!r} are not supported: the output must be laid "
      "out like the input, and the filter's spatial axes in the input's order"
    )
  return lhs, rhs


def Dense(
  out_dim: int,
  W_std: float = 1.0,
  b_std: float | None = None,
  batch_axis: int = 0,
  channel_axis: int = -1,
  parameterization: str = "ntk",
  s: tuple[int, int] = (1, 1),
):
  r"""Fully connected layer acting on the channel axis (by default the last).

  NTK parameterization: `f = W_std / sqrt(fan_in) * x W + b_std * b` with
  standard normal `W`, `b`; standard: `f = x W / sqrt(s[0]) + b` with
  `W ~ N(0, W_std^2 s[0] / fan_in)`, `b ~ N(0, b_std^2)` and
  `s[1] * out_dim` units. Kernels: see the module docstring (`M` = identity).

  Args:
    out_dim: width of the finite layer (the kernel does not depend on it).
    W_std: weight standard deviation.
    b_std: bias standard deviation; None for no bias.
    batch_axis: the batch axis of the inputs (see `layout`).
    channel_axis: the axis that `W` contracts, e.g. 1 for NCHW images.
    parameterization: 'ntk' or 'standard'.
    s: standard parameterization only: widths scalings `(in, out)`; the weight
      is `[s[0] * in_dim, s[1] * out_dim]`.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  weights = _Weights.checked("out_dim", out_dim, W_std, b_std, parameterization, s)
  layout.check_arg("batch_axis", batch_axis)
  layout.check_arg("channel_axis", channel_axis)

  def init_fn(key, input_shape):
    params = weights.init(key, (input_shape[-1],), input_shape[-1])
    return tuple(input_shape[:-1]) + (weights.width,), params

  def apply_fn(params, x, **kwargs):
    W, b = params
    return weights.output(x @ W, b, x.shape[-1])

  def transform(k):
    k = single("Dense", k)
    layout.require("Dense", k, batch_axis, channel_axis)
    return weights.kernels(k, lambda m, _: m, k.channels / weights.s[0])

  init_fn, apply_fn = layout.in_layout("Dense", init_fn, apply_fn, batch_axis, channel_axis)
  requirements = {"batch_axis": batch_axis, "channel_axis": channel_axis}
  return layer(init_fn, apply_fn, transform, requirements=requirements)


def Conv(
  out_chan: int,
  filter_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str = "VALID",
  W_std: float = 1.0,
  b_std: float | None = None,
  dimension_numbers: tuple[str, str, str] | None = None,
  parameterization: str = "ntk",
  s: tuple[int, int] = (1, 1),
):
  r"""Convolution over NHWC images (also 1-D and 3-D: N...C), or as `dimension_numbers` say.

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
    dimension_numbers: `(lhs, rhs, out)` layouts as in `lax.conv_general_dilated`, e.g.
      `('NCHW', 'OIHW', 'NCHW')`; None for NHWC / HWIO. The output must be laid out like
      the input and the filter's spatial axes must be in the input's order.
    parameterization: 'ntk' or 'standard'.
    s: standard parameterization only: channel scalings `(in, out)`.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  args = _ConvArgs.checked(
    out_chan, filter_shape, strides, padding, dimension_numbers, W_std, b_std, parameterization, s
  )
  filter_shape, strides, padding = args.filter_shape, args.strides, args.padding
  ndim = len(filter_shape)

  def geometry(spatial):
    args.check_spatial("Conv", spatial)
    return [out_and_pads(n, f, st, padding) for n, f, st in zip(spatial, filter_shape, strides)]

  def init_fn(key, input_shape):
    return args.init(key, input_shape, [g[0] for g in geometry(tuple(input_shape[1:-1]))])

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
      dimension_numbers=args.dimension_numbers,
    )
    return args.weights.output(out, b, x.shape[-1] * args.filter_size)

  def transform(k):
    k = single("Conv", k)
    geo = geometry(k.spatial)

    def mean_over_filter(mat, batch_ndim):
      if not k.full:
        summed = window_matmul(mat, batch_ndim, k.spatial, filter_shape, strides, geo, padding)
        return summed / args.filter_size
      for i, (f, st, (out, pads)) in enumerate(zip(filter_shape, strides, geo)):
        axes = (batch_ndim + i, batch_ndim + ndim + i)
        mat = shifted_sum(mat, axes, f, st, pads, out, padding)
      return mat / args.filter_size

    def mean(mat, batch_ndim):
      if k.full and batch_ndim == 2:
        return materialized(lambda m: mean_over_filter(m, 2), mat)
      return mean_over_filter(mat, batch_ndim)

    return args.kernels("Conv", k, mean, [g[0] for g in geo])

  init_fn, apply_fn = args.in_layout("Conv", init_fn, apply_fn)
  return layer(init_fn, apply_fn, transform, requirements=args.requirements)


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
  dimension_numbers: tuple[str, str, str] | None = None,
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
    dimension_numbers: `(lhs, rhs, out)` layouts as in `lax.conv_general_dilated`, e.g.
      `('NCHW', 'OIHW', 'NCHW')`; None for NHWC / HWIO. The output must be laid out like
      the input and the filter's spatial axes must be in the input's order.
    parameterization: 'ntk' or 'standard'.
    s: standard parameterization only: channel scalings `(in, out)`.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  args = _ConvArgs.checked(
    out_chan, filter_shape, strides, padding, dimension_numbers, W_std, b_std, parameterization, s
  )
  if args.padding == "CIRCULAR":
    raise ValueError("ConvTranspose supports padding 'SAME' or 'VALID', got 'CIRCULAR'")
  filter_shape, strides, padding = args.filter_shape, args.strides, args.padding
  ndim = len(filter_shape)

  def out_spatial(spatial):
    args.check_spatial("ConvTranspose", spatial)
    return tuple(
      _transpose_out(n, f, st, padding) for n, f, st in zip(spatial, filter_shape, strides)
    )

  def init_fn(key, input_shape):
    return args.init(key, input_shape, out_spatial(tuple(input_shape[1:-1])))

  def apply_fn(params, x, **kwargs):
    W, b = params
    out_spatial(x.shape[1:-1])
    out = lax.conv_transpose(
      x, W.astype(x.dtype), strides, padding, dimension_numbers=args.dimension_numbers
    )
    return args.weights.output(out, b, x.shape[-1] * args.filter_size)

  def transform(k):
    k = single("ConvTranspose", k)
    new_spatial = out_spatial(k.spatial)

    def mean(mat, batch_ndim):
      for i, (f, st) in enumerate(zip(filter_shape, strides)):
        axes = (batch_ndim + i, batch_ndim + ndim + i) if k.full else (batch_ndim + i,)
        mat = _transpose_sum(mat, axes, f, st, padding)
      return mat / args.filter_size

    return args.kernels("ConvTranspose", k, mean, new_spatial)

  init_fn, apply_fn = args.in_layout("ConvTranspose", init_fn, apply_fn)
  return layer(init_fn, apply_fn, transform, requirements=args.requirements)
