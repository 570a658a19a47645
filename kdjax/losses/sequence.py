"""Token-level KD for sequence models, with reductions exact under gradient accumulation.

Logits are ``[batch, time, vocab]`` with a boolean padding mask ``[batch, time]``
(True = real token). Any divergence of :mod:`kdjax.losses.logits` can be chosen by name
(:data:`DIVERGENCES`), with its hyper-parameters as keyword arguments.

Why (sum, count): the loss of a batch is the mean over its real tokens. With gradient
accumulation over micro-batches, averaging the micro-batch means weights each micro-batch
equally, not each token, and is wrong as soon as micro-batches hold different numbers of
real tokens. :func:`sequence_kd_sum_and_count` returns the token-loss sum and the token
count separately; add both up over the micro-batches (and their gradients: the gradient
of a sum is the sum of gradients) and divide once with :func:`mean_from_sum_and_count`::

  def loss_sum(params, mb):  # -> (sum of token losses, token count)
    return sequence_kd_sum_and_count(apply(params, mb["x"]), mb["teacher_logits"],
                                     where=mb["mask"], divergence="jsd", beta=0.5)

  step = jax.value_and_grad(loss_sum, has_aux=True)
  total, count, grads = 0.0, 0, None
  for mb in micro_batches:
    (s, c), g = step(params, mb)
    total, count = total + s, count + c
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
  loss = mean_from_sum_and_count(total, count)                   # == full-batch mean
  grads = jax.tree.map(lambda x: x / max(int(count), 1), grads)  # == full-batch grad
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.losses.logits import (
  generalized_jsd,
  kd_loss,
  kl_divergence,
  reverse_kl,
  skew_kl,
  skew_reverse_kl,
  total_variation,
)

__all__ = [
  "DIVERGENCES",
  "get_divergence",
  "token_kd_loss",
  "masked_sum_and_count",
  "mean_from_sum_and_count",
  "sequence_kd_sum_and_count",
  "sequence_kd_loss",
  "selective_token_mask",
  "adaspec_sum_and_count",
]

DIVERGENCES = {
  "kl": kl_divergence,
  "kd": kd_loss,
  "reverse_kl": reverse_kl,
  "jsd": generalized_jsd,
  "skew_kl": skew_kl,
  "skew_reverse_kl": skew_reverse_kl,
  "tv": total_variation,
}
"""Divergence name -> per-example function of :mod:`kdjax.losses.logits`.

