"""`kernel_fn(x1, x2=None, get=...)`: the jitted callable every layer returns.

Also the output types (created once, here) and the argument checks that the
layer constructors share.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.kernels.stax import layout
from kdjax.kernels.stax.covariance import input_state

GET_ALL = ("nngp", "ntk")

Kernel = collections.namedtuple("Kernel", GET_ALL)
Kernel.__doc__ = """What `kernel_fn(x1, x2)` returns: the NNGP and NTK, each `[n1, n2]`."""

# One output type per tuple of requested kernels, created once.
_OUTPUT_TYPES = {
  ("nngp", "ntk"): Kernel,
  ("ntk", "nngp"): collections.namedtuple("Kernel", ("ntk", "nngp")),
  ("nngp",): collections.namedtuple("Kernel", ("nngp",)),
  ("ntk",): collections.namedtuple("Kernel", ("ntk",)),
}


def get_names(get: str | Sequence[str] | None) -> tuple[str, ...]:
  """The requested kernels as a tuple of names; ValueError for anything else."""
  names = GET_ALL if get is None else ((get,) if isinstance(get, str) else tuple(get))
  if names not in _OUTPUT_TYPES:
    raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
  return names


def pack(
  get: str | Sequence[str] | None, names: tuple[str, ...], arrays: Sequence[jax.Array]
) -> jax.Array | tuple[jax.Array, ...]:
  """A single array when `get` is a string, else the namedtuple of `names`."""
  if isinstance(get, str):
    return arrays[0]
  return _OUTPUT_TYPES[names](*arrays)


class KernelFn:
  """`kernel_fn(x1, x2=None, get=('nngp', 'ntk'))` of a layer or network.

  Attributes:
    transform: maps the covariance state of the layer's inputs to that of its
      outputs (a list of states for multi-branch layers).
    input_needs_full: maps "the outputs need pixel-pair covariances" to "the
      inputs need them".
    flattens_input: the first layer is `Flatten`, so the inputs are flattened
      before their covariance is taken (the same kernel, without ever forming
      the `[n1, n2, *S]` per-pixel covariances).
    requirements: `{'batch_axis': int, 'channel_axis': int | None}`, the axes
      that the first layer naming them expects of the inputs (a missing key
      takes the default batch 0, channels -1; see `layout`).
  """

  def __init__(
    self,
    transform: Callable[[Any], Any],
    input_needs_full: Callable[[bool], bool] = lambda full: full,
    flattens_input: bool = False,
    requirements: dict | None = None,
  ):
    self.transform = transform
    self.input_needs_full = input_needs_full
    self.flattens_input = flattens_input
    self.requirements = dict(requirements or {})

  def input_axes(self, ndim: int) -> tuple[int, int]:
    """Normalised `(batch_axis, channel_axis)` of `ndim`-D inputs to this network."""
    batch_axis = self.requirements.get("batch_axis", 0)
    channel_axis = self.requirements.get("channel_axis", -1)
    if channel_axis is None:  # a leading Flatten: only the batch axis matters
      channel_axis = -1 if batch_axis % ndim != ndim - 1 else 0
    return layout.normalized(batch_axis, channel_axis, ndim, "kernel_fn")

  def __call__(
    self,
    x1: ArrayLike,
    x2: ArrayLike | None = None,
    get: str | Sequence[str] | None = None,
  ) -> jax.Array | tuple[jax.Array, ...]:
    """Infinite-width kernels between two batches of inputs.

    Args:
      x1: `[n1, d]` vectors or `[n1, *S, C]` images (NHWC), `n1 >= 1`; the
        batch and channel axes elsewhere if the network's first layer naming
        `batch_axis` / `channel_axis` says so.
      x2: like `x1` with the same shape apart from the batch axis, or None for
        `x1` itself.
      get: `'nngp'`, `'ntk'` or a tuple of them (default both).

    Returns:
      `[n1, n2]` jax.Array when `get` is a string, else a namedtuple with one
      `[n1, n2]` field per requested kernel (`Kernel(nngp, ntk)` by default).
      A network whose outputs are still spatial gives `[n1, n2, *S, *S]`.

    Raises:
      ValueError: for a bad `get`, an empty batch or mismatched shapes.
    """
    names = get_names(get)
    x1 = jnp.asarray(x1)
    if x1.ndim < 2:
      raise ValueError(
        f"x1 must be [batch, features] or [batch, *spatial, channels], got shape {x1.shape}"
      )
    axes = self.input_axes(x1.ndim)
    b = axes[0]
    if x2 is not None and (
      jnp.ndim(x2) != x1.ndim or _drop(jnp.shape(x2), b) != _drop(x1.shape, b)
    ):
      raise ValueError(
        f"x2 must have the shape of x1 {x1.shape} apart from the batch axis {b}, got "
        f"{jnp.shape(x2)}"
      )
    for name, x in (("x1", x1), ("x2", x2)):
      if x is not None and jnp.shape(x)[b] == 0:
        raise ValueError(f"{name} has no examples (shape {jnp.shape(x)}); kernels need n >= 1")
    nngp, ntk = self._compiled(x1, x2, "ntk" in names, axes)
    values = {"nngp": nngp, "ntk": ntk}
    return pack(get, names, [values[n] for n in names])

  @functools.cached_property
  def _compiled(self):
    """The whole computation under one `jax.jit` (inlined in outer jits)."""

    def compute(x1, x2, with_ntk, axes):
      x1 = layout.to_canonical(x1, axes)
      x2 = None if x2 is None else layout.to_canonical(x2, axes)
      if self.flattens_input:
        x1 = x1.reshape(x1.shape[0], -1)
        x2 = None if x2 is None else x2.reshape(x2.shape[0], -1)
        axes = None  # flattened along the network's batch axis; the leading Flatten sets them
      full = self.input_needs_full(True)
      state = input_state(x1, x2, full=full, with_ntk=with_ntk, axes=axes)
      out = self.transform(state)
      if isinstance(out, list):
        raise ValueError(
          "kernel_fn: the network ends with several branches; merge them with FanInSum"
        )
      ntk = None
      if with_ntk:
        ntk = jnp.zeros_like(out.nngp) if out.ntk is None else out.ntk
      return out.nngp, ntk

    return jax.jit(compute, static_argnums=(2, 3))


def layer(
  init_fn: Callable,
  apply_fn: Callable,
  transform: Callable,
  input_needs_full: Callable[[bool], bool] = lambda full: full,
  flattens_input: bool = False,
  requirements: dict | None = None,
) -> tuple[Callable, Callable, KernelFn]:
  """The `(init_fn, apply_fn, kernel_fn)` triple of a layer."""
  return init_fn, apply_fn, KernelFn(transform, input_needs_full, flattens_input, requirements)


def _drop(shape: Sequence[int], axis: int) -> tuple[int, ...]:
  return tuple(shape[:axis]) + tuple(shape[axis + 1 :])


def fused_requirements(kernel_fns: Sequence[KernelFn]) -> dict:
  """Per axis name, the value of the first of `kernel_fns` that names it (neural-tangents')."""
  out = {}
  for kf in kernel_fns:
    for key, value in kf.requirements.items():
      out.setdefault(key, value)
  return out


def check_std(name: str, value: float | None, allow_none: bool) -> None:
  """ValueError unless `value` is a non-negative number (or an allowed None)."""
  if value is None and allow_none:
    return
  if not isinstance(value, (int, float)) or value < 0:
    raise ValueError(
      f"{name} must be a non-negative number{' or None' if allow_none else ''}, got {value!r}"
    )


def check_parameterization(parameterization: str) -> str:
  if parameterization not in ("ntk", "standard"):
    raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
  return parameterization
