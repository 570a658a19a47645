r"""Explicit reductions of per-example (or per-token) losses.

One rule for empty means, here and in every loss that averages over examples
(``dist_loss``, ``sequence_kd_loss``, ``mean_from_sum_and_count``): **a mean over zero
examples is 0, with a zero gradient** -- whether the batch is empty by its shape or
because ``where`` masks every example. This is optax's rule for fully masked rows. A
ValueError is not an option for the masked case, whose emptiness is a run-time value
under ``jax.jit``, and one rule for both cases keeps a padded batch and a trimmed one
equal. With gradient accumulation an all-padding micro-batch then contributes nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.checks import check_nonnegative
from kdjax.losses._common import example_mask

__all__ = ["mean_over_examples", "masked_mean"]


def mean_over_examples(losses: ArrayLike) -> jax.Array:
  r"""Mean of per-example losses over all their axes: :math:`\frac1N \sum_i \ell_i`.

  Args:
    losses: ``[...]`` per-example losses.

  Returns:
    A scalar; 0 (with a zero gradient) for an empty ``losses`` (module docstring).
  """
  return masked_mean(losses)


def masked_mean(
  losses: ArrayLike, where: ArrayLike | None = None, *, weights: ArrayLike | None = None
) -> jax.Array:
  r"""Weighted mean of per-example losses over the examples where the mask is True.

  .. math::
    \frac{\sum_i m_i w_i \ell_i}{\sum_i m_i w_i},\quad m_i \in \{0, 1\},\ w_i \ge 0,

  and 0 (with a zero gradient) when the denominator is 0: no example, every example
  masked, or all weights 0 (module docstring). Masked entries may hold NaN or inf:
  they are *excluded* (``jnp.where``), not multiplied by 0, so they reach neither the
  value nor the gradient. A weight of 0 does multiply: use ``where`` to drop examples
  that may be non-finite.

  Args:
    losses: ``[...]`` per-example losses.
    where: optional boolean mask broadcastable to ``losses.shape`` (None: all True).
      It masks examples (entries of ``losses``), as every ``where`` of kdjax.losses.
    weights: optional non-negative per-example weights broadcastable to
      ``losses.shape`` (None: all 1), e.g. ``cwtm_weights``.

  Returns:
    A scalar in the losses' floating dtype (float32 for integer losses).
  """
  losses = jnp.asarray(losses)
  losses = losses.astype(jnp.promote_types(losses.dtype, jnp.float32))
  mask = example_mask(where, losses.shape, expected="the shape of losses")
  if mask is None:
    mask = jnp.ones(losses.shape, bool)
  if weights is None:
    weights = mask.astype(losses.dtype)
  else:
    check_nonnegative("weights", weights)
    weights = jnp.where(mask, jnp.broadcast_to(jnp.asarray(weights, losses.dtype), mask.shape), 0)
  total = jnp.sum(jnp.where(mask, weights * jnp.where(mask, losses, 0), 0))
  denominator = jnp.sum(weights)
  return total / jnp.where(denominator > 0, denominator, 1)
