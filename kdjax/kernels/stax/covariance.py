"""The covariance state that the layers of `kdjax.kernels.stax` propagate.

A layer's `transform` maps the `State` of its inputs to that of its outputs.
Covariances between pixels are only kept where a later layer needs them: the
"diagonal" layout holds same-pixel covariances, the "full" layout holds every
pixel pair (see `State`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class State:
  """Covariances of one layer's outputs for two batches of inputs.

  Shapes, with `S` the spatial shape (empty for vectors) and `P = prod(S)`:
    diagonal spatial (`full=False`): `nngp`, `ntk` `[n1, n2, *S]`,
      `cov1` `[n1, *S]`, `cov2` `[n2, *S]` (same-pixel covariances);
    full spatial (`full=True`): `nngp`, `ntk` `[n1, n2, *S, *S]`,
      `cov1` `[n1, *S, *S]`, `cov2` `[n2, *S, *S]` (pixel-by-pixel).

  Attributes:
    nngp: covariance of the outputs of one unit for `x1` against `x2`.
    ntk: the NTK, or None while it is identically zero (no layer with
      parameters yet) and whenever `with_ntk` is False.
    cov1: covariance of `x1` with itself, batch diagonal only.
    cov2: the same for `x2`; None means `x2 is x1`, and then `cov1` is the
      batch diagonal of `nngp`.
    with_ntk: whether the NTK is computed at all.
    spatial: spatial shape `S`.
    full: layout of the spatial axes (see above).
    channels: width of the finite layer (used by the standard
      parameterization).
    axes: `(batch_axis, channel_axis)` of the finite layer's outputs, both in
      `[0, len(spatial) + 2)` (see `layout`); None for inputs that `kernel_fn`
      already flattened for a leading `Flatten` (which then sets them).
    is_input: no layer with weights has been applied yet (`Dropout` rejects
      the raw inputs, as neural-tangents does).
  """

  nngp: jax.Array
  ntk: jax.Array | None
  cov1: jax.Array
  cov2: jax.Array | None
  with_ntk: bool
  spatial: tuple
  full: bool
  channels: int
  axes: tuple[int, int] | None
  is_input: bool = False

  def replace(self, **changes) -> State:
    return dataclasses.replace(self, **changes)


def batch_diagonal(mat: jax.Array) -> jax.Array:
  """`mat[i, i, ...]` for `mat` of shape `[n, n, ...]` -> `[n, ...]`."""
  return jnp.moveaxis(jnp.diagonal(mat, axis1=0, axis2=1), -1, 0)


def spatial_diagonal(mat: jax.Array, spatial: tuple) -> jax.Array:
  """Same-pixel entries of a full covariance `[B..., *S, *S] -> [B..., *S]`."""
  size = math.prod(spatial)
  lead = mat.shape[: mat.ndim - 2 * len(spatial)]
  flat = mat.reshape(lead + (size, size))
  return jnp.diagonal(flat, axis1=-2, axis2=-1).reshape(lead + spatial)


def map_linear(k: State, fn: Callable[[jax.Array, int], jax.Array], **changes) -> State:
  """Applies a linear `fn(mat, batch_ndim)` to every covariance of `k`."""
  ntk = None if k.ntk is None else fn(k.ntk, 2)
  return with_covs(k, fn(k.nngp, 2), ntk, lambda c: fn(c, 1), **changes)


def with_covs(
  k: State,
  nngp: jax.Array,
  ntk: jax.Array | None,
  cov_fn: Callable[[jax.Array], jax.Array],
  **changes,
) -> State:
  """Sets new `nngp`, `ntk`; updates `cov1`, `cov2` with `cov_fn`."""
  if k.cov2 is None:
    cov1, cov2 = batch_diagonal(nngp), None
  else:
    cov1, cov2 = cov_fn(k.cov1), cov_fn(k.cov2)
  return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, **changes)


def to_diagonal(k: State) -> State:
  """Drops covariances between different pixels."""
  if not k.full:
    return k
  diag = functools.partial(spatial_diagonal, spatial=k.spatial)
  return k.replace(
    nngp=diag(k.nngp),
    ntk=None if k.ntk is None else diag(k.ntk),
    cov1=diag(k.cov1),
    cov2=None if k.cov2 is None else diag(k.cov2),
    full=False,
  )


def variances(cov: jax.Array, k: State) -> jax.Array:
  """Per-pixel variances `[n, *S]` of a batch-diagonal covariance."""
  return spatial_diagonal(cov, k.spatial) if k.full else cov


def outer(v1: jax.Array, v2: jax.Array, k: State, pairs: bool) -> tuple[jax.Array, jax.Array]:
  """`v1[i, p]` and `v2[j, q]` broadcastable to the layout of a covariance.

  Args:
    v1: `[n1, *S]` per-pixel variances.
    v2: `[n2, *S]` per-pixel variances (`n2 == n1` when `pairs` is False).
    k: the state whose layout (`full`, `spatial`) is used.
    pairs: True for `[n1, n2, ...]` (nngp), False for `[n, ...]` (cov).
  """
  if pairs:
    v1, v2 = v1[:, None], v2[None, :]
  if k.full:
    s = len(k.spatial)
    v1 = v1.reshape(v1.shape + (1,) * s)
    v2 = v2.reshape(v2.shape[: v2.ndim - s] + (1,) * s + v2.shape[v2.ndim - s :])
  return v1, v2


def single(name: str, k) -> State:
  """`k` itself; a ValueError for a list of branches."""
  if isinstance(k, list):
    raise ValueError(
      f"{name} takes one input, got {len(k)} branches; merge them with FanInSum first"
    )
  return k


def products(a: jax.Array, b: jax.Array | None, full: bool) -> tuple:
  """Per-unit inner products of `[n, *S, C]` arrays, and self products.

  Returns `(a . b / C, a . a / C, b . b / C)` with the layout of `State`:
  `[n1, n2, *S(, *S)]`, `[n1, *S(, *S)]`, `[n2, *S(, *S)]` (pixel pairs when
  `full`); the self products are None when `b is None` (`b` means `a`).
  """
  spatial = tuple(a.shape[1:-1])
  channels = a.shape[-1]
  size = math.prod(spatial)
  other = a if b is None else b
  if not spatial:
    pair = (a @ other.T) / channels
  elif full:
    # One [n1 P, C] x [C, n2 P] matmul, then [n1, n2, P, P].
    pair = (
      (a.reshape(-1, channels) @ other.reshape(-1, channels).T)
      .reshape(a.shape[0], size, other.shape[0], size)
      .transpose(0, 2, 1, 3)
    )
    pair = pair.reshape(pair.shape[:2] + spatial + spatial) / channels
  else:
    pair = jnp.einsum(
      "ipc,jpc->ijp",
      a.reshape(a.shape[0], size, channels),
      other.reshape(other.shape[0], size, channels),
    )
    pair = pair.reshape(pair.shape[:2] + spatial) / channels

  def self_products(x):
    flat = x.reshape(x.shape[0], size, channels)
    if full and spatial:
      out = jnp.einsum("ipc,iqc->ipq", flat, flat)
      return out.reshape(out.shape[:1] + spatial + spatial) / channels
    return jnp.einsum("ipc,ipc->ip", flat, flat).reshape((x.shape[0],) + spatial) / channels

  if b is None:
    return pair, None, None
  return pair, self_products(a), self_products(b)


def input_state(
  x1: jax.Array, x2: jax.Array | None, full: bool, with_ntk: bool, axes: tuple[int, int] | None
) -> State:
  """Covariances of the inputs themselves: `x1 . x2 / C` per pixel pair.

  `x1`, `x2` are `[n, *S, C]`; `axes` says where their batch and channel axes
  were in the caller's layout.
  """
  if not jnp.issubdtype(x1.dtype, jnp.floating):
    x1 = x1.astype(jnp.float32)
  if x2 is not None:
    x2 = x2.astype(x1.dtype)
  spatial = tuple(x1.shape[1:-1])
  full = bool(full and spatial)
  nngp, cov1, cov2 = products(x1, x2, full)
  if x2 is None:
    cov1 = batch_diagonal(nngp)
  return State(
    nngp=nngp,
    ntk=None,
    cov1=cov1,
    cov2=cov2,
    with_ntk=with_ntk,
    spatial=spatial,
    full=full,
    channels=x1.shape[-1],
    axes=axes,
    is_input=True,
  )
