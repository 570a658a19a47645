"""Pointwise nonlinearities from their dual kernels, and from quadrature.

A nonlinearity `phi` applied to a Gaussian pre-activation with covariance
`[[v1, c], [c, v2]]` maps the kernels as

.. math::
  K' = E[\\phi(u) \\phi(v)], \\qquad \\Theta' = E[\\phi'(u) \\phi'(v)] \\, \\Theta,

so every such layer is a `pair_fn(c, v1, v2) -> (K', E[phi'(u) phi'(v)])`
applied entrywise; `elementwise` turns one into a layer.

Reference: Han et al., 2022, "Fast Neural Kernel Embeddings for General
Activations" (`Elementwise`, `ElementwiseNumerical`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.kernels.stax.covariance import outer, single, variances, with_covs
from kdjax.kernels.stax.layer import layer

PairFn = Callable[[jax.Array, jax.Array, jax.Array], tuple]


def elementwise(name: str, fn: Callable[[jax.Array], jax.Array] | None, pair_fn: PairFn):
  """The layer applying `fn` pointwise, with kernels from `pair_fn`.

  Args:
    name: layer name for error messages.
    fn: the finite network's nonlinearity (None: `apply_fn` raises).
    pair_fn: `(c, v1, v2) -> (K', dot)` on broadcastable arrays, where `c` is
      a covariance and `v1`, `v2` the variances of its two points.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """

  def pair(c, v1, v2):
    nngp, dot = pair_fn(c, v1, v2)
    return jnp.broadcast_to(nngp, c.shape), dot

  def transform(k):
    k = single(name, k)
    var1 = variances(k.cov1, k)
    var2 = var1 if k.cov2 is None else variances(k.cov2, k)
    nngp, dot = pair(k.nngp, *outer(var1, var2, k, pairs=True))
    ntk = None if k.ntk is None else dot * k.ntk

    def cov_fn(cov):
      v = variances(cov, k)
      return pair(cov, *outer(v, v, k, pairs=False))[0]

    return with_covs(k, nngp, ntk, cov_fn)

  def apply_fn(params, x, **kwargs):
    if fn is None:
      raise ValueError(f"{name} was built without `fn`: it has a kernel but no finite network")
    return fn(x)

  return layer(lambda key, shape: (shape, ()), apply_fn, transform)


def Elementwise(
  fn: Callable[[jax.Array], jax.Array] | None = None,
  nngp_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
  d_nngp_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
):
  """A nonlinearity `fn` given its dual kernel `nngp_fn(cov12, var1, var2)`.

  Args:
    fn: the scalar nonlinearity, for `apply_fn` (None: `apply_fn` raises).
    nngp_fn: `(cov12, var1, var2) -> E[fn(u) fn(v)]` for a centred bivariate
      normal `(u, v)`, scalar in, scalar out.
    d_nngp_fn: `(cov12, var1, var2) -> E[fn'(u) fn'(v)]`; None for the
      derivative of `nngp_fn` in `cov12` by autodiff (Price's theorem).

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if nngp_fn is None:
    raise ValueError(
      "Elementwise needs nngp_fn (use ElementwiseNumerical for a nonlinearity without one)"
    )
  if fn is not None and not callable(fn):
    raise ValueError(f"fn must be callable, got {fn!r}")
  nngp_vec = jnp.vectorize(nngp_fn)
  d_nngp_vec = jnp.vectorize(jax.grad(nngp_fn) if d_nngp_fn is None else d_nngp_fn)

  def pair_fn(c, v1, v2):
    return nngp_vec(c, v1, v2), d_nngp_vec(c, v1, v2)

  name = getattr(fn if fn is not None else nngp_fn, "__name__", "Elementwise")
  return elementwise(f"Elementwise({name})", fn, pair_fn)


def ElementwiseNumerical(
  fn: Callable[[jax.Array], jax.Array],
  deg: int,
  df: Callable[[jax.Array], jax.Array] | None = None,
):
  r"""Any smooth nonlinearity, its kernels by Gauss–Hermite quadrature of degree `deg`.

  With Gauss–Hermite nodes `x_i` and weights `w_i` (for `e^{-x^2}`),
  `u = sqrt(2 v1) x` and `v = c / sqrt(v1 / 2) x + sqrt(2 (v2 - c^2 / v1)) y`:

  .. math::
    E[f(u) f(v)] \approx \frac{1}{\pi} \sum_{i, j} w_i w_j f(u_i) f(v_{ij}),

  and the same with `f'` (autodiff of `fn` unless `df` is given) for the NTK.
  Exact for polynomials of degree `< 2 deg`; not suited to kinks (ReLU, Abs).

  Args:
    fn: the scalar nonlinearity, e.g. `jnp.tanh`.
    deg: number of quadrature nodes per dimension, `>= 1` (25 is a good start
      for smooth functions; cost grows as `deg^2`).
    df: the derivative of `fn`; None for autodiff.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if not callable(fn):
    raise ValueError(f"fn must be callable, got {fn!r}")
  if not isinstance(deg, int) or deg < 1:
    raise ValueError(f"deg must be a positive int, got {deg!r}")
  nodes, weights = np.polynomial.hermite.hermgauss(deg)
  d_fn = jnp.vectorize(jax.grad(fn)) if df is None else df

  def integrate(f, c, v1, v2):
    shape = jnp.broadcast_shapes(c.shape, v1.shape, v2.shape)
    x = nodes.reshape((deg, 1) + (1,) * len(shape))
    y = nodes.reshape((1, deg) + (1,) * len(shape))
    tiny = jnp.finfo(c.dtype).tiny
    u = jnp.sqrt(2 * v1) * x
    v = (
      c / jnp.sqrt(jnp.maximum(v1 / 2, tiny)) * x
      + jnp.sqrt(jnp.maximum(2 * (v2 - c**2 / jnp.maximum(v1, tiny)), 0.0)) * y
    )
    grid = jnp.asarray(np.outer(weights, weights) / np.pi, c.dtype)
    return jnp.tensordot(grid, f(u) * f(v), axes=((0, 1), (0, 1)))

  def pair_fn(c, v1, v2):
    return integrate(fn, c, v1, v2), integrate(d_fn, c, v1, v2)

  name = getattr(fn, "__name__", "fn")
  return elementwise(f"ElementwiseNumerical({name}, deg={deg})", fn, pair_fn)
