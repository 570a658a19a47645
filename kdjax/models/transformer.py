r"""A small causal (decoder-only) Transformer language model with a key/value cache.

Two ways to call :class:`TransformerLM`:

* training / scoring: ``model.apply(variables, tokens)`` -> logits ``[batch, time, vocab]``
  with causal attention (position ``t`` sees tokens ``<= t``);
* incremental decoding: ``model.apply(variables, tokens, cache=cache, positions=...,
  valid=...)`` -> ``(logits, new_cache)``. The cache (:func:`init_cache`) holds every
  layer's keys and values for ``cache_len`` slots, the next free slot ``index`` and which
  slots hold real tokens (``valid``). The ``T`` new tokens go to slots ``index ..
  index + T - 1`` and attend to every valid slot at or before their own. Padding slots
  (``valid=False``, e.g. the left padding of shorter prompts) are never attended to, and
  ``positions`` give each token its position in its own unpadded sequence, so a padded
  batch decodes exactly as each sequence alone would (``kdjax.models.sampling``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Cache = dict[str, Any]


def check_tokens(tokens: jax.Array, max_len: int) -> None:
  """ValueError unless ``tokens`` is ``[batch, time]`` with ``time <= max_len``."""
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [batch, time], got shape {tokens.shape}")
  if tokens.shape[1] > max_len:
    raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={max_len}")


def causal_mask(tokens: jax.Array, positions, valid, cache: Cache | None):
  """``(start, positions, allowed [B, T, S], key_valid)``: the first slot of ``tokens``, their
  positions (default ``start .. start + time - 1``), which key slots each query may attend to
  (earlier or equal slots holding valid tokens) and the validity of every key slot."""
  length = tokens.shape[1]
  start = jnp.zeros((), jnp.int32) if cache is None else cache["index"]
  slots = start + jnp.arange(length)
  if positions is None:
    positions = jnp.broadcast_to(slots, tokens.shape)
  if valid is None:
    valid = jnp.ones(tokens.shape, bool)
  if cache is None:
    key_valid, key_slots = valid, slots
  else:
    key_valid = lax.dynamic_update_slice(cache["valid"], valid, (0, start))
    key_slots = jnp.arange(key_valid.shape[1])
  allowed = (key_slots[None, None, :] <= slots[None, :, None]) & key_valid[:, None, :]
  return start, positions, allowed, key_valid


def update_cache(cache_kv, k, v, index):
  """Writes ``k, v`` into the layer cache at slot ``index``; returns the full keys/values."""
  k = lax.dynamic_update_slice(cache_kv[0], k.astype(cache_kv[0].dtype), (0, index, 0, 0))
  v = lax.dynamic_update_slice(cache_kv[1], v.astype(cache_kv[1].dtype), (0, index, 0, 0))
  return k, v


class CausalSelfAttention(nn.Module):
  r"""Multi-head self-attention :math:`\mathrm{softmax}(QK^\top/\sqrt{d} + M)V` with an
  optional key/value cache; :math:`M` is 0 where attending is allowed, else the most
  negative float (never ``-inf``: a fully masked padding row stays finite)."""

  num_heads: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    allowed: jax.Array,
    *,
    train: bool,
    cache: tuple[jax.Array, jax.Array] | None = None,
    index: jax.Array | None = None,
  ):
    head_dim = x.shape[-1] // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), name=name)  # noqa: E731
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    if cache is not None:
      k, v = update_cache(cache, k, v, index)
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    scores = jnp.where(allowed[:, None], scores, jnp.finfo(scores.dtype).min)
    weights = nn.Dropout(self.dropout_rate, deterministic=not train)(jax.nn.softmax(scores))
    out = jnp.einsum("bhts,bshd->bthd", weights, v)
    out = nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="out")(out)
    return out, (k, v)


class DecoderBlock(nn.Module):
  """Pre-layer-norm block: causal self-attention and a GELU MLP, each with a residual."""

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    allowed: jax.Array,
    *,
    train: bool,
    cache: tuple[jax.Array, jax.Array] | None = None,
    index: jax.Array | None = None,
  ):
    h, kv = CausalSelfAttention(self.num_heads, self.dropout_rate, name="attention")(
      nn.LayerNorm()(x), allowed, train=train, cache=cache, index=index
    )
    x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    h = nn.LayerNorm()(x)
    h = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp_dim)(h)))
    return x + nn.Dropout(self.dropout_rate, deterministic=not train)(h), kv


def init_cache(
  model: TransformerLM, batch_size: int, cache_len: int | None = None, dtype: Any = jnp.float32
) -> Cache:
  """An empty cache for ``batch_size`` sequences of up to ``cache_len`` (default max_len) slots.

  Also serves the Llama-style and GPT-2 decoders (:mod:`kdjax.models.llama`,
  :mod:`kdjax.models.gpt2`), whose ``kv_shape()`` gives the trailing key/value shape.

  Returns:
    ``{'index': int32 scalar 0, 'valid': bool [B, S] all False, 'layers': tuple of
    (keys, values) [B, S, heads, head_dim] zeros per layer}``.
  """
  cache_len = model.max_len if cache_len is None else cache_len
  if not 1 <= cache_len <= model.max_len:
    raise ValueError(f"cache_len must be in [1, max_len={model.max_len}], got {cache_len}")
  if hasattr(model, "kv_shape"):  # LlamaLM, GPT2LM: their own key/value shape
    shape = (batch_size, cache_len, *model.kv_shape())
  else:
    shape = (batch_size, cache_len, model.num_heads, model.embed_dim // model.num_heads)
  layers = tuple(
    (jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(model.num_layers)
  )
  return {"index": jnp.zeros((), jnp.int32), "valid": jnp.zeros(shape[:2], bool), "layers": layers}


class TransformerLM(nn.Module):
  r"""Decoder-only Transformer: token + learned position embeddings, causal blocks, LM head.

  .. math::
    h_0 = E[x_t] + P_{p_t}, \quad h_{l+1} = \mathrm{Block}_l(h_l), \quad
    \mathrm{logits}_t = W\,\mathrm{LN}(h_L)_t + b

  Logits at position ``t`` depend only on tokens ``<= t``. Vaswani et al. (2017),
  "Attention is all you need"; Radford et al. (2019), "Language models are unsupervised
  multitask learners" (pre-LN decoder); used for sequence-level KD as in Kim & Rush
  (2016), "Sequence-level knowledge distillation".

  Attributes:
    vocab_size: number of tokens (and logits per position).
    max_len: largest sequence length (and number of position embeddings).
    embed_dim: model width.
    num_layers: number of decoder blocks.
    num_heads: attention heads (must divide ``embed_dim``).
    mlp_dim: hidden width of the MLPs.
    dropout_rate: dropout on residual branches and attention weights during training.
  """

  vocab_size: int = 256
  max_len: int = 128
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 512
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    *,
    train: bool = False,
    positions: jax.Array | None = None,
    valid: jax.Array | None = None,
    cache: Cache | None = None,
    return_hidden: bool = False,
  ):
    """Logits (or final hidden states) of ``tokens``; with ``cache``, also the new cache.

    Args:
      tokens: int ``[batch, time]``.
      train: enables dropout.
      positions: int ``[batch, time]`` position of each token in its own sequence
        (default ``0 .. time - 1``, or ``index ..`` with a cache).
      valid: bool ``[batch, time]``, False for padding tokens no one may attend to
        (default all True).
      cache: a cache from :func:`init_cache` (decoding mode).
      return_hidden: return ``LN(h_L)`` ``[batch, time, embed_dim]`` instead of logits
        (the head is ``params['head']``: logits = hidden @ kernel + bias).

    Returns:
      ``[batch, time, vocab_size]`` logits (or hidden states); with ``cache``, the pair
      ``(logits, new_cache)``.
    """
    check_tokens(tokens, self.max_len)
    length = tokens.shape[1]
    if self.embed_dim % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide embed_dim={self.embed_dim}")
    start, positions, allowed, key_valid = causal_mask(tokens, positions, valid, cache)
    h = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
    position = self.param(
      "position_embedding", nn.initializers.normal(0.02), (self.max_len, self.embed_dim)
    )
    h = h + jnp.take(position, positions, axis=0)
    new_layers = []
    for layer in range(self.num_layers):
      h, kv = DecoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, name=f"block{layer}")(
        h,
        allowed,
        train=train,
        index=start,
        cache=None if cache is None else cache["layers"][layer],
      )
      new_layers.append(kv)
    h = nn.LayerNorm()(h)
    out = h if return_hidden else nn.Dense(self.vocab_size, name="head")(h)
    if return_hidden and self.is_initializing():
      nn.Dense(self.vocab_size, name="head")(h)
    if cache is None:
      return out
    return out, {"index": start + length, "valid": key_valid, "layers": tuple(new_layers)}
