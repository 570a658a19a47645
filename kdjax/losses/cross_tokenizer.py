r"""Cross-tokenizer distillation: a teacher and a student whose vocabularies differ.

* :func:`uld_loss` compares two next-token distributions over *different* vocabularies
  by their sorted probability vectors (Universal Logit Distillation, Boizard et al.
  (2024)); which student position meets which teacher position is the caller's choice.
* :func:`chunk_log_likelihoods` and :func:`alm_loss` compare the likelihoods that both
  models give to the same *text chunks*: spans of bytes whose boundaries are token
  boundaries in both tokenizations (Approximate Likelihood Matching, Minixhofer et al.
  (2025)). :func:`aligned_chunks` finds those chunks from the tokens' bytes.

Everything here is pure jax.numpy (and NumPy for :func:`aligned_chunks`, which runs on the
host when batches are built), with per-example outputs and optional boolean ``where``
masks over examples, as in :mod:`kdjax.losses.logits`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from kdjax.losses._common import (
  apply_mask,
  check_temperature,
  class_last,
  compute_dtype,
  example_mask,
  nonnegative,
  real_array,
  zero_masked_rows,
)

__all__ = [
  "uld_loss",
  "aligned_chunks",
  "chunk_log_likelihoods",
  "binary_kl_from_log_probs",
  "alm_loss",
  "ALM_DIVERGENCES",
]


def uld_loss(
  student_logits: ArrayLike,
  teacher_logits: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  axis: int = -1,
) -> jax.Array:
  r"""Universal Logit Distillation loss: Wasserstein-1 between sorted probability vectors.

  .. math::
    \mathrm{ULD}(p, q) = \sum_{i=1}^{V} \big|\, p_{(i)} - q_{(i)} \big|,\qquad
    V = \max(V_S, V_T),

  where :math:`p_{(1)} \ge p_{(2)} \ge \dots` is the teacher's distribution
  ``softmax(teacher_logits / T)`` sorted in decreasing order and :math:`q_{(i)}` the
  student's, each padded with zeros to the larger vocabulary. It needs no mapping between
  the vocabularies (the sort makes it invariant to any relabelling of either one). This is
  the closed form of Boizard et al. (2024), "Towards Cross-Tokenizer Distillation: the
  Universal Logit Distillation Loss for LLMs", Eq. 5 (their optimal-transport distance
  with unit costs after sorting); they add it to the student's cross-entropy with a
  weight :math:`\lambda`.

  Args:
    student_logits: ``[..., V_S]`` student logits.
    teacher_logits: ``[..., V_T]`` teacher logits, the same leading shape (the
      vocabularies may differ).
    temperature: softmax temperature ``T > 0`` of both distributions.
    where: optional boolean mask over examples, shape ``[...]``; False gives 0 and a zero
      gradient.
    axis: the vocabulary axis.

  Returns:
    ``[...]`` per-example distances in [0, 2].
  """
  s = real_array(student_logits, "student_logits")
  t = real_array(teacher_logits, "teacher_logits")
  temperature = check_temperature(temperature)
  dtype = compute_dtype(s, t)
  s, t = class_last(s.astype(dtype), axis), class_last(t.astype(dtype), axis)
  if s.shape[:-1] != t.shape[:-1]:
    raise ValueError(
      "student_logits and teacher_logits must have the same shape but for the vocabulary "
      f"axis, got {s.shape} and {t.shape}"
    )
  s, t, mask = zero_masked_rows(s, t, where)
  size = max(s.shape[-1], t.shape[-1])

  def sorted_probs(logits):
    probs = -jnp.sort(-jax.nn.softmax(logits / temperature, axis=-1), axis=-1)
    return jnp.pad(probs, [(0, 0)] * (probs.ndim - 1) + [(0, size - probs.shape[-1])])

  return apply_mask(jnp.sum(jnp.abs(sorted_probs(t) - sorted_probs(s)), axis=-1), mask)


def aligned_chunks(
  tokens_a: Sequence[bytes], tokens_b: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  r"""The chunks of a text on whose byte boundaries two tokenizations agree.

  With :math:`e^a_1 < e^a_2 < \dots` the byte offsets where the tokens of ``a`` end (and
  likewise for ``b``), the chunk boundaries are :math:`\{0\} \cup (\{e^a\} \cap \{e^b\})`:
  chunk ``c`` is the bytes ``boundaries[c] .. boundaries[c + 1]``, made of whole tokens
  in both tokenizations (Minixhofer et al. (2025), "Universal Cross-Tokenizer
  Distillation via Approximate Likelihood Matching", Sec. 3: the "unconstrained" chunks,
  without their debiasing of chunks by tokenization bias). A token of zero bytes (a
  control token) belongs to no chunk.

  Args:
    tokens_a: the bytes of each token of the first tokenization, in order.
    tokens_b: the same for the second tokenization of the same text.

  Returns:
    ``(chunk_a, chunk_b, boundaries)``: int32 ``[len(tokens_a)]`` and
    ``[len(tokens_b)]`` chunk index of each token (-1 for zero-byte tokens), and int64
    ``[num_chunks + 1]`` the byte offsets of the chunk boundaries.

  Raises:
    ValueError: the two tokenizations do not decode to the same bytes.
  """
  joined_a, joined_b = b"".join(tokens_a), b"".join(tokens_b)
  if joined_a != joined_b:
    at = next(
      (i for i, (x, y) in enumerate(zip(joined_a, joined_b)) if x != y),
      min(len(joined_a), len(joined_b)),
    )
    raise ValueError(
      "the tokenizations' byte decodings disagree on the same text: "
      f"{len(joined_a)} vs {len(joined_b)} bytes, first difference at byte {at} "
      f"({joined_a[at : at + 12]!r} vs {joined_b[at : at + 12]!r})"
    )
  ends_a = np.cumsum([len(t) for t in tokens_a], dtype=np.int64)
  ends_b = np.cumsum([len(t) for t in tokens_b], dtype=np.int64)
  boundaries = np.union1d([0], np.intersect1d(ends_a, ends_b))

  def chunk_of(tokens, ends):
    # A token ending at e lies in the chunk whose right boundary is the first >= e.
    chunk = np.searchsorted(boundaries, ends, side="left") - 1
    empty = np.array([len(t) == 0 for t in tokens], bool)
    return np.where(empty, -1, chunk).astype(np.int32)

  return chunk_of(tokens_a, ends_a), chunk_of(tokens_b, ends_b), boundaries


def chunk_log_likelihoods(
  token_log_probs: ArrayLike, chunk_ids: ArrayLike, num_chunks: int
) -> jax.Array:
  r"""Sums of token log-probabilities per chunk.

  .. math::
    \log p(\mathrm{chunk}_c) = \sum_{t:\ \mathrm{chunk}(t) = c} \log p(y_t \mid y_{<t})

  (the chain rule over the tokens between two aligned boundaries; Minixhofer et al.
  (2025), Sec. 3).

  Args:
    token_log_probs: ``[..., time]`` log-probability of each (target) token.
    chunk_ids: int ``[..., time]`` chunk of each token in ``[0, num_chunks)``, or -1 for
      tokens in no chunk (ignored, whatever their log-probability, NaN included).
    num_chunks: the number of chunks ``C``.

  Returns:
    ``[..., C]`` chunk log-likelihoods (0 for chunks without tokens).
  """
  token_log_probs = real_array(token_log_probs, "token_log_probs")
  chunk_ids = jnp.asarray(chunk_ids)
  if not jnp.issubdtype(chunk_ids.dtype, jnp.integer):
    raise ValueError(f"chunk_ids must be integers, got dtype {chunk_ids.dtype}")
  if chunk_ids.shape != token_log_probs.shape:
    raise ValueError(
      f"chunk_ids must have the shape of token_log_probs {token_log_probs.shape}, "
      f"got {chunk_ids.shape}"
    )
  member = chunk_ids[..., None] == jnp.arange(num_chunks)  # [..., time, C]
  dtype = compute_dtype(token_log_probs)
  values = jnp.where(member, token_log_probs.astype(dtype)[..., None], 0)
  return jnp.sum(values, axis=-2)


def _log1mexp(x):
  """``log(1 - exp(x))`` for ``x < 0`` (Maechler (2012): log1p or log of -expm1)."""
  small = x < -np.log(2.0)
  safe_small = jnp.where(small, x, -1.0)
  safe_big = jnp.where(small, -0.5, x)
  return jnp.where(small, jnp.log1p(-jnp.exp(safe_small)), jnp.log(-jnp.expm1(safe_big)))


def binary_kl_from_log_probs(log_p: ArrayLike, log_q: ArrayLike) -> jax.Array:
  r"""KL divergence between two Bernoulli distributions given by their log-probabilities.

  .. math::
    \mathrm{KL}(\mathrm{B}(p) \,\|\, \mathrm{B}(q)) = p \log\frac{p}{q}
      + (1 - p) \log\frac{1 - p}{1 - q}

  with ``log(1 - p)`` computed as ``log1mexp(log p)``; ``log_p, log_q < 0`` elementwise.
  Never negative (a straight-through clamp of rounding).
  """
  log_p, log_q = jnp.asarray(log_p), jnp.asarray(log_q)
  p = jnp.exp(log_p)
  return nonnegative(p * (log_p - log_q) + (1 - p) * (_log1mexp(log_p) - _log1mexp(log_q)))


ALM_DIVERGENCES = ("kl", "reverse_kl")


def alm_loss(
  student_chunk_log_probs: ArrayLike,
  teacher_chunk_log_probs: ArrayLike,
  *,
  temperature: ArrayLike = 1.0,
  divergence: str = "kl",
  epsilon: float = 1e-6,
  where: ArrayLike | None = None,
) -> jax.Array:
  r"""Approximate Likelihood Matching: a binarised f-divergence between chunk likelihoods.

  Each aligned chunk (:func:`aligned_chunks`) has a likelihood under the teacher,
  :math:`p_T(c)`, and under the student, :math:`p_S(c)` (:func:`chunk_log_likelihoods`).
  Rather than comparing distributions over all possible chunks (infinitely many), ALM
  compares the two Bernoulli distributions "this chunk / anything else":

  .. math::
    \ell_c = D_f\big(\mathrm{B}(\tilde p_T(c)) \,\big\|\, \mathrm{B}(\tilde p_S(c))\big),
    \qquad \tilde p(c) = \exp\big(\log p(c) / \tau - \epsilon\big),

  with the KL divergence as :math:`f` (``divergence='kl'``, the binary cross-entropy of
  the reference implementation minus the teacher's binary entropy: the same gradients;
  ``'reverse_kl'`` swaps the arguments). :math:`\tau` is the binarisation temperature
  (``temperature``; :math:`\tilde p = p^{1/\tau}`, which keeps long chunks' likelihoods
  away from 0) and :math:`\epsilon` keeps both Bernoullis non-degenerate (the reference
  implementation's guard). Minixhofer, Vulić & Ponti (2025), "Universal Cross-Tokenizer
  Distillation via Approximate Likelihood Matching", Sec. 3 (Eq. for the binarised
  f-divergence; reference code ``tokenkit``, ``alm_diff_fn='binary_ce'``).

  Args:
    student_chunk_log_probs: ``[..., chunks]`` student chunk log-likelihoods (<= 0).
    teacher_chunk_log_probs: same shape, the teacher's.
    temperature: binarisation temperature ``tau > 0``.
    divergence: ``'kl'`` (KL(teacher || student)) or ``'reverse_kl'``.
    epsilon: subtracted from both scaled log-likelihoods (>= 0).
    where: optional boolean ``[..., chunks]`` mask (False = padding chunk: 0, zero grad).

  Returns:
    ``[..., chunks]`` per-chunk losses (sum them per sequence, or average over the real
    chunks with :func:`kdjax.losses.masked_sum_and_count`).
  """
  if divergence not in ALM_DIVERGENCES:
    raise ValueError(f"divergence must be one of {ALM_DIVERGENCES}, got {divergence!r}")
  if not epsilon >= 0:
    raise ValueError(f"epsilon must be >= 0, got {epsilon}")
  s = real_array(student_chunk_log_probs, "student_chunk_log_probs")
  t = real_array(teacher_chunk_log_probs, "teacher_chunk_log_probs")
  if s.shape != t.shape:
    raise ValueError(
      "teacher_chunk_log_probs must have the shape of student_chunk_log_probs, got "
      f"{t.shape} and {s.shape}"
    )
  temperature = check_temperature(temperature)
  dtype = compute_dtype(s, t)
  s, t = s.astype(dtype), t.astype(dtype)
  mask = example_mask(where, s.shape, "the chunk log-likelihoods' shape")
  if mask is not None:
    s, t = jnp.where(mask, s, -1.0), jnp.where(mask, t, -1.0)
  # Scaled and shifted log-likelihoods, strictly negative (a student chunk log-probability
  # rounded to 0 would otherwise give log(1 - q) = -inf).
  log_s = jnp.minimum(s, 0) / temperature - epsilon
  log_t = jnp.minimum(t, 0) / temperature - epsilon
  if divergence == "kl":
    loss = binary_kl_from_log_probs(log_t, log_s)
  else:
    loss = binary_kl_from_log_probs(log_s, log_t)
  return apply_mask(loss, mask)
