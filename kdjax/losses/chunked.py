"""Memory-bounded KD over large vocabularies, straight from hidden states and projections.

For LLM distillation the logits ``hidden @ kernel`` have shape ``[N, V]`` with ``N`` in
the thousands and ``V`` above 100k: in float32 that is gigabytes per copy, and a naive
loss plus its gradient holds several copies. The functions here never build them.

How it works:

* Tokens are split into chunks of ``chunk_size`` (the last chunk is zero-padded and
  masked, so any ``N`` works). One chunk at a time, the student's and teacher's
  ``[chunk, V]`` logits are computed (matmuls accumulate in float32, softmax statistics
  are float32 also for bfloat16 inputs) and fed to the per-token divergence of
  :mod:`kdjax.losses.logits` (looked up by name, never re-implemented).
* :func:`chunked_kd_loss` (per-token output, any cotangent) is a ``jax.custom_vjp``
  whose forward pass (a ``lax.map``) keeps only its inputs as residuals. Its backward
  pass scans the chunks again, recomputes each chunk's logits, takes the divergence's
  VJP with respect to the student's logits, emits ``d hidden_chunk = d logits @ W^T``
  and accumulates ``d W += hidden_chunk^T d logits`` in a float32 ``[H, V]`` carry,
  updated in place one vocabulary block at a time (no second kernel-sized buffer).
  Cost: 2 matmul passes forward + 4 backward = 1.5x the naive 4.
* :func:`chunked_kd_sum_and_count` (scalar sum, for training) computes the gradients in
  the same single scan as the loss and only scales them in the backward pass: 4 matmul
  passes, as the naive loss.
* The teacher is held fixed: its hidden states and kernel get zero cotangents (as under
  ``stop_gradient``).
* Data parallelism: under ``jax.jit`` with sharded inputs the results are correct (XLA
  decides the layout); for explicit control call :func:`chunked_kd_sum_and_count`
  inside ``jax.shard_map`` on each device's tokens and ``psum`` the sum and the count;
  autodiff then sums the gradient of a replicated kernel over the devices.

Design choice, vocabulary chunking: the vocabulary is *not* chunked for the logits.
Every divergence of :mod:`kdjax.losses.logits` needs whole rows (a softmax normaliser),
so chunking ``V`` would mean rewriting each divergence in a streaming log-sum-exp form
instead of reusing it. The live ``[chunk_size, V]`` float32 buffers are bounded by
``chunk_size`` instead. The default ``chunk_size=None`` picks it from the vocabulary size
(:func:`default_chunk_size`): the largest power of two, at most ``N``, whose float32
``[chunk, V]`` logits take at most 64 MiB -- 128 tokens at V = 128256 (the loss's working
memory is then <= 1/8 of the naive loss's at N = 8192, H = 4096), every token of a small
batch at a small vocabulary (one chunk: no loop overhead). What stays is the float32
``[H, V]`` kernel-gradient accumulator (2x the bfloat16 kernel), needed to keep the
gradient as precise as the naive one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from kdjax.losses.sequence import get_divergence

__all__ = ["chunked_kd_loss", "chunked_kd_sum_and_count", "default_chunk_size"]

# Memory of one float32 [chunk, V] logits buffer that the default chunk size aims at.
_CHUNK_BYTES = 64 * 2**20

# Largest vocabulary block of the in-place kernel-gradient update: [H, 8192] float32
# partial products (128 MiB at H = 4096) instead of a second [H, V] buffer.
_KERNEL_GRAD_BLOCK = 8192


def _kernel_grad_block(vocab: int) -> int:
  """A block size for the kernel-gradient update: a divisor of ``vocab`` if one is
  reasonably large (then nothing is padded), else ``_KERNEL_GRAD_BLOCK``."""
  if vocab <= _KERNEL_GRAD_BLOCK:
    return vocab
  for block in range(_KERNEL_GRAD_BLOCK, _KERNEL_GRAD_BLOCK // 8 - 1, -1):
    if vocab % block == 0:
      return block
  return _KERNEL_GRAD_BLOCK


def default_chunk_size(num_tokens: int, vocab: int) -> int:
  """The default tokens per chunk: the largest power of two <= ``num_tokens`` (at least 1)
  whose float32 ``[chunk, vocab]`` logits fit in 64 MiB.

  As memory-efficient cross-entropy kernels do, the chunk shrinks as the vocabulary grows,
  so that the live logits stay a fixed, small working set: 128 at V = 128256 (Llama 3),
  256 at V = 50257 (GPT-2), 1024 at V = 16384.
  """
  limit = max(1, min(num_tokens, _CHUNK_BYTES // (4 * max(vocab, 1))))
  return 1 << (limit.bit_length() - 1)


def _accumulation_dtype(x: jax.Array):
  """float32 for low-precision inputs, else the input's (wider) float type."""
  return jnp.promote_types(x.dtype, jnp.float32)


