r"""Per-example training objectives from configs: supervised, KD, born-again, self-distillation.

An objective is ``objective(student_logits, teacher_logits, labels, rng) -> [batch, ...]``
(one loss per example, or per token for sequences); ``teacher_logits`` is None for
supervised training and ``rng`` is the step's key (used by DKPP). Divergences come from
the one loss registry, ``kdjax.losses.get(name)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from kdjax import losses

Objective = Callable[[jax.Array, jax.Array | None, jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Per-example softmax cross-entropy with integer labels, :math:`-\log \mathrm{softmax}(z)_y`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def supervised(label_smoothing: float = 0.0) -> Objective:
  r"""Cross-entropy to the labels, optionally smoothed (Szegedy et al. (2016), "Rethinking
  the Inception architecture"): target :math:`(1-\epsilon)\,e_y + \epsilon/K`."""
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

  def objective(student_logits, teacher_logits, labels, rng):
    del teacher_logits, rng
    if label_smoothing == 0.0:
      return cross_entropy(student_logits, labels)
    k = student_logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, k), label_smoothing)
    return optax.softmax_cross_entropy(student_logits.astype(jnp.float32), targets)

  return objective


def divergence(name: str) -> Callable:
  """The loss ``kdjax.losses.get(name)`` (it takes student and teacher logits)."""
  try:
    return losses.get(name)
  except ValueError as err:
    raise ValueError(f"config.kd.loss: {err}") from None


def distillation(
  loss: str = "kd_loss",
  loss_kwargs: Mapping[str, Any] | None = None,
  *,
  kd_weight: float = 1.0,
  ce_weight: float = 0.0,
) -> Objective:
  r"""Knowledge distillation from a frozen teacher plus an optional label term.

  .. math::
    \ell = w_{kd}\, D\big(z^{s}, z^{t}\big) + w_{ce}\, \mathrm{CE}(z^{s}, y)

  with ``D = kdjax.losses.get(loss)(**loss_kwargs)`` (e.g. ``kd_loss`` with ``temperature``:
  Hinton, Vinyals & Dean (2015), "Distilling the knowledge in a neural network").
  Losses that take ``labels`` (e.g. ``dkd_loss``) receive them.
  """
  fn = divergence(loss)
  kwargs = dict(loss_kwargs or {})
  parameters = inspect.signature(fn).parameters
  unknown = sorted(set(kwargs) - set(parameters))
  if unknown:
    raise ValueError(
      f"kd.loss_kwargs {unknown} are not arguments of kdjax.losses.{loss} "
      f"(it takes {sorted(p for p in parameters if p not in ('student_logits', 'teacher_logits'))})"
    )
  takes_labels = "labels" in parameters

  def objective(student_logits, teacher_logits, labels, rng):
    del rng
    if teacher_logits is None:
      raise ValueError("a distillation objective needs teacher logits")
    extra = {"labels": labels} if takes_labels else {}
    value = kd_weight * fn(student_logits, teacher_logits, **extra, **kwargs)
    if ce_weight:
      value = value + ce_weight * cross_entropy(student_logits, labels)
    return value

  return objective


def born_again(
  weighting: str = "none", temperature: float = 1.0, ce_weight: float = 0.0
) -> Objective:
  r"""The loss of a born-again generation (its teacher: the previous generation).

  * ``'none'``: :math:`H(\mathrm{softmax}(z^t/T), \mathrm{softmax}(z^s/T))`, the BAN loss;
  * ``'cwtm'``: confidence-weighted-by-teacher-max label loss
    :math:`w_i\,\mathrm{CE}(z^s_i, y_i)` with :math:`w_i \propto \max_k p^t_{ik}`
    (``kdjax.losses.cwtm_weights``);
  * ``'dkpp'``: soft cross-entropy to the teacher's probabilities with the non-argmax
    entries randomly permuted (``kdjax.losses.dkpp_targets``);

  plus ``ce_weight * CE(z^s, y)`` for 'none' and 'dkpp'. Furlanello, Lipton, Tschannen,
  Itti & Anandkumar (2018), "Born again neural networks".
  """
  if weighting not in ("none", "cwtm", "dkpp"):
    raise ValueError(f"born_again.weighting must be 'none', 'cwtm' or 'dkpp', got {weighting!r}")

  def objective(student_logits, teacher_logits, labels, rng):
    if weighting == "cwtm":
      weights = losses.cwtm_weights(teacher_logits, temperature=temperature)
      return weights * cross_entropy(student_logits, labels)
    if weighting == "dkpp":
      targets = losses.dkpp_targets(rng, teacher_logits, temperature=temperature)
    else:
      targets = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    value = losses.soft_cross_entropy(student_logits, targets, temperature=temperature)
    if ce_weight:
      value = value + ce_weight * cross_entropy(student_logits, labels)
    return value

  return objective


def self_distillation(alpha: float = 0.5, temperature: float = 1.0) -> Objective:
  r"""Cross-entropy to ground-truth-weighted targets (teacher: the previous generation).

  .. math::
    \ell = H\big((1-\alpha)\,e_y + \alpha\,\mathrm{softmax}(z^t/T),\ \mathrm{softmax}(z^s)\big)

  ``alpha = 1`` is pure self-distillation, ``alpha = 0`` supervised training. Borup &
  Andersen (2021), "Even your teacher needs guidance: ground-truth targets dampen
  regularization imposed by self-distillation" (``kdjax.losses.ground_truth_weighted_targets``).
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"self_distill.alpha must be in [0, 1], got {alpha}")

  def objective(student_logits, teacher_logits, labels, rng):
    del rng
    targets = losses.ground_truth_weighted_targets(
      teacher_logits, labels, alpha=alpha, temperature=temperature
    )
    return losses.soft_cross_entropy(student_logits, targets)

  return objective
