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

import jax
import jax.numpy as jnp

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
# Divergences between the teacher's and the student's class distributions.


def kl_divergence(student_logits, teacher_logits, *, temperature=1.0, where=None, axis=-1):
  r"""Forward KL divergence from the teacher to the student, per example.

  .. math::
    \mathrm{KL}(p \,\|\, q) = \sum_k p_k (\log p_k - \log q_k),\quad
    p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T).

  Mass-covering (mean-seeking) KL, the divergence of Hinton et al. (2015) "Distilling the
  Knowledge in a Neural Network" without the ``T**2`` factor (see ``kd_loss``).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask of shape ``[...]``; False examples give 0.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences (float32 or wider). Infinite only when the
    teacher gives mass to a class the student gives none (a ``-inf`` student logit).
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  loss = kl_from_log_probs(jax.nn.log_softmax(t), jax.nn.log_softmax(s))
  return apply_mask(loss, mask)


def reverse_kl(student_logits, teacher_logits, *, temperature=1.0, where=None, axis=-1):
  r"""Reverse KL divergence from the student to the teacher, per example.

  .. math::
    \mathrm{KL}(q \,\|\, p) = \sum_k q_k (\log q_k - \log p_k),\quad
    p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T).

  Mode-seeking KL used for generative-model distillation, e.g. Gu et al. (2024) "MiniLLM:
  Knowledge Distillation of Large Language Models"; Agarwal et al. (2024) "On-Policy
  Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask of shape ``[...]``; False examples give 0.
    axis: the class axis.

  Returns:
    ``[...]`` per-example divergences. Infinite only when the student gives mass to a
    class the teacher gives none.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  loss = kl_from_log_probs(jax.nn.log_softmax(s), jax.nn.log_softmax(t))
  return apply_mask(loss, mask)


def kd_loss(student_logits, teacher_logits, *, temperature=1.0, where=None, axis=-1):
  r"""Hinton knowledge-distillation loss, per example.

  .. math::
    T^2 \, \mathrm{KL}\big(\mathrm{softmax}(t / T) \,\|\, \mathrm{softmax}(s / T)\big)

  The ``T**2`` factor keeps the gradient magnitude independent of ``T``. Reference:
  Hinton, Vinyals & Dean (2015) "Distilling the Knowledge in a Neural Network".

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask of shape ``[...]``; False examples give 0.
    axis: the class axis.

  Returns:
    ``[...]`` per-example losses.
  """
  kl = kl_divergence(
    student_logits, teacher_logits, temperature=temperature, where=where, axis=axis
  )
  return jnp.square(jnp.asarray(temperature, kl.dtype)) * kl


def generalized_jsd(
  student_logits, teacher_logits, *, beta=0.5, temperature=1.0, where=None, axis=-1
):
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
    where: optional boolean mask of shape ``[...]``; False examples give 0.
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


def total_variation(student_logits, teacher_logits, *, temperature=1.0, where=None, axis=-1):
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
    where: optional boolean mask of shape ``[...]``; False examples give 0.
    axis: the class axis.

  Returns:
    ``[...]`` per-example distances in [0, 1].
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  tv = 0.5 * jnp.sum(jnp.abs(jax.nn.softmax(t) - jax.nn.softmax(s)), axis=-1)
  return apply_mask(tv, mask)


def skew_kl(student_logits, teacher_logits, *, alpha=0.1, temperature=1.0, where=None, axis=-1):
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
    where: optional boolean mask of shape ``[...]``; False examples give 0.
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
  student_logits, teacher_logits, *, alpha=0.1, temperature=1.0, where=None, axis=-1
):
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
    where: optional boolean mask of shape ``[...]``; False examples give 0.
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


def soft_cross_entropy(student_logits, target_probs, *, temperature=1.0, where=None, axis=-1):
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
    where: optional boolean mask of shape ``[...]``; False examples give 0.
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