``'kl'`` is KL(teacher || student), ``'kd'`` the same times ``T**2`` (Hinton),
``'jsd'`` the generalized JSD (hyper-parameter ``beta``), ``'skew_kl'`` and
``'skew_reverse_kl'`` the DistiLLM skew divergences (``alpha``), ``'tv'`` total
variation.
"""

_SHARED_ARGUMENTS = ("student_logits", "teacher_logits", "temperature", "where", "axis")


def get_divergence(name: str, *, temperature: ArrayLike = 1.0, **hyperparams) -> Callable:
  r"""Looks up a divergence by name and binds its temperature and hyper-parameters.

  Args:
    name: a key of :data:`DIVERGENCES`.
    temperature: softmax temperature :math:`T > 0`.
    **hyperparams: the divergence's own keyword arguments (``beta`` for ``'jsd'``,
      ``alpha`` for ``'skew_kl'`` / ``'skew_reverse_kl'``).

  Returns:
    ``fn(student_logits, teacher_logits, *, where=None, axis=-1) -> per-example loss``,
    a ``functools.partial`` (``.func`` is the divergence, ``.keywords`` its bound
    temperature and hyper-parameters).

  Raises:
    ValueError: unknown ``name`` or a hyper-parameter that divergence does not take.
  """
  if name not in DIVERGENCES:  # the token-level subset of kdjax.losses.get's names
    raise ValueError(f"divergence must be one of {sorted(DIVERGENCES)}, got {name!r}")
  from kdjax.losses import registry  # pylint: disable=import-outside-toplevel

  fn = registry.get(name)
  accepted = [p for p in inspect.signature(fn).parameters if p not in _SHARED_ARGUMENTS]
  unknown = sorted(set(hyperparams) - set(accepted))
  if unknown:
    raise ValueError(
      f"divergence {name!r} takes hyper-parameters {accepted}, got unexpected {unknown}"
    )
  return functools.partial(fn, temperature=temperature, **hyperparams)


def _token_mask(where: jax.Array | None, token_shape: tuple[int, ...]) -> jax.Array:
  if where is None:
    return jnp.ones(token_shape, bool)
  where = jnp.asarray(where)
  if where.shape != token_shape or where.dtype != jnp.bool_:
    raise ValueError(
      f"where must be a boolean token mask of shape {token_shape}, got {where.dtype} {where.shape}"
    )
  return where


def token_kd_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  where: ArrayLike | None = None,
  divergence: str = "kl",
  temperature: ArrayLike = 1.0,
  **hyperparams,
) -> jax.Array:
  r"""Per-token KD loss over ``[batch, time, vocab]`` logits.

  .. math::
    \ell_{b,t} = m_{b,t}\; D\big(\mathrm{softmax}(z^T_{b,t} / T),\
      \mathrm{softmax}(z^S_{b,t} / T)\big)

  with :math:`D` the chosen divergence of :mod:`kdjax.losses.logits` and :math:`m` the
  padding mask. Token-level (word-level) KD: Kim, Rush (2016), "Sequence-Level Knowledge
  Distillation", EMNLP; divergences as in Agarwal et al. (2024), "On-Policy Distillation
  of Language Models" (GKD) and Ko et al. (2024), "DistiLLM".

  Args:
    student_logits: ``[batch, time, vocab]`` student logits (``-inf`` allowed for
      masked vocabulary entries).
    teacher_logits: same shape, teacher logits.
    where: optional boolean ``[batch, time]`` padding mask (True = real token). It masks
      examples (tokens), not vocabulary entries, unlike optax's element-wise ``where``.
    divergence: a key of :data:`DIVERGENCES`.
    temperature: softmax temperature.
    **hyperparams: the divergence's hyper-parameters (see :func:`get_divergence`).

  Returns:
    ``[batch, time]`` per-token losses, exactly 0 (with zero gradient) at padding.
  """
  student_logits = jnp.asarray(student_logits)
  if student_logits.ndim != 3:
    raise ValueError(
      f"student_logits must have shape [batch, time, vocab], got {student_logits.shape}"
    )
  mask = _token_mask(where, student_logits.shape[:2])
  fn = get_divergence(divergence, temperature=temperature, **hyperparams)
  return fn(student_logits, teacher_logits, where=mask)


def masked_sum_and_count(
  losses: ArrayLike, where: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array]:
  r"""Sum of the unmasked losses and their number, kept apart for exact accumulation.

  .. math::
    S = \sum_{i} m_i \ell_i, \qquad C = \sum_i m_i

  Masked entries may hold NaN or inf: they are excluded, not multiplied by 0.

  Args:
    losses: per-token losses of any shape.
    where: optional boolean mask of the same shape (None = all tokens count).

  Returns:
    ``(S, C)``: a float scalar in the losses' dtype and an int32 scalar.
  """
  losses = jnp.asarray(losses)
  mask = _token_mask(where, losses.shape)
  total = jnp.sum(jnp.where(mask, losses, 0))
  return total, jnp.sum(mask, dtype=jnp.int32)


def mean_from_sum_and_count(total: ArrayLike, count: ArrayLike) -> jax.Array:
  r"""Mean token loss from accumulated sums and counts: :math:`S / \max(C, 1)`.

  Args:
    total: scalar sum of token losses (accumulated over micro-batches).
    count: scalar number of tokens (accumulated the same way).

  Returns:
    A scalar; 0 when ``count`` is 0.
  """
  total = jnp.asarray(total)
  return total / jnp.maximum(jnp.asarray(count), 1).astype(total.dtype)


def sequence_kd_sum_and_count(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  where: ArrayLike | None = None,
  divergence: str = "kl",
  temperature: ArrayLike = 1.0,
  **hyperparams,
) -> tuple[jax.Array, jax.Array]:
  r"""Token-loss sum and real-token count of a (micro-)batch.

  .. math::
    S = \sum_{b,t} m_{b,t}\, \ell_{b,t}, \qquad C = \sum_{b,t} m_{b,t}

  with :math:`\ell` from :func:`token_kd_loss`. Accumulate ``S``, ``C`` and the gradient
  of ``S`` over micro-batches, then divide once (module docstring).

  Args:
    student_logits: ``[batch, time, vocab]`` student logits.
    teacher_logits: same shape, teacher logits.
    where: optional boolean ``[batch, time]`` padding mask over tokens (examples, not
      vocabulary entries).
    divergence: a key of :data:`DIVERGENCES`.
    temperature: softmax temperature.
    **hyperparams: the divergence's hyper-parameters.

  Returns:
    ``(S, C)``: float32 scalar sum and int32 scalar count.
  """
  losses = token_kd_loss(
    student_logits,
    teacher_logits,
    where=where,
    divergence=divergence,
    temperature=temperature,
    **hyperparams,
  )
  return masked_sum_and_count(losses, _token_mask(where, losses.shape))


def sequence_kd_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  where: ArrayLike | None = None,
  divergence: str = "kl",
  temperature: ArrayLike = 1.0,
  **hyperparams,
) -> jax.Array:
  r"""Mean token KD loss over the real tokens of a batch.

  .. math::
    \mathcal{L} = \frac{\sum_{b,t} m_{b,t}\, \ell_{b,t}}{\max(1, \sum_{b,t} m_{b,t})}

  Args:
    student_logits: ``[batch, time, vocab]`` student logits.
    teacher_logits: same shape, teacher logits.
    where: optional boolean ``[batch, time]`` padding mask over tokens (examples, not
      vocabulary entries).
    divergence: a key of :data:`DIVERGENCES`.
    temperature: softmax temperature.
    **hyperparams: the divergence's hyper-parameters.

  Returns:
    A float32 scalar (0 for an all-padding batch).
  """
  return mean_from_sum_and_count(
    *sequence_kd_sum_and_count(
      student_logits,
      teacher_logits,
      where=where,
      divergence=divergence,
      temperature=temperature,
      **hyperparams,
    )
  )


def selective_token_mask(
  student_losses: ArrayLike,
  reference_losses: ArrayLike,
  *,
  fraction: float,
  where: ArrayLike | None = None,
) -> jax.Array:
  r"""AdaSPEC's token selection: the real tokens a draft can still learn.

  .. math::
    \Delta_{b,t} = \ell^{S}_{b,t} - \ell^{R}_{b,t}, \qquad
    \text{selected} = \text{the } \lceil f\, C \rceil \text{ real tokens of largest } \Delta

  with :math:`\ell^S` the student's (draft's) and :math:`\ell^R` a reference model's
  per-token loss against the target and :math:`C` the number of real tokens (ties go to
  the earlier token in row-major order). Tokens the reference fits much better than the
  draft are learnable; tokens both fit badly are left out. Hu et al. (2025), "AdaSPEC:
  Selective Knowledge Distillation for Efficient Speculative Decoders". The selection is
  piecewise constant: no gradient flows through it.

  Args:
    student_losses: per-token losses of any shape.
    reference_losses: the same shape, the reference model's.
    fraction: the share of real tokens kept, in (0, 1].
    where: optional boolean mask of real tokens, the losses' shape.

  Returns:
    A boolean mask of the losses' shape, False at every masked token.
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
  student_losses, reference_losses = jnp.asarray(student_losses), jnp.asarray(reference_losses)
  if student_losses.shape != reference_losses.shape:
    raise ValueError(
      f"student_losses {student_losses.shape} and reference_losses "
      f"{reference_losses.shape} must have one shape"
    )
  mask = _token_mask(where, student_losses.shape).reshape(-1)
  excess = jax.lax.stop_gradient(student_losses - reference_losses).reshape(-1)
  order = jnp.argsort(jnp.where(mask, -excess, jnp.inf), stable=True)
  rank = jnp.zeros(order.shape, jnp.int32).at[order].set(jnp.arange(order.size, dtype=jnp.int32))
  keep = jnp.ceil(fraction * jnp.sum(mask)).astype(jnp.int32)
  return ((rank < keep) & mask).reshape(student_losses.shape)


