"""Divergences between teacher and student class distributions (pure jax.numpy, no state).

Every divergence here takes ``(student_logits, teacher_logits)`` of the same shape
``[..., num_classes]`` (the class axis is ``axis``), keyword-only hyper-parameters, an
optional boolean ``where`` mask over examples (shape = logits shape without the class
axis), and returns one loss per example: only the class axis is reduced. Masked
examples give exactly 0 and a zero gradient, whatever their logits contain.

Numerics: probabilities are handled in log space (``log_softmax``, ``logaddexp``) with
xlogy-style guards, so ``-inf`` logits (masked vocabulary) and zero-probability teacher
entries give neither NaN nor inf, in values or gradients, wherever the divergence itself
is finite. Low-precision inputs (bfloat16, float16) are computed and returned in float32.
Divergences are never negative: a value that rounding makes slightly negative is
returned as 0 while its gradient is left untouched (a straight-through clamp; the
difference is at the level of float32 rounding).

Notation: ``p = softmax(teacher_logits / T)``, ``q = softmax(student_logits / T)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.losses._common import (
  apply_mask,
  check_temperature,
  check_unit_interval,
  interior_weight,
  kl_from_log_probs,
  log_mixture,
  prepare_pair,
)

__all__ = [
  "kd_loss",
  "kl_divergence",
  "reverse_kl",
  "generalized_jsd",
  "total_variation",
  "skew_kl",
  "skew_reverse_kl",
  "soft_cross_entropy",
]


# ----------------------------------------------------------------------------------------
# T^2 KL(p || q) from centred logit differences (accurate at any temperature).

# |x| below which the Taylor series of e^x - 1 - x and of log(1 + y) - y are used.
_TAYLOR = 0.5


def _weighted_f(log_p, u, temperature):
  r"""``T**2 p f(u / T)`` with ``f(x) = e^x - 1 - x``, ``p = e^log_p``: for ``|x| < 1/2``
  as ``p u**2 sum_n x^n / (n + 2)!`` (no cancellation), else as
  ``T**2 (e^(log p + x) - p (1 + x))`` (``inf`` if ``e^(log p + x)`` overflows)."""
  x = u / temperature
  small = jnp.abs(x) < _TAYLOR
  x_small = jnp.where(small, x, 0)
  series = 0.0
  for n in range(9, -1, -1):  # Horner; the next term is below 1e-11 relative for |x| < 0.5
    series = series * x_small + 1.0 / math.factorial(n + 2)
  p = jnp.exp(log_p)
  big = jnp.square(temperature) * (jnp.exp(log_p + x) - p * (1 + x))
  return jnp.where(small, p * jnp.square(u) * series, big)


def _h(y):
  r"""``h(y) = (log(1 + y) - y) / y^2 = sum_n (-1)^(n+1) y^n / (n + 2)`` for y > -1."""
  small = jnp.abs(y) < 0.1
  y_big = jnp.where(small, 0.5, y)
  y_small = jnp.where(small, y, 0)
  series = 0.0
  for n in range(9, -1, -1):
    series = series * y_small + (-1.0) ** (n + 1) / (n + 2)
  return jnp.where(small, series, (jnp.log1p(y_big) - y_big) / jnp.square(y_big))


def _centred(s, t, temperature, lse_t, c):
  """Per-class parts of ``_scaled_kl``: ``log p``, ``p``, the masks ``ok`` (teacher and
  student support) and ``gap`` (teacher only), ``u`` on ``ok`` and ``terms``, the log of
  the student's unnormalised mass ``log(p e^x)`` on ``ok``, ``(s - c) / T - lse(t / T)``
  outside the teacher's support and ``+inf`` on ``gap`` (an infinite divergence)."""
  log_p = t / temperature - lse_t
  p = jnp.exp(log_p)
  support = ~jnp.isneginf(log_p)  # NaN counts as support, so that it propagates
  gap = support & jnp.isneginf(s)
  ok = support & ~gap
  u = jnp.where(ok, jnp.where(ok, s - t, 0) - c, 0)
  a = (jnp.where(support, 0, s) - c) / temperature - lse_t
  terms = jnp.where(ok, log_p + u / temperature, jnp.where(gap, jnp.inf, a))
  return log_p, p, ok, gap, u, terms


