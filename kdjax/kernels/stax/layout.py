"""Where the batch and channel axes are: neural-tangents' `batch_axis` and `channel_axis`.

A layer that takes `batch_axis` / `channel_axis` (`Dense`, the poolings,
`Flatten`, `LayerNorm`, `GlobalSelfAttention`; `Conv` and `ConvTranspose` through
`dimension_numbers`) acts on finite tensors with those axes anywhere, e.g. NCHW
images with `channel_axis=1`. The kernels do not depend on the layout:
covariances are always kept as `[n1, n2, *S(, *S)]`, with the spatial axes `S`
in their order in the finite tensor, and `State.axes` records where the batch
and channel axes of that tensor are.

As in neural-tangents, the first layer of a network that names an axis fixes
where `kernel_fn` finds it in `x1` and `x2` (default: batch 0, channels -1),
and every later layer that names it must agree with the kernel it receives
(else a ValueError naming the argument). `kdjax.kernels.gram`'s tiled and
sharded kernels split the inputs along axis 0, so they need `batch_axis=0`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def check_arg(name: str, value) -> int:
  """`value` if it is an int (not a bool); else a ValueError naming `name`."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(f"{name} must be an int, got {value!r}")
  return value


def normalized(batch_axis: int, channel_axis: int, ndim: int, where: str) -> tuple[int, int]:
  """`(batch_axis % ndim, channel_axis % ndim)`; ValueError if out of range or equal."""
  for name, axis in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
    if not -ndim <= axis < ndim:
      raise ValueError(f"{where}: {name}={axis} is out of range for {ndim}-D inputs")
  b, c = batch_axis % ndim, channel_axis % ndim
  if b == c:
    raise ValueError(
      f"{where}: batch_axis={batch_axis} and channel_axis={channel_axis} are the same axis "
      f"of {ndim}-D inputs"
    )
  return b, c


def permutation(axes: tuple[int, int], ndim: int) -> tuple[int, ...]:
  """Finite-tensor axes in canonical order: batch, the spatial axes in order, channels."""
  b, c = axes
  return (b,) + tuple(i for i in range(ndim) if i not in axes) + (c,)


def to_canonical(x: jax.Array, axes: tuple[int, int]) -> jax.Array:
  """`x` with its batch axis first and its channel axis last."""
  return jnp.transpose(x, permutation(axes, x.ndim))


def from_canonical(x: jax.Array, axes: tuple[int, int]) -> jax.Array:
  """Inverse of `to_canonical`: `[batch, *S, channels]` back to the layout `axes`."""
  perm = permutation(axes, x.ndim)
  return jnp.transpose(x, tuple(perm.index(i) for i in range(x.ndim)))


def shape_to_canonical(shape: Sequence[int], axes: tuple[int, int]) -> tuple[int, ...]:
  return tuple(shape[i] for i in permutation(axes, len(shape)))


def shape_from_canonical(shape: Sequence[int], axes: tuple[int, int]) -> tuple[int, ...]:
  perm = permutation(axes, len(shape))
  return tuple(shape[perm.index(i)] for i in range(len(shape)))


def in_layout(
  name: str,
  init_fn: Callable,
  apply_fn: Callable,
  batch_axis: int,
  channel_axis: int,
  out_axes: Callable[[tuple[int, int], int], tuple[int, int]] = lambda axes, ndim: axes,
) -> tuple[Callable, Callable]:
  """`init_fn` / `apply_fn` written for `[batch, *S, channels]`, run in the layout given.

  Args:
    name: the layer's name, for error messages.
    init_fn: `init_fn(key, canonical_shape) -> (canonical_out_shape, params)`.
    apply_fn: `apply_fn(params, canonical_x, **kwargs) -> canonical_out`.
    batch_axis: the layer's `batch_axis`.
    channel_axis: the layer's `channel_axis`.
    out_axes: the output's (normalised) axes from the input's and the output's rank.

  Returns:
    `(init_fn, apply_fn)` on tensors with the batch and channel axes where given.
  """

  def init(key, input_shape):
    axes = normalized(batch_axis, channel_axis, len(input_shape), name)
    out_shape, params = init_fn(key, shape_to_canonical(input_shape, axes))
    return shape_from_canonical(out_shape, out_axes(axes, len(out_shape))), params

  def apply(params, x, **kwargs):
    axes = normalized(batch_axis, channel_axis, x.ndim, name)
    out = apply_fn(params, to_canonical(x, axes), **kwargs)
    return from_canonical(out, out_axes(axes, out.ndim))

  return init, apply


def require(
  name: str, k, batch_axis: int, channel_axis: int | None, fix: str | None = None
) -> None:
  """ValueError unless the kernel's inputs `k` have their axes where the layer says.

  `channel_axis=None` checks the batch axis only (`Flatten`); `fix` replaces the
  suggestion "pass {arg}=..." of the message (for layers configured otherwise).
  """
  ndim = len(k.spatial) + 2
  wanted = [("batch_axis", batch_axis, k.axes[0])]
  if channel_axis is not None:
    wanted.append(("channel_axis", channel_axis, k.axes[1]))
  for arg, value, got in wanted:
    if not -ndim <= value < ndim:
      raise ValueError(f"{name}: {arg}={value} is out of range for {ndim}-D inputs")
    if value % ndim != got:
      raise ValueError(
        f"{name}: {arg}={value} is axis {value % ndim} of its {ndim}-D inputs, but the "
        f"network puts that axis at {got} (set by an earlier layer, or by default batch 0 "
        f"and channels -1); {fix or f'pass {arg}={got}'} or change the earlier layer"
      )
