"""Logit-level KD methods beyond a plain divergence: Decoupled KD, logit standardisation
and DIST (pure jax.numpy, no state).

Same conventions as :mod:`kdjax.losses.logits`: ``[..., num_classes]`` logits, class
axis ``axis``, keyword-only hyper-parameters, an optional boolean ``where`` mask over
examples, float32 (or wider) outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.checks import check_nonnegative
from kdjax.losses._common import (
  apply_mask,
  check_temperature,
  class_last,
  compute_dtype,
  kl_from_log_probs,
  prepare_labels,
  prepare_pair,
  real_array,
)
from kdjax.losses.reductions import masked_mean

__all__ = [
  "dkd_loss",
  "standardize_logits",
  "standardized_kd_loss",
  "dist_inter_class_loss",
  "dist_intra_class_loss",
  "dist_loss",
]


# ----------------------------------------------------------------------------------------
# Decoupled KD.


def _masked_logsumexp(x, keep):
  """logsumexp over the last axis of the kept entries; -inf with zero gradient if none."""
  x = jnp.where(keep, x, -jnp.inf)
  nonempty = jnp.any(~jnp.isneginf(x), axis=-1, keepdims=True)  # NaN propagates
  lse = jax.nn.logsumexp(jnp.where(nonempty, x, 0), axis=-1, keepdims=True)
  return jnp.where(nonempty, lse, -jnp.inf)


def _masked_log_softmax(x, keep):
  """log_softmax over the kept entries of the last axis (-inf elsewhere, and for rows
  with no finite kept entry)."""
  lse = _masked_logsumexp(x, keep)
  nonempty = ~jnp.isneginf(lse)
  return jnp.where(keep & nonempty, x - jnp.where(nonempty, lse, 0), -jnp.inf)


def dkd_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  labels: ArrayLike,
  *,
  alpha: ArrayLike = 1.0,
  beta: ArrayLike = 8.0,
  temperature: ArrayLike = 4.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Decoupled knowledge distillation (TCKD + NCKD), per example.

  With ``g`` the label, ``p = softmax(t / T)``, ``q = softmax(s / T)``, the binary
  target/non-target distributions ``b = [p_g, 1 - p_g]`` and the distributions over the
  non-target classes ``\hat p_k = p_k / (1 - p_g)`` (``k != g``):

  .. math::
    \mathrm{DKD} = T^2 \big(\alpha\, \mathrm{KL}(b^t \,\|\, b^s)
                   + \beta\, \mathrm{KL}(\hat p^t \,\|\, \hat p^s)\big).

  All terms are computed from log-probabilities (``log(1 - p_g)`` as a logsumexp over the
  non-target classes), so one-hot teachers give no NaN; NCKD is 0 when the teacher puts
  no mass outside the label. The reference code's ``-1000 * gt_mask`` trick is replaced
  by an exact exclusion of the target class.

  Reference: Zhao, Cui, Song, Qiu & Liang (2022) "Decoupled Knowledge Distillation"
  (CVPR).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    labels: ``[...]`` integer class ids (range-checked when concrete).
    alpha: weight of TCKD, ``>= 0``.
    beta: weight of NCKD, ``>= 0``.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` per-example losses.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  check_nonnegative("alpha", alpha)
  check_nonnegative("beta", beta)
  labels = prepare_labels(labels, s.shape[:-1], s.shape[-1], mask)
  is_target = labels[..., None] == jnp.arange(s.shape[-1])

  def binary(log_probs):
    log_target = jnp.sum(jnp.where(is_target, log_probs, 0), axis=-1, keepdims=True)
    return jnp.concatenate([log_target, _masked_logsumexp(log_probs, ~is_target)], -1)

  log_p, log_q = jax.nn.log_softmax(t), jax.nn.log_softmax(s)
  tckd = kl_from_log_probs(binary(log_p), binary(log_q))
  nckd = kl_from_log_probs(_masked_log_softmax(t, ~is_target), _masked_log_softmax(s, ~is_target))
  loss = jnp.square(jnp.asarray(temperature, s.dtype)) * (alpha * tckd + beta * nckd)
  return apply_mask(loss, mask)


# ----------------------------------------------------------------------------------------
# Logit standardisation.


def _standardize_last(z, eps):
  """Standardises the finite entries of the last axis; -inf entries stay -inf."""
  finite = ~jnp.isneginf(z)  # NaN is kept, so that it propagates
  count = jnp.maximum(jnp.sum(finite, axis=-1, keepdims=True), 1).astype(z.dtype)
  mean = jnp.sum(jnp.where(finite, z, 0), axis=-1, keepdims=True) / count
  centred = jnp.where(finite, z - mean, 0)
  var = jnp.sum(jnp.square(centred), axis=-1, keepdims=True) / count
  std = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1)), 0)
  return jnp.where(finite, centred / (std + eps), -jnp.inf)


def standardize_logits(logits: ArrayLike, *, axis: int = -1, eps: float = 1e-7) -> jax.Array:
  r"""Z-score standardisation of logits along the class axis.

  .. math::
    \mathcal{Z}(z)_k = \frac{z_k - \bar z}{\sigma(z) + \epsilon},\quad
    \bar z = \frac1K \sum_k z_k,\ \sigma(z) = \sqrt{\frac1K \sum_k (z_k - \bar z)^2}.

  The population standard deviation of the paper's formula (the authors' code uses the
  unbiased one, a constant factor ``sqrt(K / (K - 1))`` that a temperature absorbs).
  ``-inf`` logits are treated as absent classes: excluded from the statistics and kept
  at ``-inf``. A constant row maps to zeros.

  Reference: Sun, Ren, Li, Wang & Cao (2024) "Logit Standardization in Knowledge
  Distillation" (CVPR).

  Args:
    logits: ``[..., num_classes]`` logits.
    axis: the class axis.
    eps: added to the standard deviation.

  Returns:
    Standardised logits of the same shape (float32 or wider).
  """
  z = real_array(logits, "logits")
  check_nonnegative("eps", eps)
  z = class_last(z.astype(compute_dtype(z)), axis)
  return jnp.moveaxis(_standardize_last(z, eps), -1, axis)


def standardized_kd_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
  eps: float = 1e-7,
) -> jax.Array:
  r"""KD loss on standardised logits (logit standardisation pre-process), per example.

  .. math::
    T^2\, \mathrm{KL}\big(\mathrm{softmax}(\mathcal{Z}(t) / T) \,\|\,
                          \mathrm{softmax}(\mathcal{Z}(s) / T)\big),

  with ``Z`` of ``standardize_logits``: the student matches the teacher's logit
  *relations* rather than their magnitude (the paper's "base temperature" is ``T``).

  Reference: Sun, Ren, Li, Wang & Cao (2024) "Logit Standardization in Knowledge
  Distillation" (CVPR).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: base temperature ``T > 0`` applied after standardisation.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.
    eps: added to the standard deviation.

  Returns:
    ``[...]`` per-example losses.
  """
  check_nonnegative("eps", eps)
  s, t, mask = prepare_pair(student_logits, teacher_logits, 1.0, where, axis)
  temperature = check_temperature(temperature)
  s = _standardize_last(s, eps) / temperature
  t = _standardize_last(t, eps) / temperature
  kl = kl_from_log_probs(jax.nn.log_softmax(t), jax.nn.log_softmax(s))
  return apply_mask(jnp.square(jnp.asarray(temperature, kl.dtype)) * kl, mask)


# ----------------------------------------------------------------------------------------
# DIST: correlation-based relational KD.


def _pearson_last(a, b, keep, eps):
  """Pearson correlation over the last axis restricted to ``keep`` entries."""
  count = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1).astype(a.dtype)

  def centre(x):
    return jnp.where(keep, x - jnp.sum(jnp.where(keep, x, 0), -1, keepdims=True) / count, 0)

  def norm(x):
    sq = jnp.sum(jnp.square(x), axis=-1)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)

  a, b = centre(a), centre(b)
  return jnp.sum(a * b, axis=-1) / (norm(a) * norm(b) + eps)


def dist_inter_class_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
  eps: float = 1e-8,
) -> jax.Array:
  r"""DIST inter-class relation loss, per example.

  .. math::
    1 - \rho\big(q_{i,:},\, p_{i,:}\big),\quad
    \rho(u, v) = \frac{\sum_k (u_k - \bar u)(v_k - \bar v)}
                      {\lVert u - \bar u\rVert\, \lVert v - \bar v\rVert + \epsilon},

  the Pearson correlation over classes of ``q = softmax(s / T)`` and
  ``p = softmax(t / T)``, in [0, 2].

  Reference: Huang, You, Wang, Qian & Xu (2022) "Knowledge Distillation from A Stronger
  Teacher" (NeurIPS).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis); False examples give 0 and a zero gradient. Unlike
      optax's ``where``, which masks elements (classes), it masks whole examples.
    axis: the class axis.
    eps: added to the denominator of the correlation.

  Returns:
    ``[...]`` per-example losses.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  rho = _pearson_last(jax.nn.softmax(s), jax.nn.softmax(t), jnp.ones(s.shape, bool), eps)
  return apply_mask(1 - rho, mask)


def dist_intra_class_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
  eps: float = 1e-8,
) -> jax.Array:
  r"""DIST intra-class relation loss, per class.

  .. math::
    1 - \rho\big(q_{:,k},\, p_{:,k}\big),

  the Pearson correlation (see ``dist_inter_class_loss``) of class ``k``'s probability
  across the examples of the batch. All axes but the class axis are examples; masked
  examples are left out of the correlation. This term relates examples to each other,
  so it is reduced over the batch by construction.

  Reference: Huang, You, Wang, Qian & Xu (2022) "Knowledge Distillation from A Stronger
  Teacher" (NeurIPS).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis), selecting the examples. Unlike optax's ``where``, which
      masks elements (classes), it masks whole examples.
    axis: the class axis.
    eps: added to the denominator of the correlation.

  Returns:
    ``[num_classes]`` per-class losses.
  """
  s, t, mask = prepare_pair(student_logits, teacher_logits, temperature, where, axis)
  num_classes = s.shape[-1]
  q = jax.nn.softmax(s).reshape(-1, num_classes).T
  p = jax.nn.softmax(t).reshape(-1, num_classes).T
  keep = jnp.ones(q.shape, bool) if mask is None else jnp.broadcast_to(mask.reshape(1, -1), q.shape)
  # A class seen in no example has loss 0 (the empty-mean rule of kdjax.losses.reductions).
  return jnp.where(jnp.any(keep, axis=-1), 1 - _pearson_last(q, p, keep, eps), 0)