@jax.custom_vjp
def _scaled_kl(s, t, temperature):
  r"""``T**2 * KL(softmax(t / T) || softmax(s / T))`` over the last axis, accurate for any T.

  ``temperature`` has the shape of ``s`` without its last axis, plus a trailing 1 (one
  value per row: its gradient is then per row, also under ``shard_map``).

  The textbook ``sum p (log p - log q)`` subtracts nearly equal numbers when ``p`` and
  ``q`` are close (at high temperature always: both tend to uniform), and ``T**2`` then
  magnifies the rounding (float32 was 34% off at T = 1000). Instead, with the teacher's
  support ``S = {k : p_k > 0}`` and the logit differences centred under ``p``,

  .. math::
    u_k = (s_k - t_k) - c,\quad c = \sum_{j \in S} p_j (s_j - t_j),\qquad x_k = u_k / T,

  and ``f(x) = e^x - 1 - x >= 0``, the identity
  ``lse(s/T) = lse(t/T) + c/T + log(1 + y)`` gives exactly

  .. math::
    \mathrm{KL}(p \| q) = \log(1 + y) - m,\qquad y = m + F + R,

  with ``m = sum_S p x`` (0 up to rounding, and dropped: it enters ``log(1 + y) - m`` only
  at second order, ``O(m y)``), ``F = sum_S p f(x)`` (no cancellation: every term is
  >= 0) and ``R = sum_{k not in S} exp((s_k - c)/T - lse(t/T))``, the student's mass where
  the teacher has none. For small ``y`` the ``T**2`` is folded in before rounding:

  .. math::
    T^2\,\mathrm{KL} = T^2 (F + R) + (T y)^2\, h(y),\qquad
    T^2 F = \sum_S p_k\, u_k^2\, g(u_k / T),

  with ``g(x) = f(x) / x^2`` and ``h(y) = (log(1 + y) - y) / y^2`` evaluated by their
  Taylor series near 0; otherwise ``T^2 log(1 + y)``, and only when ``T**2 (F + R)``
  overflows (the divergence is then large) the plain ``T^2 logsumexp(log p + x)``. As
  ``T -> inf`` (``g -> 1/2``, ``p -> uniform``, ``R = 0``) this gives
  ``T^2 KL -> (1 / 2C) sum_k (u_k - mean u)^2``, half the variance over classes of the
  logit differences ``s - t``.

  ``-inf`` teacher logits (classes outside ``S``) and ``-inf`` student logits outside
  ``S`` contribute nothing and get zero gradients; a ``-inf`` student logit inside ``S``
  gives ``inf``. NaN in either input gives NaN.

  Cost: four reductions over the classes (``lse(t/T)``'s max and sum, ``c``, ``F + R``);
  the gradient (``_scaled_kl_bwd``) recomputes the per-class terms from ``s``, ``t`` and
  per-row statistics instead of keeping ``[..., C]`` temporaries.
  """
  return _scaled_kl_fwd(s, t, temperature)[0]


def _log_norm_direct(s, t, temperature, lse_t, c):
  """``log(1 + y)`` as ``logsumexp(terms)`` (recomputed: no ``[..., C]`` operand kept)."""
  return jax.nn.logsumexp(_centred(s, t, temperature, lse_t, c)[-1], axis=-1, keepdims=True)


def _scaled_kl_fwd(s, t, temperature):
  lse_t = jax.nn.logsumexp(t / temperature, axis=-1, keepdims=True)
  _, p, ok, _, _, _ = _centred(s, t, temperature, lse_t, 0)
  c = jnp.sum(jnp.where(ok, p * jnp.where(ok, s - t, 0), 0), axis=-1, keepdims=True)
  log_p, p, ok, gap, u, terms = _centred(s, t, temperature, lse_t, c)
  # T^2 (F + R): +inf on a gap, or when a term overflows.
  t2_fr = jnp.sum(
    jnp.where(ok, _weighted_f(log_p, u, temperature), jnp.square(temperature) * jnp.exp(terms)),
    axis=-1,
    keepdims=True,
  )
  y = t2_fr / jnp.square(temperature)
  t_y = t2_fr / temperature
  # (Clipped to where it is used, |y| < 0.5, so that the unused branch stays finite.)
  t_y_c = jnp.clip(t_y, -0.5 * temperature, 0.5 * temperature)
  scaled = t2_fr + jnp.square(t_y_c) * _h(t_y_c / temperature)
  log1p_y = jnp.log1p(jnp.maximum(y, -0.5))
  # Only rows where T^2 (F + R) overflows (or a gap) need the plain logsumexp: skip that
  # pass over the classes when there is none. (A NaN is not inf: it stays NaN.)
  overflow = jnp.isposinf(t2_fr)
  log_norm = jax.lax.cond(
    jnp.any(overflow),
    lambda: jnp.where(overflow, _log_norm_direct(s, t, temperature, lse_t, c), log1p_y),
    lambda: log1p_y,
  )
  # log_norm = log(1 + y) = lse(s / T) - lse(t / T) - c / T, q's log normaliser over p's.
  value = jnp.where(jnp.abs(y) < 0.5, scaled, jnp.square(temperature) * log_norm)
  residuals = (s, t, temperature, lse_t, c, log_norm, value)
  return jnp.maximum(value, 0)[..., 0], residuals


