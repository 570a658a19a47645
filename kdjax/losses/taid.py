"""TAID: temporally adaptive interpolated distillation (loss, target and schedule).

Reference: Shing, Misaki, Bao, Yokoi & Akiba (2025) "TAID: Temporally Adaptive
Interpolated Distillation for Efficient Knowledge Transfer in Language Models" (ICLR).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.checks import check_nonnegative, check_positive, check_unit_interval
from kdjax.losses._common import apply_mask, kl_from_log_probs, prepare_pair

__all__ = [
  "taid_target_log_probs",
  "taid_loss",
  "TaidScheduleState",
  "taid_schedule_init",
  "taid_schedule_update",
]


def _interpolate_logits(student, teacher, t):
  """``(1 - t) * student + t * teacher`` with ``0 * -inf = 0``."""
  student = jnp.where(jnp.isneginf(student) & (t == 1), 0, student)
  teacher = jnp.where(jnp.isneginf(teacher) & (t == 0), 0, teacher)
  return (1 - t) * student + t * teacher


def taid_target_log_probs(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  t: ArrayLike,
  temperature: ArrayLike = 1.0,
  axis: int = -1,
) -> jax.Array:
  r"""Log-probabilities of TAID's time-dependent intermediate target.

  .. math::
    \log p_t = \log\mathrm{softmax}\Big(\frac{(1 - t)\,\mathrm{sg}(s) + t\, z}{T}\Big),

  an interpolation in logit space between the detached student (``sg`` = stop-gradient)
  at ``t = 0`` and the teacher ``z`` at ``t = 1``.

  Reference: Shing, Misaki, Bao, Yokoi & Akiba (2025) "TAID: Temporally Adaptive
  Interpolated Distillation for Efficient Knowledge Transfer in Language Models" (ICLR).

  Args:
    student_logits: ``[..., num_classes]`` student logits (no gradient flows through
      them here).
    teacher_logits: same shape, teacher logits.
    t: interpolation time in [0, 1].
    temperature: softmax temperature ``T > 0``.
    axis: the class axis.

  Returns:
    Log-probabilities of the same shape as the logits.
  """
  s, z, _ = prepare_pair(student_logits, teacher_logits, temperature, None, axis)
  check_unit_interval("t", t)
  mixed = _interpolate_logits(jax.lax.stop_gradient(s), z, jnp.asarray(t, s.dtype))
  return jnp.moveaxis(jax.nn.log_softmax(mixed), -1, axis)


def taid_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  t: ArrayLike,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""TAID loss: forward KL from the interpolated target to the student, per example.

  .. math::
    \mathcal{J}_{\mathrm{TAID}}(t) = \mathrm{KL}(p_t \,\|\, q),\quad
    q = \mathrm{softmax}(s / T),

  with ``p_t`` of ``taid_target_log_probs``; gradients reach the student only through
  ``q``. ``t = 1`` is the forward KL to the teacher. Increase ``t`` during training, e.g.
  with ``taid_schedule_update``.

  Reference: Shing, Misaki, Bao, Yokoi & Akiba (2025) "TAID: Temporally Adaptive
  Interpolated Distillation for Efficient Knowledge Transfer in Language Models" (ICLR).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    t: interpolation time in [0, 1].
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example losses.
  """
  s, z, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  check_unit_interval("t", t)
  mixed = _interpolate_logits(jax.lax.stop_gradient(s), z, jnp.asarray(t, s.dtype))
  loss = kl_from_log_probs(jax.nn.log_softmax(mixed), jax.nn.log_softmax(s))
  return apply_mask(loss, mask)


class TaidScheduleState(NamedTuple):
  """State of TAID's adaptive schedule: current ``t``, momentum, previous loss."""

  t: jax.Array
  momentum: jax.Array
  prev_loss: jax.Array


def taid_schedule_init(t_start: float = 0.4) -> TaidScheduleState:
  """Initial state of TAID's adaptive schedule (``t = t_start``, no previous loss)."""
  check_unit_interval("t_start", t_start)
  return TaidScheduleState(
    t=jnp.asarray(t_start, jnp.float32),
    momentum=jnp.zeros((), jnp.float32),
    prev_loss=jnp.asarray(jnp.inf, jnp.float32),
  )


def taid_schedule_update(
  state: TaidScheduleState,
  loss: ArrayLike,
  *,
  step: ArrayLike,
  num_steps: int,
  t_start: float = 0.4,
  t_end: float = 1.0,
  alpha: ArrayLike = 5e-4,
  beta: ArrayLike = 0.99,
) -> TaidScheduleState:
  r"""One step of TAID's adaptive update of the interpolation time ``t``.

  .. math::
    \delta_n = \frac{J_{n-1} - J_n}{J_{n-1} + \epsilon},\quad
    m_n = \beta m_{n-1} + (1 - \beta)\,\delta_n,

    t_{n+1} = \min\Big(t_{\mathrm{end}},\ \max\big(t_{\mathrm{start}}
      + (t_{\mathrm{end}} - t_{\mathrm{start}})\tfrac{n}{N},\
      t_n + \alpha\, \sigma(m_n)\,(1 - t_n)\big)\Big),

  with ``J_n`` the TAID loss at step ``n`` of ``N`` and ``epsilon = 1e-15``. The first
  call only records the loss. Pure and jittable.

  Reference: Shing, Misaki, Bao, Yokoi & Akiba (2025) "TAID: Temporally Adaptive
  Interpolated Distillation for Efficient Knowledge Transfer in Language Models" (ICLR).

  Args:
    state: a ``TaidScheduleState``.
    loss: scalar TAID loss of this step (its gradient is not used).
    step: current step ``n``.
    num_steps: total number of steps ``N > 0``.
    t_start: ``t`` at step 0, in [0, 1].
    t_end: largest ``t``, in [0, 1].
    alpha: step size of the adaptive increment, ``>= 0``.
    beta: momentum coefficient in [0, 1].

  Returns:
    The new ``TaidScheduleState``.
  """
  check_unit_interval("t_start", t_start)
  check_unit_interval("t_end", t_end)
  check_nonnegative("alpha", alpha)
  check_unit_interval("beta", beta)
  check_positive("num_steps", num_steps)
  loss = jax.lax.stop_gradient(jnp.asarray(loss, jnp.float32))
  first = jnp.isinf(state.prev_loss)
  prev = jnp.where(first, loss, state.prev_loss)
  momentum = beta * state.momentum + (1 - beta) * (prev - loss) / (prev + 1e-15)
  linear = t_start + (t_end - t_start) * (jnp.asarray(step, jnp.float32) / num_steps)
  adaptive = state.t + alpha * jax.nn.sigmoid(momentum) * (1 - state.t)
  t = jnp.minimum(t_end, jnp.maximum(linear, adaptive))
  return TaidScheduleState(
    t=jnp.where(first, state.t, t),
    momentum=jnp.where(first, state.momentum, momentum),
    prev_loss=loss,
  )
