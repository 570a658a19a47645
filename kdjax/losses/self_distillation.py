"""Self-distillation targets and weights: born-again networks (CWTM weights, DKPP
targets) and ground-truth-weighted targets (pure jax.numpy, no state)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.checks import check_unit_interval
from kdjax.losses._common import apply_mask, prepare_labels, prepare_pair
from kdjax.losses.reductions import masked_mean

__all__ = ["cwtm_weights", "dkpp_targets", "ground_truth_weighted_targets"]


def cwtm_weights(
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Born-again CWTM per-example weights from the teacher's confidence.

  .. math::
    w_i = \frac{\max_k p_{ik}}{\frac1B \sum_j \max_k p_{jk}},\quad p = \mathrm{softmax}(t / T),

  normalised to mean 1 over the (unmasked) examples, so that
  ``masked_mean(w * cross_entropy, where)`` is the confidence-weighted-by-teacher-max
  loss on the same scale as the plain cross-entropy. The weights are constants
  (``stop_gradient``); masked examples get 0.

  Reference: Furlanello, Lipton, Tschannen, Itti & Anandkumar (2018) "Born-Again Neural
  Networks" (ICML).

  Args:
    teacher_logits: ``[..., num_classes]`` teacher logits.
    temperature: softmax temperature ``T > 0``.
    where: optional boolean mask over examples (rows), shape ``[...]`` (the logits shape
      without the class axis), selecting the examples. Unlike optax's ``where``, which
      masks elements (classes), it masks whole examples.
    axis: the class axis.

  Returns:
    ``[...]`` non-negative weights.
  """
  t, _, mask = prepare_pair(teacher_logits, teacher_logits, temperature, where, axis)
  confidence = jnp.exp(jnp.max(jax.nn.log_softmax(t), axis=-1))
  mean = masked_mean(confidence, mask)
  return jax.lax.stop_gradient(apply_mask(confidence / mean, mask))


def dkpp_targets(
  key: ArrayLike, teacher_logits: ArrayLike, *, temperature: ArrayLike = 1.0, axis: int = -1
) -> jax.Array:
  r"""Born-again DKPP targets: teacher probabilities with the non-argmax ones permuted.

  .. math::
    \tilde p_{\arg\max p} = \max_k p_k,\qquad
    \tilde p_{\pi(k)} = p_k \ \text{for } k \neq \arg\max p,

  with an independent uniformly random permutation ``pi`` of the non-argmax classes per
  example (Dark Knowledge with Permuted Predictions): it keeps the teacher's confidence
  and destroys the class-similarity information of the remaining probabilities. Train
  with ``soft_cross_entropy(student_logits, targets)``.

  Reference: Furlanello, Lipton, Tschannen, Itti & Anandkumar (2018) "Born-Again Neural
  Networks" (ICML).

  Args:
    key: a ``jax.random`` key.
    teacher_logits: ``[..., num_classes]`` teacher logits.
    temperature: softmax temperature ``T > 0``.
    axis: the class axis.

  Returns:
    Target probabilities of the same shape as ``teacher_logits``.
  """
  t, _, _ = prepare_pair(teacher_logits, teacher_logits, temperature, None, axis)
  probs = jax.nn.softmax(t)
  num_classes = t.shape[-1]
  is_top = jnp.arange(num_classes) == jnp.argmax(probs, axis=-1, keepdims=True)
  # Source order: the argmax first, then the other classes in random order.
  source = jnp.argsort(jnp.where(is_top, -1.0, jax.random.uniform(key, t.shape)), axis=-1)
  # Destination order: the argmax first, then the other classes in index order.
  destination = jnp.argsort(jnp.where(is_top, -1, jnp.arange(num_classes)), axis=-1)
  permuted = jnp.take_along_axis(
    jnp.take_along_axis(probs, source, axis=-1), jnp.argsort(destination, axis=-1), axis=-1
  )
  return jnp.moveaxis(permuted, -1, axis)


def ground_truth_weighted_targets(
  teacher_logits: ArrayLike,
  labels: ArrayLike,
  *,
  alpha: ArrayLike,
  temperature: ArrayLike = 1.0,
  axis: int = -1,
) -> jax.Array:
  r"""Self-distillation targets that mix the ground truth with the teacher.

  .. math::
    y = (1 - \alpha)\, \mathrm{onehot}(g) + \alpha\, \mathrm{softmax}(t / T).

  ``alpha = 0`` is plain supervised training, ``alpha = 1`` pure distillation. Train with
  ``soft_cross_entropy(student_logits, targets)``; see ``kdjax.theory`` for the
  closed-form effect in kernel regression.

  Reference: Borup & Andersen (2021) "Even your Teacher Needs Guidance: Ground-Truth
  Targets Dampen Regularization Imposed by Self-Distillation" (NeurIPS).

  Args:
    teacher_logits: ``[..., num_classes]`` teacher logits.
    labels: ``[...]`` integer class ids (range-checked when concrete).
    alpha: weight of the teacher in [0, 1].
    temperature: softmax temperature ``T > 0``.
    axis: the class axis.

  Returns:
    Target probabilities of the same shape as ``teacher_logits``.
  """
  t, _, _ = prepare_pair(teacher_logits, teacher_logits, temperature, None, axis)
  check_unit_interval("alpha", alpha)
  labels = prepare_labels(labels, t.shape[:-1], t.shape[-1], None)
  one_hot = jax.nn.one_hot(labels, t.shape[-1], dtype=t.dtype)
  targets = (1 - alpha) * one_hot + alpha * jax.nn.softmax(t)
  return jnp.moveaxis(targets, -1, axis)