def _scaled_kl_bwd(residuals, cotangent):
  r"""Gradients of ``T**2 KL``: ``T (q - p)`` in ``s``, ``-p u`` in ``t``.

  With ``z = x - log(1 + y)``, ``q = p e^z`` on the support, so ``q - p = p expm1(z)``
  without cancellation however close ``q`` is to ``p``; for ``z >= 1/2`` (no
  cancellation there) ``q - p = e^(log p + z) - p`` avoids overflowing ``expm1``.
  Outside the support ``q = e^(terms - log(1 + y))``. In ``t``,
  ``d KL / d(t_k / T) = p_k (log p_k - log q_k - KL) = p_k (m - x_k)`` with ``m = 0``.
  In ``T``, Euler's identity for the degree-2 homogeneous ``L = T**2 KL(s / T, t / T)``:
  ``dL/dT = (2 L - sum_k (s_k dL/ds_k + t_k dL/dt_k)) / T``. The value's clamp at 0 is
  straight-through (not differentiated).
  """
  s, t, temperature, lse_t, c, log_norm, value = residuals
  log_p, p, ok, gap, u, terms = _centred(s, t, temperature, lse_t, c)
  z = u / temperature - log_norm
  big = z >= 0.5
  q_minus_p = jnp.where(
    big, jnp.exp(log_p + jnp.where(big, z, 0)) - p, p * jnp.expm1(jnp.where(big, 0, z))
  )
  q_out = jnp.exp(jnp.where(gap, -jnp.inf, terms) - log_norm)
  grad_s = temperature * jnp.where(ok, q_minus_p, jnp.where(gap, -p, q_out))
  grad_t = jnp.where(ok, -p * u, 0)
  weighted = jnp.where(grad_s == 0, 0, s * grad_s) + jnp.where(grad_t == 0, 0, t * grad_t)
  ct = cotangent[..., None]
  grad_temp = (2 * value - jnp.sum(weighted, axis=-1, keepdims=True)) / temperature
  return ct * grad_s, ct * grad_t, jnp.where(ct == 0, 0, ct * grad_temp)


_scaled_kl.defvjp(_scaled_kl_fwd, _scaled_kl_bwd)


def _prepare_tempered_pair(student_logits, teacher_logits, temperature, where, axis):
  """Checked class-last logits (untempered, masked rows zeroed), row temperatures, mask.

  The temperature is broadcast to one value per row (shape ``[..., 1]``; see
  ``_scaled_kl``)."""
  s, t, mask = prepare_pair(student_logits, teacher_logits, 1.0, where, axis)
  temperature = jnp.asarray(check_temperature(temperature), s.dtype)
  return s, t, temperature + jnp.zeros_like(s[..., :1]), mask


# ----------------------------------------------------------------------------------------
# Divergences between the teacher's and the student's class distributions.