def dist_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  beta: ArrayLike = 1.0,
  gamma: ArrayLike = 1.0,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
  eps: float = 1e-8,
) -> jax.Array:
  r"""DIST loss: inter-class plus intra-class relation matching (a batch scalar).

  .. math::
    \mathcal{L}_{\mathrm{DIST}} = \beta T^2 \frac{1}{B}\sum_i \big(1 - \rho(q_{i,:}, p_{i,:})\big)
      + \gamma T^2 \frac{1}{K}\sum_k \big(1 - \rho(q_{:,k}, p_{:,k})\big).

  The intra-class term couples the examples, so unlike the other losses here this one
  returns a scalar; ``dist_inter_class_loss`` and ``dist_intra_class_loss`` give the
  unreduced parts. Masked examples are excluded from both means.

  Reference: Huang, You, Wang, Qian & Xu (2022) "Knowledge Distillation from A Stronger
  Teacher" (NeurIPS).

  Args:
    student_logits: ``[..., num_classes]`` student logits.
    teacher_logits: same shape, teacher logits.
    beta: weight of the inter-class term, ``>= 0``.
    gamma: weight of the intra-class term, ``>= 0``.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis), selecting the examples. Unlike optax's ``where``, which
      masks elements (classes), it masks whole examples.
    axis: the class axis.
    eps: added to the denominators of the correlations.

  Returns:
    A scalar.
  """
  check_nonnegative("beta", beta)
  check_nonnegative("gamma", gamma)
  kwargs = dict(temperature=temperature, where=where, axis=axis, eps=eps)
  inter = dist_inter_class_loss(student_logits, teacher_logits, **kwargs)
  intra = dist_intra_class_loss(student_logits, teacher_logits, **kwargs)
  inter = masked_mean(inter, where)
  return jnp.square(jnp.asarray(temperature, inter.dtype)) * (
    beta * inter + gamma * jnp.mean(intra)
  )
