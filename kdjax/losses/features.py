"""Feature-level knowledge-distillation losses (pure ``jax.numpy``).

Two kinds of loss live here:

* **Point-wise** losses compare the student's and the teacher's features of the same
  example and return one value per example (shape ``[batch]``): FitNets hints and
  attention transfer.
* **Relational** losses compare the *structure of a batch* (pairwise distances, angles,
  similarities, kernels) and are only defined on the batch as a whole, so they return a
  scalar: relational KD (distance, angle), PKT, similarity-preserving KD and CKA.

Relational losses take ``[batch, ...]`` features and flatten everything after the batch
axis, so the student's and teacher's feature widths may differ.

Every loss is safe for all-zero features (no NaN in values or gradients): norms and
square roots go through :func:`safe_norm`, and divisions by quantities that can be zero
are guarded with ``eps`` (documented per function, default ``1e-8``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kdjax.losses._common import real_array

__all__ = [
  "safe_norm",
  "fitnets_loss",
  "attention_map",
  "attention_transfer_loss",
  "rkd_distance_loss",
  "rkd_angle_loss",
  "pkt_loss",
  "similarity_preserving_loss",
  "linear_cka",
  "rbf_cka",
  "cka_loss",
]

_EPS = 1e-8


def _flatten_batch(x: jax.Array, name: str) -> jax.Array:
  """Returns ``x`` as ``[batch, features]``; raises ValueError for scalars/vectors."""
  x = real_array(x, name)
  if x.ndim < 2:
    raise ValueError(
      f"{name} must have shape [batch, ...] with at least 2 dims, got shape {x.shape}"
    )
  return x.reshape(x.shape[0], -1)


def _flatten_pair(
  a, b, names=("student_features", "teacher_features"), rows="batch size"
) -> tuple[jax.Array, jax.Array]:
  """Both arrays as ``[batch, features]``; raises unless their batch sizes agree."""
  a, b = _flatten_batch(a, names[0]), _flatten_batch(b, names[1])
  if a.shape[0] != b.shape[0]:
    raise ValueError(
      f"{names[0]} and {names[1]} must have the same {rows}, got {a.shape[0]} and {b.shape[0]}"
    )
  return a, b


def _smooth_l1(x: jax.Array) -> jax.Array:
  """Huber loss with threshold 1: ``x^2 / 2`` if ``|x| <= 1`` else ``|x| - 1/2``."""
  abs_x = jnp.abs(x)
  return jnp.where(abs_x <= 1.0, 0.5 * x * x, abs_x - 0.5)


def safe_norm(x: ArrayLike, axis=-1, keepdims: bool = False) -> jax.Array:
  r"""Euclidean norm whose gradient is 0 (not NaN) at the zero vector.

  .. math::
    \|x\|_2 = \sqrt{\textstyle\sum_i x_i^2}

  ``jnp.linalg.norm`` has an undefined (NaN) gradient at ``x = 0``; this version takes
  the square root only where the squared norm is positive.

  Args:
    x: array of any shape.
    axis: axis or axes to reduce.
    keepdims: keep the reduced axes with size 1.

  Returns:
    The norms, ``x``'s shape without ``axis`` (unless ``keepdims``).
  """
  squared = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _normalize(x: jax.Array, axis=-1, eps: float = _EPS) -> jax.Array:
  """``x / max(||x||, eps)`` along ``axis`` (zero vectors stay zero)."""
  return x / jnp.maximum(safe_norm(x, axis=axis, keepdims=True), eps)


def fitnets_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  regressor: Callable[[jax.Array], jax.Array] | None = None,
  where: ArrayLike | None = None,
) -> jax.Array:
  r"""FitNets hint loss: squared distance between teacher hint and regressed student.

  .. math::
    \mathcal{L}_{HT}(x) = \tfrac12 \,\| u_h(x) - r(v_g(x)) \|_2^2

  where :math:`u_h` is the teacher's hint layer, :math:`v_g` the student's guided layer
  and :math:`r` the regressor that maps the student's features to the teacher's shape.

  Reference: Romero, Ballas, Kahou, Chassang, Gatta, Bengio (2015), "FitNets: Hints for
  Thin Deep Nets", ICLR.

  Args:
    student_features: ``[batch, ...]`` student features (the guided layer's output).
    teacher_features: ``[batch, ...]`` teacher hint features.
    regressor: optional callable ``r`` applied to ``student_features`` (e.g. a bound
      flax module or a closure over its parameters, which then get gradients). Without
      it the student's features must already have the teacher's shape.
    where: optional boolean mask broadcastable to ``teacher_features``; elements where it
      is False do not contribute (e.g. padded tokens). Unlike the ``where`` of the logit
      losses, which masks whole examples, this one masks feature elements (as optax's).

  Returns:
    ``[batch]`` per-example hint losses.
  """
  student = real_array(student_features, "student_features")
  teacher = real_array(teacher_features, "teacher_features")
  if regressor is not None:
    student = regressor(student)
  if teacher.ndim < 1:
    raise ValueError("teacher_features must have a batch axis, got a scalar")
  if student.shape != teacher.shape:
    raise ValueError(
      "fitnets_loss: (regressed) student_features must have the teacher's "
      f"shape {teacher.shape}, got {student.shape}"
      + ("" if regressor is not None else "; pass a regressor")
    )
  squared = jnp.square(student - teacher)
  if where is not None:
    where = jnp.broadcast_to(jnp.asarray(where, bool), teacher.shape)
    squared = jnp.where(where, squared, 0.0)
  return 0.5 * jnp.sum(squared.reshape(teacher.shape[0], -1), axis=-1)


def attention_map(features: ArrayLike, *, p: float = 2.0, eps: float = _EPS) -> jax.Array:
  r"""Spatial attention map of NHWC features: normalised channel mean of ``|F|^p``.

  .. math::
    Q = \operatorname{vec}\Big(\tfrac1C \textstyle\sum_{c} |F_{:,:,c}|^p\Big), \qquad
    \operatorname{at}(F) = Q / \max(\|Q\|_2, \epsilon)

  Reference: Zagoruyko, Komodakis (2017), "Paying More Attention to Attention: Improving
  the Performance of Convolutional Neural Networks via Attention Transfer", ICLR.

  Args:
    features: ``[batch, height, width, channels]`` activations.
    p: exponent applied to the absolute activations (the paper uses 2).
    eps: lower bound of the norm, so an all-zero map stays zero.

  Returns:
    ``[batch, height * width]`` unit-norm attention maps.
  """
  features = real_array(features, "features")
  if features.ndim != 4:
    raise ValueError(
      "attention_map: features must be NHWC [batch, height, width, "
      f"channels], got shape {features.shape}"
    )
  abs_features = jnp.abs(features)
  if p == 2.0:
    powered = abs_features * abs_features
  else:
    positive = abs_features > 0
    powered = jnp.where(positive, jnp.where(positive, abs_features, 1.0) ** p, 0.0)
  q = jnp.mean(powered, axis=-1).reshape(features.shape[0], -1)
  return _normalize(q, axis=-1, eps=eps)


def attention_transfer_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  p: float = 2.0,
  eps: float = _EPS,
) -> jax.Array:
  r"""Attention transfer: distance between normalised spatial attention maps.

  .. math::
    \mathcal{L}_{AT} = \tfrac{1}{HW} \big\| \operatorname{at}(F_S) - \operatorname{at}(F_T)
    \big\|_2^2

  with :math:`\operatorname{at}` from :func:`attention_map`. This is the squared form
  used by the authors' code (mean over positions); the paper writes the (unsquared)
  2-norm, weighted by :math:`\beta / 2`. Channel counts may differ; spatial sizes must
  match. Sum this over the chosen layer pairs and weight it with ``beta / 2``.

  Reference: Zagoruyko, Komodakis (2017), "Paying More Attention to Attention: Improving
  the Performance of Convolutional Neural Networks via Attention Transfer", ICLR.

  Args:
    student_features: ``[batch, height, width, c_s]`` student activations (NHWC).
    teacher_features: ``[batch, height, width, c_t]`` teacher activations (NHWC).
    p: exponent of the attention map.
    eps: see :func:`attention_map`.

  Returns:
    ``[batch]`` per-example losses.
  """
  student = real_array(student_features, "student_features")
  teacher = real_array(teacher_features, "teacher_features")
  if student.ndim != 4 or teacher.ndim != 4 or student.shape[:3] != teacher.shape[:3]:
    raise ValueError(
      "attention_transfer_loss: student_features and teacher_features "
      "must be NHWC with equal batch, height and width, got shapes "
      f"{student.shape} and {teacher.shape}"
    )
  diff = attention_map(student, p=p, eps=eps) - attention_map(teacher, p=p, eps=eps)
  return jnp.mean(diff * diff, axis=-1)


def _pairwise_distances(x: jax.Array) -> jax.Array:
  """``[b, b]`` Euclidean distances of the rows of ``x`` (gradient-safe at 0)."""
  return safe_norm(x[:, None, :] - x[None, :, :], axis=-1)


def _normalized_distances(x: jax.Array, eps: float) -> jax.Array:
  """Pairwise distances divided by their mean over the off-diagonal pairs."""
  b = x.shape[0]
  distances = _pairwise_distances(x)
  mean = jnp.sum(distances) / max(b * (b - 1), 1)
  return distances / jnp.maximum(mean, eps)


def rkd_distance_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  eps: float = _EPS,
) -> jax.Array:
  r"""Relational KD, distance-wise: Huber loss between mean-normalised distances.

  .. math::
    \psi_D(x_i, x_j) = \frac{\|x_i - x_j\|_2}{\mu},\quad
    \mu = \frac{1}{b(b-1)} \sum_{i \ne j} \|x_i - x_j\|_2,\qquad
    \mathcal{L}_{RKD\text{-}D} = \frac{1}{b(b-1)} \sum_{i \ne j}
      \ell_1\big(\psi_D(t_i, t_j) - \psi_D(s_i, s_j)\big)

  with :math:`\ell_1` the Huber (smooth-L1) loss with threshold 1. Averaged over pairs
  as in the authors' code.

  Reference: Park, Kim, Lu, Cho (2019), "Relational Knowledge Distillation", CVPR.

  Args:
    student_features: ``[batch, ...]`` student embeddings (flattened per example).
    teacher_features: ``[batch, ...]`` teacher embeddings (any width).
    eps: lower bound of :math:`\mu` (all-equal embeddings give distances 0, not NaN).

  Returns:
    Scalar loss over the batch.
  """
  student, teacher = _flatten_pair(student_features, teacher_features)
  b = student.shape[0]
  diff = _normalized_distances(student, eps) - _normalized_distances(teacher, eps)
  return jnp.sum(_smooth_l1(diff)) / max(b * (b - 1), 1)


def _angles(x: jax.Array, eps: float) -> jax.Array:
  """``[b, b, b]`` cosines ``<e_ji, e_jk>`` of the angle at ``x_j`` (index order j, i, k)."""
  unit = _normalize(x[None, :, :] - x[:, None, :], axis=-1, eps=eps)  # [j, i] = x_i - x_j
  return jnp.einsum("jid,jkd->jik", unit, unit)


def rkd_angle_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  eps: float = _EPS,
) -> jax.Array:
  r"""Relational KD, angle-wise: Huber loss between cosines of triplet angles.

  .. math::
    \psi_A(x_i, x_j, x_k) = \langle e_{ij}, e_{kj} \rangle,\quad
    e_{ij} = \frac{x_i - x_j}{\|x_i - x_j\|_2},\qquad
    \mathcal{L}_{RKD\text{-}A} = \frac{1}{b^3} \sum_{i,j,k}
      \ell_1\big(\psi_A(t_i, t_j, t_k) - \psi_A(s_i, s_j, s_k)\big)

  Degenerate triplets (a repeated point) have a zero difference vector and contribute
  cosine 0 for both networks. Averaged over all :math:`b^3` triplets as in the authors'
  code. Memory is :math:`O(b^2 d + b^3)`.

  Reference: Park, Kim, Lu, Cho (2019), "Relational Knowledge Distillation", CVPR.

  Args:
    student_features: ``[batch, ...]`` student embeddings (flattened per example).
    teacher_features: ``[batch, ...]`` teacher embeddings (any width).
    eps: lower bound of the norm of a difference vector.

  Returns:
    Scalar loss over the batch.
  """
  student, teacher = _flatten_pair(student_features, teacher_features)
  return jnp.mean(_smooth_l1(_angles(student, eps) - _angles(teacher, eps)))


def _pkt_conditional(x: jax.Array, eps: float) -> jax.Array:
  """Row-conditional probabilities ``P[i, j] = p_{j|i}`` from the cosine kernel."""
  unit = _normalize(x, axis=-1, eps=eps)
  kernel = (unit @ unit.T + 1.0) / 2.0
  off_diagonal = ~jnp.eye(x.shape[0], dtype=bool)
  kernel = jnp.where(off_diagonal, kernel, 0.0)
  return kernel / jnp.maximum(jnp.sum(kernel, axis=-1, keepdims=True), eps)


def pkt_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  eps: float = _EPS,
) -> jax.Array:
  r"""Probabilistic knowledge transfer: KL between cosine-kernel neighbour distributions.

  .. math::
    K(a, b) = \tfrac12\Big(\frac{a^\top b}{\|a\|\,\|b\|} + 1\Big),\quad
    p_{j|i} = \frac{K(t_j, t_i)}{\sum_{k \ne i} K(t_k, t_i)},\quad
    q_{j|i} = \frac{K(s_j, s_i)}{\sum_{k \ne i} K(s_k, s_i)},

  .. math::
    \mathcal{L}_{PKT} = \frac1b \sum_i \sum_{j \ne i}
      p_{j|i} \log\frac{p_{j|i} + \epsilon}{q_{j|i} + \epsilon}

  The :math:`\epsilon` inside the logarithm (as in the authors' code) keeps the loss
  finite when a cosine is exactly -1. Averaged over anchors :math:`i`.

  Reference: Passalis, Tefas (2018), "Learning Deep Representations with Probabilistic
  Knowledge Transfer", ECCV.

  Args:
    student_features: ``[batch, ...]`` student embeddings (flattened per example).
    teacher_features: ``[batch, ...]`` teacher embeddings (any width).
    eps: guard of the norms, the normalisers and the logarithm.

  Returns:
    Scalar loss over the batch.
  """
  student, teacher = _flatten_pair(student_features, teacher_features)
  p = _pkt_conditional(teacher, eps)
  q = _pkt_conditional(student, eps)
  return jnp.mean(jnp.sum(p * (jnp.log(p + eps) - jnp.log(q + eps)), axis=-1))


def _row_normalized_gram(x: jax.Array, eps: float) -> jax.Array:
  gram = x @ x.T
  return _normalize(gram, axis=-1, eps=eps)


def similarity_preserving_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  eps: float = _EPS,
) -> jax.Array:
  r"""Similarity-preserving KD: squared distance between row-normalised batch Grams.

  .. math::
    G = Q Q^\top,\quad \tilde G_{i,:} = G_{i,:} / \|G_{i,:}\|_2,\qquad
    \mathcal{L}_{SP} = \frac{1}{b^2}\, \big\|\tilde G_T - \tilde G_S\big\|_F^2

  where :math:`Q` is the ``[b, features]`` reshaped activation map.

  Reference: Tung, Mori (2019), "Similarity-Preserving Knowledge Distillation", ICCV.

  Args:
    student_features: ``[batch, ...]`` student activations (flattened per example).
    teacher_features: ``[batch, ...]`` teacher activations (any width).
    eps: lower bound of the row norms (a zero row stays zero).

  Returns:
    Scalar loss over the batch.
  """
  student, teacher = _flatten_pair(student_features, teacher_features)
  b = student.shape[0]
  diff = _row_normalized_gram(teacher, eps) - _row_normalized_gram(student, eps)
  return jnp.sum(diff * diff) / (b * b)


def _centered(gram: jax.Array) -> jax.Array:
  """``H K H`` with the centring matrix ``H = I - 11^T / n``."""
  gram = gram - jnp.mean(gram, axis=0, keepdims=True)
  return gram - jnp.mean(gram, axis=1, keepdims=True)


def _cka_from_grams(gram_x: jax.Array, gram_y: jax.Array, eps: float) -> jax.Array:
  """``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (the ``(n-1)^-2`` factors cancel)."""
  cx = _centered(gram_x)
  cy = _centered(gram_y)
  hsic_xy = jnp.sum(cx * cy)
  hsic_xx = jnp.sum(cx * cx)
  hsic_yy = jnp.sum(cy * cy)
  product = hsic_xx * hsic_yy
  positive = product > eps * eps
  denominator = jnp.sqrt(jnp.where(positive, product, 1.0))
  return jnp.where(positive, hsic_xy / denominator, 0.0)


def linear_cka(x: ArrayLike, y: ArrayLike, *, eps: float = _EPS) -> jax.Array:
  r"""Linear centred kernel alignment between two representations of the same batch.

  .. math::
    \operatorname{HSIC}(K, L) = \frac{\operatorname{tr}(K H L H)}{(n-1)^2},\quad
    \operatorname{CKA}(K, L) = \frac{\operatorname{HSIC}(K, L)}
      {\sqrt{\operatorname{HSIC}(K, K)\operatorname{HSIC}(L, L)}}

  with :math:`K = X X^\top`, :math:`L = Y Y^\top` and :math:`H = I - \frac1n 11^\top`.
  Invariant to orthogonal transforms and isotropic scaling of either representation.

  Reference: Kornblith, Norouzi, Lee, Hinton (2019), "Similarity of Neural Network
  Representations Revisited", ICML.

  Args:
    x: ``[n, ...]`` first representation (flattened per example).
    y: ``[n, ...]`` second representation (any width).
    eps: a denominator below ``eps`` (a constant representation) gives CKA 0.

  Returns:
    Scalar CKA in [0, 1].
  """
  x, y = _flatten_pair(x, y, ("x", "y"), "number of rows")
  return _cka_from_grams(x @ x.T, y @ y.T, eps)


def _rbf_gram(x: jax.Array, threshold: float, eps: float) -> jax.Array:
  """``exp(-d^2 / (2 threshold^2 median(d^2)))`` over the full ``[n, n]`` matrix."""
  sq_norms = jnp.sum(x * x, axis=-1)
  sq_distances = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T), 0.0)
  sq_median = jnp.median(sq_distances)
  return jnp.exp(-sq_distances / jnp.maximum(2.0 * threshold**2 * sq_median, eps))


def rbf_cka(
  x: ArrayLike,
  y: ArrayLike,
  *,
  threshold: float = 1.0,
  eps: float = _EPS,
) -> jax.Array:
  r"""RBF-kernel centred kernel alignment.

  As :func:`linear_cka` with Gaussian kernels whose bandwidth is a fraction
  ``threshold`` of the median distance:

  .. math::
    K_{ij} = \exp\Big(-\frac{\|x_i - x_j\|^2}{2\,\theta^2\, \operatorname{median}_{k,l}
      \|x_k - x_l\|^2}\Big)

  The median is taken over all :math:`n^2` entries (diagonal included), as in the
  authors' code.

  Reference: Kornblith, Norouzi, Lee, Hinton (2019), "Similarity of Neural Network
  Representations Revisited", ICML.

  Args:
    x: ``[n, ...]`` first representation (flattened per example).
    y: ``[n, ...]`` second representation (any width).
    threshold: bandwidth :math:`\theta` as a fraction of the median distance.
    eps: lower bound of the bandwidth and of the CKA denominator.

  Returns:
    Scalar CKA in [0, 1].
  """
  x, y = _flatten_pair(x, y, ("x", "y"), "number of rows")
  if threshold <= 0:
    raise ValueError(f"threshold must be positive, got {threshold}")
  return _cka_from_grams(_rbf_gram(x, threshold, eps), _rbf_gram(y, threshold, eps), eps)


def cka_loss(
  student_features: ArrayLike,
  teacher_features: ArrayLike,
  *,
  kernel: str = "linear",
  threshold: float = 1.0,
  eps: float = _EPS,
) -> jax.Array:
  r"""CKA distillation loss: one minus the CKA between student and teacher features.

  .. math::
    \mathcal{L}_{CKA} = 1 - \operatorname{CKA}(K_S, K_T)

  Reference: Kornblith, Norouzi, Lee, Hinton (2019), "Similarity of Neural Network
  Representations Revisited", ICML.

  Args:
    student_features: ``[batch, ...]`` student features (flattened per example).
    teacher_features: ``[batch, ...]`` teacher features (any width).
    kernel: ``'linear'`` (:func:`linear_cka`) or ``'rbf'`` (:func:`rbf_cka`).
    threshold: RBF bandwidth fraction (ignored for ``'linear'``).
    eps: see :func:`linear_cka`.

  Returns:
    Scalar loss in [0, 1].
  """
  if kernel == "linear":
    return 1.0 - linear_cka(student_features, teacher_features, eps=eps)
  if kernel == "rbf":
    return 1.0 - rbf_cka(student_features, teacher_features, threshold=threshold, eps=eps)
  raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