def kl_divergence(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Forward KL divergence from the teacher to the student, per example.

  .. math::
    \mathrm{KL}(p \,\|\, q) = \sum_k p_k (\log p_k - \log q_k),\quad
    p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T).

  Mass-covering (mean-seeking) KL, the divergence of Hinton et al. (2015) "Distilling the
  Knowledge in a Neural Network" without the ``T**2`` factor (see ``kd_loss``, whose
  centred computation it shares: accurate also when ``p`` and ``q`` are close).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences (float32 or wider). Infinite only when the
    teacher gives mass to a class the student gives none (a ``-inf`` student logit).
  """
  s, t, temperature, mask = _prepare_tempered_pair(
    student_logits, teacher_logits, temperature, where, axis
  )
  return apply_mask(_scaled_kl(s, t, temperature) / jnp.square(temperature[..., 0]), mask)


def reverse_kl(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Reverse KL divergence from the student to the teacher, per example.

  .. math::
    \mathrm{KL}(q \,\|\, p) = \sum_k q_k (\log q_k - \log p_k),\quad
    p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T).

  Mode-seeking KL used for generative-model distillation, e.g. Gu et al. (2024) "MiniLLM:
  Knowledge Distillation of Large Language Models"; Agarwal et al. (2024) "On-Policy
  Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD).
  Computed from centred logit differences as ``kd_loss`` (with the roles swapped).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences. Infinite only when the student gives mass to a
    class the teacher gives none.
  """
  s, t, temperature, mask = _prepare_tempered_pair(
    student_logits, teacher_logits, temperature, where, axis
  )
  return apply_mask(_scaled_kl(t, s, temperature) / jnp.square(temperature[..., 0]), mask)


