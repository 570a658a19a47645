"""Explicit reductions of per-example (or per-token) losses."""

from __future__ import annotations

import jax.numpy as jnp

from kdjax.losses._common import example_mask

__all__ = ["mean_over_examples", "masked_mean"]


def mean_over_examples(losses):
  r"""Mean of per-example losses over all their axes: :math:`\frac1N \sum_i \ell_i`.

  Args:
    losses: ``[...]`` per-example losses.

  Returns:
    A scalar.
  """
  return jnp.mean(jnp.asarray(losses))


def masked_mean(losses, where):
  r"""Mean of per-example losses over the examples where the mask is True.

  .. math::
    \frac{\sum_i w_i \ell_i}{\max(1, \sum_i w_i)},\quad w_i \in \{0, 1\}.

  Masked entries may hold NaN or inf; they are excluded, not multiplied by 0. A fully
  masked input gives 0.

  Args:
    losses: ``[...]`` per-example losses.
    where: boolean mask broadcastable to ``losses.shape``.

  Returns:
    A scalar.
  """
  losses = jnp.asarray(losses)
  mask = example_mask(where, losses.shape, expected="the shape of losses")
  total = jnp.sum(jnp.where(mask, losses, 0))
  count = jnp.sum(mask, dtype=total.dtype)
  return total / jnp.maximum(count, 1)
