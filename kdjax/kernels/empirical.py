"""Finite-width (empirical) neural tangent kernel from Jacobian contractions.

Reference: Jacot, Gabriel, Hongler, 2018, "Neural Tangent Kernel: Convergence
and Generalization in Neural Networks"; Novak et al., 2022, "Fast Finite
Width Neural Tangent Kernel".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["empirical_ntk_fn"]


def empirical_ntk_fn(apply_fn: Callable[..., jax.Array]):
  r"""Builds `ntk_fn(x1, x2, params)`, the NTK of one finite network.

  .. math::
    \Theta(x_1, x_2) = \frac{1}{C} \sum_{c=1}^{C} \sum_{\theta}
      \frac{\partial f_c(x_1)}{\partial \theta}
      \frac{\partial f_c(x_2)}{\partial \theta},

  the mean over the `C` output units of the per-unit NTK, which converges to
  the analytic `kernel_fn(x1, x2, 'ntk')` as the width grows.

  Args:
    apply_fn: `apply_fn(params, x) -> [n, C]` (or `[n]`), e.g. from
      `kdjax.kernels.stax`.

  Returns:
    A jitted `ntk_fn(x1, x2, params) -> [n1, n2]`; `x2=None` means `x1`.
  """

  def jacobian(params, x):
    def f(p, example):
      out = apply_fn(p, example[None])[0]
      return jnp.reshape(out, (-1,))

    # [n, C, *leaf] per parameter leaf, one example at a time.
    return jax.vmap(jax.jacrev(f), in_axes=(None, 0))(params, x)

  @jax.jit
  def ntk_fn(x1: jax.Array, x2: jax.Array | None, params: Any) -> jax.Array:
    j1 = jacobian(params, x1)
    j2 = j1 if x2 is None else jacobian(params, x2)
    total = None
    outputs = None
    for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2)):
      outputs = a.shape[1]
      a = a.reshape(a.shape[:2] + (-1,))
      b = b.reshape(b.shape[:2] + (-1,))
      term = jnp.einsum("icp,jcp->ij", a, b)
      total = term if total is None else total + term
    if total is None:
      raise ValueError("params has no leaves: the network has no parameters")
    return total / outputs

  return ntk_fn