def kd_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Hinton knowledge-distillation loss, per example.

  .. math::
    T^2 \, \mathrm{KL}\big(\mathrm{softmax}(t / T) \,\|\, \mathrm{softmax}(s / T)\big)

  The ``T**2`` factor keeps the gradient magnitude independent of ``T``. It is computed
  from logit differences centred under the teacher (see ``_scaled_kl`` in this module),
  so that float32 stays within 1e-4 relative of float64 for T in [1e-2, 1e4]; the naive
  ``T**2 * sum p (log p - log q)`` cancels catastrophically as ``p`` and ``q`` approach
  uniform. As ``T -> inf`` the loss tends to
  :math:`\frac{1}{2C}\sum_k (\Delta_k - \bar\Delta)^2` with ``Delta = s - t`` over the
  ``C`` classes (half the variance of the logit differences, the logit-matching limit of
  Hinton et al.).

  Reference: Hinton, Vinyals & Dean (2015) "Distilling the Knowledge in a Neural Network".

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``, finite (a ValueError otherwise; a traced
      ``T <= 0`` gives NaN).
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example losses.
  """
  s, t, temperature, mask = _prepare_tempered_pair(
    student_logits, teacher_logits, temperature, where, axis
  )
  return apply_mask(_scaled_kl(s, t, temperature), mask)


def generalized_jsd(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  beta: ArrayLike = 0.5,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Generalized Jensen-Shannon divergence JSD(beta) of GKD, per example.

  .. math::
    \mathrm{JSD}(\beta) = \beta\, \mathrm{KL}(p \,\|\, m) + (1 - \beta)\, \mathrm{KL}(q \,\|\, m),
    \quad m = \beta p + (1 - \beta) q,

  with ``p`` the teacher and ``q`` the student distribution at temperature ``T``;
  ``log m`` is computed with ``logaddexp``. This is the paper's unnormalised definition,
  continuous in ``beta`` on [0, 1]. Endpoints: it tends to 0 at both ends and is exactly
  0 at ``beta = 0`` and ``beta = 1``; near them it behaves like
  ``JSD(beta) = beta * KL(p || q) + O(beta**2)`` and
  ``JSD(beta) = (1 - beta) * KL(q || p) + O((1 - beta)**2)``, so ``JSD(beta) / beta``
  tends to the forward KL and ``JSD(beta) / (1 - beta)`` to the reverse KL (the
  normalised variant some GKD implementations use). Bounded by ``h(beta)``, the binary
  entropy, so it stays finite for ``-inf`` logits anywhere.

  Reference: Agarwal et al. (2024) "On-Policy Distillation of Language Models: Learning
  from Self-Generated Mistakes" (ICLR).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    beta: interpolation weight in [0, 1] (a Python float or a traced scalar).
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  beta, interior = interior_weight("beta", beta, s.dtype)
  log_p, log_q = jax.nn.log_softmax(t), jax.nn.log_softmax(s)
  log_m = log_mixture(log_p, log_q, beta)
  jsd = beta * kl_from_log_probs(log_p, log_m) + (1 - beta) * kl_from_log_probs(log_q, log_m)
  # At the endpoints the value is 0, but a NaN (from a NaN or +inf logit) still shows.
  return apply_mask(jnp.where(interior | jnp.isnan(jsd), jsd, 0), mask)


def total_variation(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Total variation distance between teacher and student, per example.

  .. math::
    \mathrm{TV}(p, q) = \tfrac12 \sum_k |p_k - q_k|,\quad
    p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T).

  Used as a distillation divergence in Wen et al. (2023) "f-Divergence Minimization for
  Sequence-Level Knowledge Distillation" and Agarwal et al. (2024) (GKD).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example distances in [0, 1].
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  d = jax.nn.softmax(t) - jax.nn.softmax(s)
  # |d| written as d * sign(d): the same value, with the gradient sign(d), which is NaN for a
  # NaN d (jnp.abs's gradient is -1 there: a NaN teacher gave a finite student gradient)
  # and 0 at d = 0 (a subgradient).
  tv = 0.5 * jnp.sum(d * jnp.sign(d), axis=-1)
  return apply_mask(tv, mask)


def skew_kl(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  alpha: ArrayLike = 0.1,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Skew KL divergence of DistiLLM, per example.

  .. math::
    \mathrm{SKL}^{(\alpha)}(p, q) = \mathrm{KL}\big(p \,\|\, \alpha p + (1 - \alpha) q\big),

  with ``p`` the teacher and ``q`` the student at temperature ``T``. ``alpha = 0`` gives
  the forward KL, ``alpha = 1`` gives 0; for ``alpha > 0`` it is at most ``-log(alpha)``,
  hence finite even where the student has ``-inf`` logits.

  Reference: Ko et al. (2024) "DistiLLM: Towards Streamlined Distillation for Large
  Language Models" (ICML).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    alpha: skew weight in [0, 1] (the paper uses 0.1).
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  check_unit_interval("alpha", alpha)
  alpha = jnp.asarray(alpha, s.dtype)
  log_p, log_q = jax.nn.log_softmax(t), jax.nn.log_softmax(s)
  loss = kl_from_log_probs(log_p, log_mixture(log_p, log_q, alpha))
  return apply_mask(loss, mask)


def skew_reverse_kl(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  alpha: ArrayLike = 0.1,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Skew reverse KL divergence of DistiLLM, per example.

  .. math::
    \mathrm{SRKL}^{(\alpha)}(q, p) = \mathrm{KL}\big(q \,\|\, (1 - \alpha) p + \alpha q\big),

  with ``p`` the teacher and ``q`` the student at temperature ``T``. ``alpha = 0`` gives
  the reverse KL, ``alpha = 1`` gives 0; for ``alpha > 0`` it is at most ``-log(alpha)``.

  Reference: Ko et al. (2024) "DistiLLM: Towards Streamlined Distillation for Large
  Language Models" (ICML).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    alpha: skew weight in [0, 1] (the paper uses 0.1).
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  check_unit_interval("alpha", alpha)
  alpha = jnp.asarray(alpha, s.dtype)
  log_p, log_q = jax.nn.log_softmax(t), jax.nn.log_softmax(s)
  loss = kl_from_log_probs(log_q, log_mixture(log_q, log_p, alpha))
  return apply_mask(loss, mask)


def soft_cross_entropy(
  student_logits: ArrayLike,
  target_probs: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Cross-entropy of the student against soft targets, per example.

  .. math::
    H(y, q) = -\sum_k y_k \log q_k,\quad q = \mathrm{softmax}(s / T),

  with ``0 log 0 = 0``. Used with the targets of ``dkpp_targets`` and
  ``ground_truth_weighted_targets``; with one-hot ``y`` it is the usual cross-entropy.
  Targets are not renormalised.

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    target_probs: same shape, non-negative target probabilities.
    temperature: softmax temperature ``T > 0`` of the student.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example cross-entropies.
  """
  s, y, mask = prepare_pair(
    student_logits, target_probs, 1.0, where, axis, other_name="target_probs"
  )
  temperature = check_temperature(temperature)
  log_q = jax.nn.log_softmax(s / temperature)
  support = y != 0  # NaN targets propagate
  terms = jnp.where(support, y * jnp.where(support, log_q, 0), 0)
  return apply_mask(-jnp.sum(terms, axis=-1), mask)