def adaspec_sum_and_count(
  student_logits: ArrayLike,
  reference_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  fraction: float,
  where: ArrayLike | None = None,
  divergence: str = "kl",
  temperature: ArrayLike = 1.0,
  **hyperparams,
) -> tuple[jax.Array, jax.Array]:
  r"""AdaSPEC's selective token KD of a draft: the sum and count over the selected tokens.

  .. math::
    S = \sum_{b,t} s_{b,t}\, \ell^{S}_{b,t}, \qquad C = \sum_{b,t} s_{b,t}

  with :math:`\ell^S` and :math:`\ell^R` the :func:`token_kd_loss` of the student and of
  the reference (a draft already distilled from the teacher; Hu et al. 2025 use forward
  KL) against the teacher, and :math:`s` = :func:`selective_token_mask`. With micro-batches
  the selection is made per micro-batch.

  Args:
    student_logits, reference_logits, teacher_logits: ``[batch, time, vocab]`` logits.
    fraction: the share of real tokens trained on, in (0, 1].
    where: optional boolean ``[batch, time]`` padding mask.
    divergence, temperature, **hyperparams: as :func:`token_kd_loss`.

  Returns:
    ``(S, C)``: float32 scalar sum and int32 scalar count of the selected tokens.
  """
  args = dict(where=where, divergence=divergence, temperature=temperature, **hyperparams)
  student = token_kd_loss(student_logits, teacher_logits, **args)
  reference = token_kd_loss(reference_logits, teacher_logits, **args)
  selected = selective_token_mask(student, reference, fraction=fraction, where=where)
  return masked_sum_and_count(student, selected)
