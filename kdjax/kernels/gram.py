"""Large Gram matrices: tiled (bounded memory) and sharded over a device mesh.

Both wrap a `kernel_fn(x1, x2=None, get=...)` (e.g. from `kdjax.kernels.stax`)
and return a function with the same signature and the same result as the
one-shot call. Tiles of `batch_size x batch_size` inputs are computed one
after another with `lax.map`, so only one tile's intermediates (the
`[b, b, H, W, H, W]` covariances of a pooling ConvNet, say) live at a time.
For `x2=None` only the tiles on and above the diagonal are computed and the
rest is mirrored. The sharded version splits the rows of `x1` over the devices
of a `jax.sharding.Mesh` (`jax.shard_map`) and tiles within each device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P
from jax.typing import ArrayLike

from kdjax.kernels.stax.layer import KernelFn, get_names, pack
from kdjax.mesh import make_mesh

__all__ = ["tiled_kernel_fn", "sharded_kernel_fn"]


def _check_inputs(
  kernel_fn: Callable, x1: ArrayLike, x2: ArrayLike | None
) -> tuple[jax.Array, jax.Array | None]:
  """`x1`, `x2` as arrays; ValueError for an empty batch, mismatched shapes, or a
  `stax` network whose batch axis is not 0 (tiles split the inputs along axis 0)."""
  x1 = jnp.asarray(x1)
  x2 = None if x2 is None else jnp.asarray(x2)
  if isinstance(kernel_fn, KernelFn) and x1.ndim >= 2 and kernel_fn.input_axes(x1.ndim)[0]:
    raise ValueError(
      f"tiled and sharded kernels split x1, x2 along axis 0, but this network reads the "
      f"batch at axis {kernel_fn.input_axes(x1.ndim)[0]} (batch_axis); move it to 0"
    )
  for name, x in (("x1", x1), ("x2", x2)):
    if x is not None and (x.ndim < 2 or x.shape[0] == 0):
      raise ValueError(f"{name} must be a non-empty batch [n >= 1, ...], got shape {x.shape}")
  if x2 is not None and x2.shape[1:] != x1.shape[1:]:
    raise ValueError(f"x2 must have the trailing shape of x1 {x1.shape[1:]}, got {x2.shape[1:]}")
  return x1, x2


def _check_batch_size(batch_size: int) -> int:
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  return batch_size


def _pad_rows(x: jax.Array, multiple: int) -> jax.Array:
  """Pads the batch to a multiple by repeating the last example."""
  extra = -x.shape[0] % multiple
  if not extra:
    return x
  return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)


def _tile_grid(kernel_fn, x1, x2, names, batch_size):
  """`[n1p, n2p]` kernels of padded `x1`, `x2` (both multiples of b)."""
  b = batch_size
  t1, t2 = x1.shape[0] // b, x2.shape[0] // b
  tiles1 = x1.reshape((t1, b) + x1.shape[1:])
  tiles2 = x2.reshape((t2, b) + x2.shape[1:])

  def row(tile1):
    return lax.map(lambda tile2: tuple(kernel_fn(tile1, tile2, names)), tiles2)

  out = lax.map(row, tiles1)  # each [t1, t2, b, b]
  return [o.transpose(0, 2, 1, 3).reshape(t1 * b, t2 * b) for o in out]


def _tile_symmetric(kernel_fn, x, names, batch_size):
  """`[np, np]` kernels of padded `x` with itself, from the upper tiles."""
  b = batch_size
  t = x.shape[0] // b
  tiles = x.reshape((t, b) + x.shape[1:])
  rows, cols = np.triu_indices(t, k=1)
  diagonal = lax.map(lambda tile: tuple(kernel_fn(tile, None, names)), tiles)
  blocks = [jnp.zeros((t, t, b, b), d.dtype) for d in diagonal]
  blocks = [bl.at[jnp.arange(t), jnp.arange(t)].set(d) for bl, d in zip(blocks, diagonal)]
  if len(rows):
    upper = lax.map(
      lambda ij: tuple(kernel_fn(tiles[ij[0]], tiles[ij[1]], names)),
      jnp.stack([rows, cols], axis=1),
    )
    blocks = [
      bl.at[rows, cols].set(u).at[cols, rows].set(u.transpose(0, 2, 1))
      for bl, u in zip(blocks, upper)
    ]
  return [bl.transpose(0, 2, 1, 3).reshape(t * b, t * b) for bl in blocks]


def tiled_kernel_fn(kernel_fn: Callable, batch_size: int) -> Callable:
  r"""`kernel_fn` computed in `batch_size x batch_size` tiles, one at a time.

  .. math::
    K[I_a, J_b] = \text{kernel\_fn}(x_1[I_a], x_2[J_b]), \quad
    |I_a| = |J_b| = \text{batch\_size},

  with the last tile padded (by repeating the last example) and cropped.

  Args:
    kernel_fn: `kernel_fn(x1, x2=None, get=...)`.
    batch_size: tile side, in examples.

  Returns:
    Jitted `fn(x1, x2=None, get=None)` equal to `kernel_fn(x1, x2, get)`
    (`get=None` gives both kernels as a namedtuple).
  """
  batch_size = _check_batch_size(batch_size)

  def compute(x1, x2, names):
    n1 = x1.shape[0]
    x1p = _pad_rows(x1, batch_size)
    if x2 is None:
      out = _tile_symmetric(kernel_fn, x1p, names, batch_size)
      return [o[:n1, :n1] for o in out]
    n2 = x2.shape[0]
    out = _tile_grid(kernel_fn, x1p, _pad_rows(x2, batch_size), names, batch_size)
    return [o[:n1, :n2] for o in out]

  compiled = jax.jit(compute, static_argnums=2)

  def fn(x1: ArrayLike, x2: ArrayLike | None = None, get: str | Sequence[str] | None = None):
    names = get_names(get)
    x1, x2 = _check_inputs(kernel_fn, x1, x2)
    return pack(get, names, compiled(x1, x2, names))

  return fn


def sharded_kernel_fn(
  kernel_fn: Callable,
  batch_size: int,
  mesh: Mesh | None = None,
  axis_name: str | Sequence[str] | None = None,
) -> Callable:
  r"""`kernel_fn` with the rows of `x1` spread over the devices of a mesh.

  Each device computes `kernel_fn(x1[rows of the device], x2)` in tiles of
  `batch_size` (see `tiled_kernel_fn`); the result is a global array whose
  rows are sharded along `axis_name`.

  Args:
    kernel_fn: `kernel_fn(x1, x2=None, get=...)`.
    batch_size: tile side, in examples.
    mesh: a `jax.sharding.Mesh`; default: `kdjax.mesh.make_mesh()`, all
      devices on one axis 'data'.
    axis_name: mesh axis (or axes) to split rows over; default all axes.

  Returns:
    `fn(x1, x2=None, get=None)` equal to `kernel_fn(x1, x2, get)`.
  """
  batch_size = _check_batch_size(batch_size)
  if mesh is None:
    mesh = make_mesh()
  axes = (
    tuple(mesh.axis_names)
    if axis_name is None
    else ((axis_name,) if isinstance(axis_name, str) else tuple(axis_name))
  )
  if any(a not in mesh.axis_names for a in axes):
    raise ValueError(f"axis_name {axis_name!r} not in mesh axes {mesh.axis_names}")
  devices = int(np.prod([mesh.shape[a] for a in axes]))
  row_spec = P(axes)

  def compute(x1, x2, names):
    n1, n2 = x1.shape[0], x2.shape[0]
    x1p = _pad_rows(x1, devices * batch_size)
    x2p = _pad_rows(x2, batch_size)

    def local(rows, cols):
      return tuple(_tile_grid(kernel_fn, rows, cols, names, batch_size))

    out = jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(row_spec, P()),
      out_specs=tuple(P(axes, None) for _ in names),
      check_vma=False,
    )(x1p, x2p)
    return [o[:n1, :n2] for o in out]

  compiled = jax.jit(compute, static_argnums=2)

  def fn(x1: ArrayLike, x2: ArrayLike | None = None, get: str | Sequence[str] | None = None):
    names = get_names(get)
    x1, x2 = _check_inputs(kernel_fn, x1, x2)
    return pack(get, names, compiled(x1, x1 if x2 is None else x2, names))

  return fn