def _logits(hidden: jax.Array, kernel: jax.Array, vocab_where: jax.Array | None) -> jax.Array:
  """``hidden @ kernel`` in float32 (or wider), ``-inf`` at masked vocabulary entries."""
  logits = jnp.matmul(hidden, kernel, preferred_element_type=_accumulation_dtype(kernel))
  return logits if vocab_where is None else jnp.where(vocab_where, logits, -jnp.inf)


def _add_kernel_grad(kernel_grad, hidden, logits_grad):
  """``kernel_grad += hidden^T logits_grad``, one vocabulary block at a time, in place.

  ``kernel_grad`` is ``[H, V_padded]`` with ``V_padded`` a multiple of the block size.
  Adding block by block with ``dynamic_update_slice`` lets XLA update the accumulator in
  place; a single ``[H, V]`` matmul would need a second kernel-sized buffer.
  """
  padded = kernel_grad.shape[1]
  block = _kernel_grad_block(logits_grad.shape[1])
  if padded != logits_grad.shape[1]:
    logits_grad = jnp.pad(logits_grad, ((0, 0), (0, padded - logits_grad.shape[1])))

  def add_block(j, kernel_grad):
    start = j * block
    update = lax.dynamic_slice_in_dim(kernel_grad, start, block, axis=1) + lax.dot_general(
      hidden,
      lax.dynamic_slice_in_dim(logits_grad, start, block, axis=1),
      (((0,), (0,)), ((), ())),
      preferred_element_type=kernel_grad.dtype,
    )
    return lax.dynamic_update_slice_in_dim(kernel_grad, update, start, axis=1)

  return lax.fori_loop(0, padded // block, add_block, kernel_grad)


def _losses_and_student_grads(
  divergence,
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  token_where,
  vocab_where,
  params,
  cotangent,
):
  """One scan over the chunks: per-token losses and the student's cotangent-weighted
  gradients ``d/d hidden`` ``[chunks, chunk, H]`` and ``d/d kernel`` ``[H, V]`` (the
  latter in the float32-or-wider accumulation dtype)."""
  compute_dtype = student_kernel.dtype
  accumulation_dtype = _accumulation_dtype(student_kernel)
  width, vocab = student_kernel.shape
  padded_vocab = -(-vocab // _kernel_grad_block(vocab)) * _kernel_grad_block(vocab)

  def one_chunk(kernel_grad, args):
    hidden, teacher, mask, chunk_cotangent = args
    teacher_logits = _logits(teacher, teacher_kernel, vocab_where)

    def weighted_sum(student_logits):
      # The gradient of sum(cotangent * losses) is the VJP; grad (unlike an explicit
      # vjp call) also types the cotangent right inside shard_map.
      losses = divergence(student_logits, teacher_logits, where=mask, **params)
      return jnp.sum(losses * chunk_cotangent.astype(losses.dtype)), losses

    (_, losses), logits_grad = jax.value_and_grad(weighted_sum, has_aux=True)(
      _logits(hidden, student_kernel, vocab_where)
    )
    logits_grad = logits_grad.astype(compute_dtype)
    hidden_grad = lax.dot_general(  # logits_grad @ kernel^T without a transposed copy
      logits_grad,
      student_kernel,
      (((1,), (1,)), ((), ())),
      preferred_element_type=accumulation_dtype,
    ).astype(hidden.dtype)
    return _add_kernel_grad(kernel_grad, hidden, logits_grad), (losses, hidden_grad)

  # Zeros typed like the inputs (under shard_map: varying over the same mesh axes, as a
  # scan carry must be typed like its update; lax.full_like keeps the type of `like`).
  kernel_grad = lax.full_like(
    student_hidden, 0, dtype=accumulation_dtype, shape=(width, padded_vocab)
  )
  kernel_grad, (losses, hidden_grad) = lax.scan(
    one_chunk, kernel_grad, (student_hidden, teacher_hidden, token_where, cotangent)
  )
  return losses, hidden_grad, kernel_grad[:, :vocab]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked_losses(
  divergence: Callable,
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  token_where,
  vocab_where,
  params,
):
  """Per-token losses ``[chunks, chunk]`` from ``[chunks, chunk, H]`` hidden states.

  ``params`` (temperature and hyper-parameters) is an argument, not bound into
  ``divergence``, so that it may be traced (e.g. a temperature schedule under jit).
  """

  def one_chunk(args):
    hidden, teacher, mask = args
    return divergence(
      _logits(hidden, student_kernel, vocab_where),
      _logits(teacher, teacher_kernel, vocab_where),
      where=mask,
      **params,
    )

  return lax.map(one_chunk, (student_hidden, teacher_hidden, token_where))


def _chunked_losses_fwd(
  divergence,
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  token_where,
  vocab_where,
  params,
):
  losses = _chunked_losses(
    divergence,
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    token_where,
    vocab_where,
    params,
  )
  residuals = (
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    token_where,
    vocab_where,
    params,
  )
  return losses, residuals


def _chunked_losses_bwd(divergence, residuals, cotangent):
  _, hidden_grad, kernel_grad = _losses_and_student_grads(divergence, *residuals, cotangent)
  kernel_grad = kernel_grad.astype(residuals[1].dtype)
  return (hidden_grad, kernel_grad, None, None, None, None, None)


_chunked_losses.defvjp(_chunked_losses_fwd, _chunked_losses_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked_sum(
  divergence: Callable,
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  token_where,
  vocab_where,
  params,
):
  """Sum of the per-token losses (the forward pass also computes its gradients)."""
  return jnp.sum(
    _chunked_losses(
      divergence,
      student_hidden,
      student_kernel,
      teacher_hidden,
      teacher_kernel,
      token_where,
      vocab_where,
      params,
    )
  )


def _chunked_sum_fwd(
  divergence,
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  token_where,
  vocab_where,
  params,
):
  ones = jnp.ones(token_where.shape, _accumulation_dtype(student_kernel))
  losses, hidden_grad, kernel_grad = _losses_and_student_grads(
    divergence,
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    token_where,
    vocab_where,
    params,
    ones,
  )
  # The kernel gradient stays in its float32 accumulator until scaled (one rounding, and
  # no extra kernel-sized buffer); an empty array remembers the kernel's dtype.
  kernel_dtype = jnp.zeros((0,), student_kernel.dtype)
  return jnp.sum(losses), (hidden_grad, kernel_grad, kernel_dtype)


def _chunked_sum_bwd(divergence, residuals, cotangent):
  hidden_grad, kernel_grad, kernel_dtype = residuals
  hidden_grad = (hidden_grad.astype(cotangent.dtype) * cotangent).astype(hidden_grad.dtype)
  kernel_grad = (kernel_grad * cotangent.astype(kernel_grad.dtype)).astype(kernel_dtype.dtype)
  return (hidden_grad, kernel_grad, None, None, None, None, None)


_chunked_sum.defvjp(_chunked_sum_fwd, _chunked_sum_bwd)


def _check_matrix(x: jax.Array, name: str) -> None:
  if x.ndim != 2:
    raise ValueError(f"{name} must be a 2-D array, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")


def _prepare(
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  divergence,
  temperature,
  where,
  chunk_size,
  vocab_where,
  hyperparams,
):
  """Validates the inputs; returns the divergence and the arguments of the chunked
  kernels (hidden states and token mask as ``[chunks, chunk, ...]``)."""
  student_hidden = jnp.asarray(student_hidden)
  student_kernel = jnp.asarray(student_kernel)
  teacher_hidden = jnp.asarray(teacher_hidden)
  teacher_kernel = jnp.asarray(teacher_kernel)
  for x, name in (
    (student_hidden, "student_hidden"),
    (student_kernel, "student_kernel"),
    (teacher_hidden, "teacher_hidden"),
    (teacher_kernel, "teacher_kernel"),
  ):
    _check_matrix(x, name)
  n, width = student_hidden.shape
  vocab = student_kernel.shape[1]
  if student_kernel.shape[0] != width:
    raise ValueError(
      f"student_kernel must have shape [{width}, V] to match "
      f"student_hidden {student_hidden.shape}, got {student_kernel.shape}"
    )
  if teacher_hidden.shape[0] != n:
    raise ValueError(
      f"teacher_hidden must have {n} rows like student_hidden, got shape {teacher_hidden.shape}"
    )
  if teacher_kernel.shape != (teacher_hidden.shape[1], vocab):
    raise ValueError(
      f"teacher_kernel must have shape [{teacher_hidden.shape[1]}, {vocab}],"
      f" got {teacher_kernel.shape}"
    )
  if chunk_size is None:
    chunk_size = default_chunk_size(n, vocab)
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
  if where is None:
    where = jnp.ones((n,), bool)
  else:
    where = jnp.asarray(where)
    if where.shape != (n,) or where.dtype != bool:
      raise ValueError(f"where must be a boolean [{n}] token mask, got {where.dtype} {where.shape}")
  if vocab_where is not None:
    vocab_where = jnp.asarray(vocab_where)
    if vocab_where.shape != (vocab,) or vocab_where.dtype != bool:
      raise ValueError(
        f"vocab_where must be a boolean [{vocab}] mask, got {vocab_where.dtype} {vocab_where.shape}"
      )
  bound = get_divergence(divergence, temperature=temperature, **hyperparams)

  # No token (n = 0) still makes one fully padded chunk: losses [0], sum 0, count 0.
  chunk = max(min(chunk_size, n), 1)
  n_chunks = max(-(-n // chunk), 1)
  pad = n_chunks * chunk - n

  def to_chunks(x):
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape((n_chunks, chunk) + x.shape[1:])

  arrays = [
    to_chunks(student_hidden),
    student_kernel,
    to_chunks(teacher_hidden),
    teacher_kernel,
    to_chunks(where),
  ]
  # Under shard_map, give all arrays the same (union of) varying mesh axes, so that the
  # custom VJP's cotangents have its inputs' types; autodiff then psums the gradient of
  # an invariant (e.g. replicated) kernel. Adding a scalar zero is free elsewhere.
  zero = lax.full_like(sum(jnp.ravel(x)[0].astype(jnp.float32) for x in arrays), 0)
  arrays = [
    x | zero.astype(bool) if x.dtype == jnp.bool_ else x + zero.astype(x.dtype) for x in arrays
  ]
  return bound.func, (*arrays, vocab_where, bound.keywords)


def chunked_kd_loss(
  student_hidden: ArrayLike,
  student_kernel: ArrayLike,
  teacher_hidden: ArrayLike,
  teacher_kernel: ArrayLike,
  *,
  divergence: str = "kl",
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  chunk_size: int | None = None,
  vocab_where: ArrayLike | None = None,
  **hyperparams,
) -> jax.Array:
  r"""Per-token KD loss from hidden states and output projections, chunked over tokens.

  Equal (values and student gradients) to the naive

  .. math::
    \ell_n = D\big(\mathrm{softmax}(h^T_n W_T / \tau) \,\big\|\,
      \mathrm{softmax}(h^S_n W_S / \tau)\big)

  of :mod:`kdjax.losses.logits` applied to the full ``[N, V]`` logits, without ever
  holding them: only ``[chunk_size, V]`` logits live at a time, in the forward and the
  backward pass. The backward pass recomputes each chunk's logits (1.5x the naive
  matmul FLOPs, see the module docstring). When only the sum (or mean) of the token
  losses is differentiated, :func:`chunked_kd_sum_and_count` needs just the naive FLOPs.

  The idea of fusing the output projection with the loss and processing tokens in chunks
  follows memory-efficient cross-entropy kernels (e.g. Wijmans et al. 2024, "Cut Your
  Losses in Large-Vocabulary Language Models"; Hsu et al. 2024, "Liger Kernel"); the KD
  objective is Hinton, Vinyals, Dean (2015), "Distilling the Knowledge in a Neural
  Network", with the divergences of :mod:`kdjax.losses.logits`.

  Args:
    student_hidden: ``[N, H]`` student final hidden states (one row per token).
    student_kernel: ``[H, V]`` student output projection (logits = hidden @ kernel).
    teacher_hidden: ``[N, H_t]`` teacher final hidden states.
    teacher_kernel: ``[H_t, V]`` teacher output projection.
    divergence: name of the divergence (``kdjax.losses.sequence.DIVERGENCES``):
      ``'kl'`` (KL(teacher || student), as ``kl_divergence``), ``'kd'``,
      ``'reverse_kl'``, ``'jsd'``, ``'skew_kl'``, ``'skew_reverse_kl'`` or ``'tv'``.
    temperature: softmax temperature :math:`\tau` passed to the divergence.
    where: optional boolean ``[N]`` token mask; masked tokens get loss 0 and no gradient.
      It masks examples (tokens, i.e. rows of the logits), not vocabulary entries (that
      is ``vocab_where``), unlike optax's element-wise ``where``.
    chunk_size: tokens per chunk; need not divide ``N`` (the last chunk is padded).
      None (default): :func:`default_chunk_size` of ``N`` and ``V``.
    vocab_where: optional boolean ``[V]`` mask of valid vocabulary entries (e.g. a
      vocabulary padded to a multiple of 128): masked entries get ``-inf`` logits for
      both networks, i.e. probability 0.
    **hyperparams: the divergence's hyper-parameters (e.g. ``beta`` for ``'jsd'``,
      ``alpha`` for the skew divergences).

  Returns:
    ``[N]`` per-token losses in float32 (or wider), 0 where ``where`` is False.
    Gradients (for any cotangent) flow to ``student_hidden`` and ``student_kernel``
    only; the teacher's inputs get zero gradients.
  """
  divergence_fn, args = _prepare(
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    divergence,
    temperature,
    where,
    chunk_size,
    vocab_where,
    hyperparams,
  )
  return _chunked_losses(divergence_fn, *args).reshape(-1)[: jnp.shape(student_hidden)[0]]


def chunked_kd_sum_and_count(
  student_hidden: ArrayLike,
  student_kernel: ArrayLike,
  teacher_hidden: ArrayLike,
  teacher_kernel: ArrayLike,
  *,
  divergence: str = "kl",
  temperature: ArrayLike = 1.0,
  where: ArrayLike | None = None,
  chunk_size: int | None = None,
  vocab_where: ArrayLike | None = None,
  **hyperparams,
) -> tuple[jax.Array, jax.Array]:
  r"""Sum of the chunked per-token KD losses and the token count, gradients fused in.

  .. math::
    S = \sum_n m_n\, \ell_n, \qquad C = \sum_n m_n

  with :math:`\ell_n` as in :func:`chunked_kd_loss`. For training: the forward pass
  computes the student's gradients of :math:`S` chunk by chunk (4 matmul passes, the
  same as the naive loss) and keeps them as residuals (``[N, H]`` and ``[H, V]`` in the
  input dtype); the backward pass only scales them by the incoming cotangent. For
  evaluation without gradients prefer :func:`chunked_kd_loss` (2 matmul passes).
  ``(S, C)`` accumulate exactly over micro-batches; divide once with
  ``kdjax.losses.mean_from_sum_and_count``.

  Reference: the fused forward-backward follows Hsu et al. (2024), "Liger Kernel:
  Efficient Triton Kernels for LLM Training" (fused linear cross-entropy).

  Args:
    student_hidden: ``[N, H]`` student final hidden states (one row per token).
    student_kernel: ``[H, V]`` student output projection (logits = hidden @ kernel).
    teacher_hidden: ``[N, H_t]`` teacher final hidden states.
    teacher_kernel: ``[H_t, V]`` teacher output projection.
    divergence: name of the divergence (``kdjax.losses.sequence.DIVERGENCES``):
      ``'kl'`` (KL(teacher || student), as ``kl_divergence``), ``'kd'``,
      ``'reverse_kl'``, ``'jsd'``, ``'skew_kl'``, ``'skew_reverse_kl'`` or ``'tv'``.
    temperature: softmax temperature :math:`\tau` passed to the divergence.
    where: optional boolean ``[N]`` token mask; masked tokens get loss 0 and no gradient.
      It masks examples (tokens, i.e. rows of the logits), not vocabulary entries (that
      is ``vocab_where``), unlike optax's element-wise ``where``.
    chunk_size: tokens per chunk; need not divide ``N`` (the last chunk is padded).
      None (default): :func:`default_chunk_size` of ``N`` and ``V``.
    vocab_where: optional boolean ``[V]`` mask of valid vocabulary entries (e.g. a
      vocabulary padded to a multiple of 128): masked entries get ``-inf`` logits for
      both networks, i.e. probability 0.
    **hyperparams: the divergence's hyper-parameters (e.g. ``beta`` for ``'jsd'``,
      ``alpha`` for the skew divergences).

  Returns:
    ``(S, C)``: the float32 (or wider) sum, differentiable for ``student_hidden`` and
    ``student_kernel``, and the int32 count of tokens where ``where`` is True.
  """
  divergence_fn, args = _prepare(
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    divergence,
    temperature,
    where,
    chunk_size,
    vocab_where,
    hyperparams,
  )
  token_where = args[4]
  return _chunked_sum(divergence_fn, *args), jnp.sum(token_where, dtype=jnp.int32)
