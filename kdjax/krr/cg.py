r"""KRR beyond one Cholesky: preconditioned conjugate gradients over a row-sharded Gram matrix.

Solves `(K + lambda I) alpha = y`, `lambda = reg tr(K) / n` (as `kdjax.krr.solve`), by
conjugate gradients preconditioned with a randomised Nyström approximation of `K`
(Frangella, Tropp, Udell, 2023, "Randomized Nyström Preconditioning", SIAM J. Matrix Anal.
Appl.; Algorithms 2.1 and 5.1): with a Gaussian sketch `Omega` `[n, r]`,
`K ~ U diag(s) U^T` and

.. math::
  P^{-1} = (s_r + \lambda)\, U (\operatorname{diag}(s) + \lambda I)^{-1} U^T + I - U U^T,

so that CG needs few iterations when `K`'s spectrum decays (as NNGP/NTK spectra do).

`K` is held one of two ways, never factored:
  * a dense `[n, n]` matrix whose rows are split over the `'data'` axis of a mesh
    (`kdjax.mesh.make_mesh`; all devices of all processes): each device holds `n / D`
    rows and each iteration is one sharded mat-vec plus an all-reduce of `c` dot products.
    Over several processes (`jax.distributed`), each process only places its own rows.
    Memory: `n^2 / D` per device, against `n^2` plus the factor for Cholesky;
  * `BlockGram(kernel_fn, x, batch_size, get, mesh)`: `K` recomputed `batch_size` rows at
    a time in every product, for `n` where even `n^2` does not fit (memory
    `O(batch_size * n)`, time `O(iterations * n^2)` kernel entries); with a `mesh`, the
    row blocks are split over its `'data'` axis (one process: `x` is replicated).

Failure is loud: on concrete inputs a non-positive curvature `p^T (K + lambda I) p <= 0`
(a system that is not positive definite) or a NaN raises a ValueError suggesting a larger
`reg`, and not reaching `tol` within `max_iter` raises too; under `jax.jit` the solution is
NaN in those cases.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import checks
from kdjax.mesh import DATA_AXIS, make_mesh

__all__ = ["BlockGram", "CGInfo", "solve_cg", "predict_cg", "row_sharded"]


@dataclasses.dataclass(frozen=True)
class BlockGram:
  """`K = kernel_fn(x, x, get)`, recomputed `batch_size` rows at a time, never stored.

  With a `mesh`, the row blocks are split over its `'data'` axis (`jax.shard_map`):
  each device computes `K[rows] @ v` for `n / D` rows (memory `O(batch_size n)` per
  device, `x` and `v` replicated) and the products are gathered.

  Attributes:
    kernel_fn: `kernel_fn(x1, x2, get)`, e.g. from `kdjax.kernels.stax`.
    x: `[n, ...]` training inputs.
    batch_size: rows per block (memory `O(batch_size * n)`).
    get: `'nngp'` or `'ntk'`.
    mesh: None (one device), or a mesh with a `'data'` axis to split the row blocks over
      (e.g. `kdjax.mesh.make_mesh()`).
  """

  kernel_fn: Callable
  x: jax.Array
  batch_size: int = 256
  get: str = "ntk"
  mesh: Mesh | None = None

  def __post_init__(self):
    size = self.batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
      raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
    if self.get not in ("nngp", "ntk"):
      raise ValueError(f"get must be 'nngp' or 'ntk', got {self.get!r}")
    if self.mesh is not None and DATA_AXIS not in self.mesh.axis_names:
      raise ValueError(f"mesh needs a {DATA_AXIS!r} axis, got axes {self.mesh.axis_names}")

  @property
  def n(self) -> int:
    return int(self.x.shape[0])

  def _blocks(self, fn, v):
    """`fn(rows, x, v)` for row blocks of `x` (the last ones padded), concatenated over rows."""
    b = self.batch_size
    x = jnp.asarray(self.x)
    devices = 1 if self.mesh is None else self.mesh.shape[DATA_AXIS]
    extra = -x.shape[0] % (b * devices)
    xp = jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) if extra else x
    blocks = xp.reshape((-1, b) + x.shape[1:])
    local = lambda rows, x, v: lax.map(lambda r: fn(r, x, v), rows)
    if self.mesh is not None:
      local = jax.shard_map(
        local,
        mesh=self.mesh,
        in_specs=(P(DATA_AXIS), P(), P()),
        out_specs=P(DATA_AXIS),
        check_vma=False,
      )
    out = local(blocks, x, v)
    return out.reshape((-1,) + out.shape[2:])[: x.shape[0]]

  def matmat(self, v: jax.Array) -> jax.Array:
    """`K @ v` for `v` `[n, c]`."""
    return self._blocks(lambda rows, x, v: self.kernel_fn(rows, x, self.get) @ v, v)

  def diagonal(self) -> jax.Array:
    """`diag(K)`, `[n]`."""
    diag = lambda rows, x, v: jnp.diagonal(self.kernel_fn(rows, None, self.get))
    return self._blocks(diag, jnp.zeros(()))


class CGInfo(NamedTuple):
  """Iterations run, final relative residuals `[c]`, smallest curvature seen, ridge."""

  iterations: jax.Array
  residual: jax.Array
  min_curvature: jax.Array
  ridge: jax.Array


def row_sharded(k: jax.typing.ArrayLike, mesh: Mesh | None = None) -> jax.Array:
  """Places `[n, n]` `K` with rows split over `'data'` (each process copies only its rows).

  `n` is padded to a multiple of the mesh size with identity rows and columns (the padded
  unknowns solve to 0). A `jax.Array` already row-sharded over `mesh` is returned as is
  (then `solve_cg` takes its padded size as `n`: pass such arrays only when `n` is a
  multiple of the mesh size).

  Args:
    k: `[n, n]` NumPy (e.g. a memmap: only local rows are read) or jax array.
    mesh: default `make_mesh()`.

  Returns:
    `[n_pad, n_pad]` global array, sharding `P('data', None)`.
  """
  mesh = make_mesh() if mesh is None else mesh
  sharding = NamedSharding(mesh, P(DATA_AXIS, None))
  if isinstance(k, jax.Array) and k.sharding == sharding:
    return k
  k = k if isinstance(k, np.ndarray) else np.asarray(k)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f"k_train_train must be a square [n, n] matrix, got {k.shape}")
  n = k.shape[0]
  n_pad = n + (-n % mesh.size)

  def rows(index):
    lo, hi, _ = index[0].indices(n_pad)
    block = np.zeros((hi - lo, n_pad), k.dtype)
    real = min(hi, n)
    if real > lo:
      block[: real - lo, :n] = k[lo:real]
    for i in range(max(lo, n), hi):
      block[i - lo, i] = 1
    return block

  return jax.make_array_from_callback((n_pad, n_pad), sharding, rows)


def _nystrom(matmat: Callable, n: int, rank: int, dtype, key) -> tuple[jax.Array, jax.Array]:
  """Randomised Nyström `K ~ U diag(s) U^T`, `s` descending (Frangella et al., 2023, Alg. 2.1).

  The sketch is Gaussian without QR, and `U` comes from the `r x r` eigendecomposition of
  `B^T B` instead of an SVD of `B` `[n, r]` (both tall factorisations are slow on CPU; a
  preconditioner only needs the dominant directions approximately).
  """
  omega = jax.random.normal(key, (n, rank), dtype) / jnp.sqrt(n).astype(dtype)
  sketch = matmat(omega)
  shift = jnp.sqrt(n) * jnp.finfo(dtype).eps * jnp.linalg.norm(sketch)
  sketch = sketch + shift * omega
  core = omega.T @ sketch
  chol = jnp.linalg.cholesky((core + core.T) / 2)
  b = jax.scipy.linalg.solve_triangular(chol, sketch.T, lower=True).T
  evals, v = jnp.linalg.eigh(b.T @ b)
  evals, v = evals[::-1], v[:, ::-1]
  keep = evals > jnp.finfo(dtype).eps * evals[0]
  u = jnp.where(keep, (b @ v) / jnp.sqrt(jnp.where(keep, evals, 1)), 0)
  return u, jnp.where(keep, jnp.maximum(evals - shift, 0), 0)


def _pcg(matmat, precond, b, tol, max_iter):
  """Block of independent preconditioned CG solves, one per column of `b` `[n, c]`."""
  b_norm = jnp.linalg.norm(b, axis=0)
  b_norm = jnp.where(b_norm > 0, b_norm, 1)
  x = jnp.zeros_like(b)
  r = b
  z = precond(r)
  p = z
  rz = jnp.sum(r * z, axis=0)

  def cond(state):
    i, _, r, _, _, _, _ = state
    rel = jnp.linalg.norm(r, axis=0) / b_norm
    return (i < max_iter) & jnp.any(rel > tol) & jnp.all(jnp.isfinite(rel))

  def body(state):
    i, x, r, p, rz, curv_min, _ = state
    ap = matmat(p)
    curvature = jnp.sum(p * ap, axis=0)
    active = jnp.linalg.norm(r, axis=0) / b_norm > tol
    step = jnp.where(active, rz / jnp.where(curvature != 0, curvature, 1), 0)
    # A column that already converged keeps its x; a non-positive curvature poisons it.
    step = jnp.where(active & (curvature <= 0), jnp.nan, step)
    x = x + step * p
    r = r - step * ap
    z = precond(r)
    rz_new = jnp.sum(r * z, axis=0)
    p = z + jnp.where(active, rz_new / jnp.where(rz != 0, rz, 1), 0) * p
    curv_min = jnp.minimum(curv_min, jnp.min(jnp.where(active, curvature, jnp.inf)))
    return i + 1, x, r, p, rz_new, curv_min, None

  init = (0, x, r, p, rz, jnp.asarray(jnp.inf, b.dtype), None)
  i, x, r, _, _, curv_min, _ = lax.while_loop(cond, body, init)
  return x, i, jnp.linalg.norm(r, axis=0) / b_norm, curv_min


def _gram_matmat(operand, spec):
  """`v -> K v` for a dense row-sharded `K` (`spec=None`) or a `BlockGram` of inputs `operand`."""
  if spec is None:
    return operand.__matmul__
  return BlockGram(spec[0], operand, *spec[1:]).matmat


@functools.partial(jax.jit, static_argnames="spec")
def _block_diagonal(x, spec):
  return BlockGram(spec[0], x, *spec[1:]).diagonal()


@functools.partial(
  jax.jit, static_argnames=("spec", "rank", "tol", "max_iter", "seed", "replicated")
)
def _run(operand, y2, ridge, *, spec, rank, tol, max_iter, seed, replicated):
  """Nyström preconditioner + PCG; NaN where CG failed; `alpha` replicated for a dense K."""
  matmat_k = _gram_matmat(operand, spec)
  matmat = lambda v: matmat_k(v) + ridge * v
  if rank:
    u, s = _nystrom(matmat_k, y2.shape[0], rank, y2.dtype, jax.random.key(seed))
    s_min = jnp.min(jnp.where(s > 0, s, jnp.inf))
    scale = jnp.where(s > 0, (jnp.where(jnp.isfinite(s_min), s_min, 0) + ridge) / (s + ridge), 1)
    precond = lambda v: v + u @ ((scale - 1)[:, None] * (u.T @ v))
  else:
    precond = lambda v: v
  x, i, residual, curv_min = _pcg(matmat, precond, y2, tol, max_iter)
  bad = ~(jnp.all(residual <= tol) & jnp.all(jnp.isfinite(x)) & (curv_min > 0))
  x = jnp.where(bad, jnp.nan, x)
  if replicated is not None:  # the same alpha on every device of every process
    x = lax.with_sharding_constraint(x, replicated)
  return x, CGInfo(i, residual, curv_min, ridge)


def solve_cg(
  k_train_train,
  y_train: jax.typing.ArrayLike,
  *,
  reg: float = 1e-6,
  tol: float = 1e-6,
  max_iter: int = 1000,
  rank: int = 128,
  seed: int = 0,
  mesh: Mesh | None = None,
  return_info: bool = False,
):
  r"""KRR dual coefficients `alpha = (K + reg tr(K)/n I)^{-1} y` by Nyström-preconditioned CG.

  Args:
    k_train_train: dense `[n, n]` kernel (NumPy or jax; placed row-sharded over `mesh`, see
      `row_sharded`), or a `BlockGram` that recomputes it block by block.
    y_train: `[n]` or `[n, c]` targets (the same on every process).
    reg: relative ridge (`lambda = reg tr(K) / n`); must be > 0 for CG.
    tol: stop when every column's `||r|| <= tol ||y||`.
    max_iter: iteration cap; not converging by then is a ValueError (concrete inputs).
    rank: Nyström preconditioner rank (`min(rank, n)`; 0 for plain CG).
    seed: seed of the Nyström sketch.
    mesh: mesh for a dense `K` (default `make_mesh()`); a `BlockGram` carries its own.
    return_info: also return a `CGInfo`.

  Returns:
    `alpha` shaped like `y_train` (replicated), and the `CGInfo` if `return_info`.

  Raises:
    ValueError: bad shapes or reg, a kernel that is not symmetric (dense, concrete), a
      system that is not positive definite (non-positive curvature or NaN), or no
      convergence within `max_iter`.
  """
  blocks = isinstance(k_train_train, BlockGram)
  if not checks.is_concrete(reg) or not float(reg) > 0:
    raise ValueError(f"reg must be a number > 0 for CG, got {reg}")
  if max_iter < 1 or rank < 0 or not tol > 0:
    raise ValueError(f"need max_iter >= 1, rank >= 0, tol > 0; got {max_iter}, {rank}, {tol}")
  if blocks:
    n = k_train_train.n
    operand = jnp.asarray(k_train_train.x)
    gram = k_train_train
    spec = (gram.kernel_fn, gram.batch_size, gram.get, gram.mesh)
    trace = jnp.sum(_block_diagonal(operand, spec))
    dtype = jnp.result_type(trace, float)
    n_pad, replicated = n, None
  else:
    shape = np.shape(k_train_train)
    if len(shape) != 2 or shape[0] != shape[1]:
      raise ValueError(f"k_train_train must be a square [n, n] matrix, got {shape}")
    if not isinstance(k_train_train, jax.Array) or k_train_train.is_fully_addressable:
      checks.check_symmetric("k_train_train", k_train_train)
    n = shape[0]
    operand = row_sharded(k_train_train, mesh)
    n_pad = operand.shape[0]
    dtype = jnp.result_type(operand.dtype, float)
    trace = jnp.trace(operand) - (n_pad - n)
    spec, replicated = None, NamedSharding(operand.sharding.mesh, P())
  y = checks.check_targets(y_train, n, dtype)
  y2 = y.reshape(n, -1)
  if n_pad > n:
    y2 = jnp.concatenate([y2, jnp.zeros((n_pad - n, y2.shape[1]), dtype)])
  ridge = jnp.asarray(reg, dtype) * trace / n
  x, info = _run(
    operand,
    y2,
    ridge,
    spec=spec,
    rank=min(rank, n),
    tol=tol,
    max_iter=max_iter,
    seed=seed,
    replicated=replicated,
  )
  alpha = x[:n].reshape(y.shape)
  if checks.is_concrete(x) and not bool(jnp.all(jnp.isfinite(alpha))):
    curv, res = float(info.min_curvature), np.asarray(info.residual)
    if not curv > 0 or not np.all(np.isfinite(res)):
      raise ValueError(
        f"k_train_train + reg * tr(K) / n * I is not positive definite with reg = {reg} "
        f"(CG met curvature p^T A p = {curv:.3g} <= 0 or NaN after "
        f"{int(info.iterations)} iterations); try a larger reg, e.g. {10 * float(reg):.3g}, "
        "and check the kernel for NaN"
      )
    raise ValueError(
      f"CG did not reach tol={tol} in max_iter={max_iter} iterations (relative residual "
      f"{float(np.max(res)):.3g}); raise max_iter or rank, or use a larger reg"
    )
  return (alpha, info) if return_info else alpha


def predict_cg(
  k_test_train: jax.typing.ArrayLike,
  k_train_train,
  y_train: jax.typing.ArrayLike,
  *,
  reg: float = 1e-6,
  **cg_kwargs,
) -> jax.Array:
  r"""`K_{*t} alpha` with `alpha` from `solve_cg` (same arguments); `[m]` or `[m, c]`."""
  alpha = solve_cg(k_train_train, y_train, reg=reg, **cg_kwargs)
  k_st = jnp.asarray(k_test_train)
  if k_st.ndim != 2 or k_st.shape[1] != alpha.shape[0]:
    raise ValueError(f"k_test_train must be [m, {alpha.shape[0]}], got {k_st.shape}")
  return k_st.astype(alpha.dtype) @ alpha
