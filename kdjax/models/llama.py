r"""A Llama-style decoder (Llama 2/3, Qwen2, Mistral without sliding window) with a KV cache.

.. math::
  h_0 = E[x_t], \quad
  a_l = h_l + W_o\,\mathrm{Attn}(\mathrm{RoPE}(W_q \bar h_l), \mathrm{RoPE}(W_k \bar h_l),
    W_v \bar h_l), \quad \bar h_l = \mathrm{RMSNorm}(h_l),

  h_{l+1} = a_l + W_d\,(\mathrm{silu}(W_g \bar a_l) \odot W_u \bar a_l), \quad
  \mathrm{logits} = W_{lm}\,\mathrm{RMSNorm}(h_L)

with :math:`\mathrm{RMSNorm}(x) = g \odot x / \sqrt{\overline{x^2} + \epsilon}` (Zhang &
Sennrich (2019)), rotary position embeddings (Su et al. (2021), "RoFormer"), grouped-query
attention (Ainslie et al. (2023), "GQA": ``num_kv_heads`` key/value heads, each shared by
``num_heads / num_kv_heads`` query heads) and the SwiGLU MLP (Shazeer (2020), "GLU variants
improve Transformer"); Touvron et al. (2023), "Llama 2". Qwen2 adds biases to q, k and v
(``attention_bias``); small models tie the LM head to the embedding (``tie_embeddings``).

The call signature and the cache are :class:`~kdjax.models.transformer.TransformerLM`'s
(``positions``, ``valid``, ``cache``, ``return_hidden``), so
:func:`kdjax.models.sampling.generate` and the ``lm`` job use it unchanged; the cache holds
the rotated keys ``[batch, slots, num_kv_heads, head_dim]``.

Parameter names follow the Hugging Face layout (``embed_tokens``, ``layers_{i}/self_attn/
q_proj``, ``mlp/gate_proj``, ``input_layernorm``, ``norm``, ``lm_head``) so that
:mod:`kdjax.models.hf` maps them one to one; a flax ``kernel`` is the transpose of the
torch ``weight``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kdjax.models.transformer import Cache, causal_mask, check_tokens, update_cache

ROPE_TYPES = ("default", "linear", "llama3")


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: tuple = ()) -> np.ndarray:
  r"""float32 ``[head_dim / 2]`` RoPE frequencies :math:`\omega_i = \theta^{-2i/d}`, rescaled.

  ``scaling`` is a sorted tuple of ``(key, value)`` pairs of the Hugging Face
  ``rope_scaling`` dict (empty: none):

  * ``linear``: :math:`\omega_i / s` (position interpolation, Chen et al. (2023));
  * ``llama3``: wavelengths :math:`\lambda_i = 2\pi/\omega_i` longer than
    :math:`L/f_{low}` are divided by ``factor``, those shorter than :math:`L/f_{high}` are
    kept, and the band between interpolates with
    :math:`s = (L/\lambda_i - f_{low}) / (f_{high} - f_{low})`:
    :math:`(1 - s)\,\omega_i/\mathrm{factor} + s\,\omega_i` (:math:`L` =
    ``original_max_position_embeddings``; Llama 3.1's long-context scaling).
  """
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
  inv = inv.astype(np.float32)
  options = dict(scaling)
  kind = options.get("rope_type", options.get("type", "default"))
  if kind == "default":
    return inv
  factor = np.float32(options["factor"])
  if kind == "linear":
    return (inv / factor).astype(np.float32)
  if kind == "llama3":
    low, high = float(options["low_freq_factor"]), float(options["high_freq_factor"])
    old = float(options["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  raise ValueError(f"rope_scaling type must be one of {ROPE_TYPES}, got {kind!r}")


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates ``x [batch, time, heads, head_dim]`` by ``positions [batch, time]`` (the
  half-split layout of Hugging Face's ``rotate_half``), in float32."""
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  half = x.shape[-1] // 2
  xf = x.astype(jnp.float32)
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  return (xf * cos + rotated * sin).astype(x.dtype)


class RMSNorm(nn.Module):
  r""":math:`g \odot x / \sqrt{\overline{x^2} + \epsilon}`, computed in float32, then cast
  back to the input dtype before the gain (as Hugging Face's ``LlamaRMSNorm``)."""

  eps: float = 1e-6
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    normed = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return scale.astype(x.dtype) * normed.astype(x.dtype)


def attention(
  q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, scale: float
) -> jax.Array:
  r"""Grouped-query attention :math:`\mathrm{softmax}(q k^\top \cdot \mathrm{scale} + M) v`.

  Args:
    q: ``[batch, time, heads, head_dim]``.
    k, v: ``[batch, slots, kv_heads, head_dim]`` (``kv_heads`` divides ``heads``; query
      head ``h`` reads key/value head ``h // (heads / kv_heads)``).
    allowed: bool ``[batch, time, slots]``.
    scale: the score scale (``1 / sqrt(head_dim)``).

  Returns:
    ``[batch, time, heads, head_dim]`` in q's dtype; the softmax runs in float32.
  """
  b, t, heads, d = q.shape
  groups = heads // k.shape[2]
  qg = q.reshape(b, t, k.shape[2], groups, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
  scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", weights, v)
  return out.reshape(b, t, heads, d)


class LlamaBlock(nn.Module):
  """One pre-norm decoder layer: GQA self-attention with RoPE, then the SwiGLU MLP."""

  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rms_norm_eps: float
  rope_theta: float
  rope_scaling: tuple
  attention_bias: bool
  output_bias: bool
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x, allowed, positions, *, cache=None, index=None):
    c = self
    dense = lambda features, name, bias=False: nn.Dense(  # noqa: E731
      features, use_bias=bias, dtype=c.dtype, param_dtype=c.param_dtype, name=name
    )
    b, t, _ = x.shape
    h = RMSNorm(c.rms_norm_eps, c.param_dtype, name="input_layernorm")(x)
    with_bias = c.attention_bias
    q = dense(c.num_heads * c.head_dim, "q_proj", with_bias)(h)
    k = dense(c.num_kv_heads * c.head_dim, "k_proj", with_bias)(h)
    v = dense(c.num_kv_heads * c.head_dim, "v_proj", with_bias)(h)
    q = q.reshape(b, t, c.num_heads, c.head_dim)
    k = k.reshape(b, t, c.num_kv_heads, c.head_dim)
    v = v.reshape(b, t, c.num_kv_heads, c.head_dim)
    inv_freq = rope_inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    if cache is not None:
      k, v = update_cache(cache, k, v, index)
    out = attention(q, k, v, allowed, 1.0 / math.sqrt(c.head_dim))
    x = x + dense(x.shape[-1], "o_proj", c.output_bias)(out.reshape(b, t, -1).astype(x.dtype))
    h = RMSNorm(c.rms_norm_eps, c.param_dtype, name="post_attention_layernorm")(x)
    gate = dense(c.mlp_dim, "gate_proj")(h)
    up = dense(c.mlp_dim, "up_proj")(h)
    x = x + dense(x.shape[-1], "down_proj")(nn.silu(gate) * up)
    return x, (k, v)


class LlamaLM(nn.Module):
  r"""Llama-style decoder-only LM (see the module docstring).

  Attributes:
    vocab_size: tokens (and logits per position).
    max_len: largest position (``max_position_embeddings``) and cache length.
    embed_dim: model width (``hidden_size``).
    num_layers: decoder layers.
    num_heads: query heads.
    num_kv_heads: key/value heads (divides ``num_heads``; = ``num_heads`` without GQA).
    head_dim: width of each head (Hugging Face default ``embed_dim // num_heads``).
    mlp_dim: SwiGLU hidden width (``intermediate_size``).
    rms_norm_eps: the RMSNorm epsilon.
    rope_theta: the RoPE base.
    rope_scaling: sorted ``(key, value)`` pairs of the ``rope_scaling`` dict (empty: none).
    attention_bias: biases on q, k, v (Qwen2; Llama's ``attention_bias``).
    output_bias: a bias on o_proj too (Llama's ``attention_bias``; not Qwen2).
    tie_embeddings: the LM head is the embedding's transpose (no ``lm_head`` parameter).
    dtype: compute dtype (float32 or bfloat16); logits are always float32.
    param_dtype: dtype of newly initialised parameters.
  """

  vocab_size: int = 256
  max_len: int = 128
  embed_dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  mlp_dim: int = 128
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: tuple = ()
  attention_bias: bool = False
  output_bias: bool = False
  tie_embeddings: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def kv_shape(self) -> tuple[int, int]:
    """``(num_kv_heads, head_dim)``: the trailing shape of each cached key/value."""
    return (self.num_kv_heads, self.head_dim)

  def head_weights(self, params) -> jax.Array:
    """The ``[embed_dim + 1, vocab]`` LM head (kernel, then a zero bias row) for chunked KD."""
    kernel = params["embed_tokens"]["embedding"].T if self.tie_embeddings else None
    if kernel is None:
      kernel = params["lm_head"]["kernel"]
    return jnp.concatenate([kernel, jnp.zeros((1, kernel.shape[1]), kernel.dtype)], axis=0)

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
    """Logits (or final hidden states) of ``tokens``; with ``cache`` also the new cache
    (the arguments are :meth:`kdjax.models.transformer.TransformerLM.__call__`'s; there is
    no dropout, ``train`` is accepted for the common signature)."""
    del train
    check_tokens(tokens, self.max_len)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
    start, positions, allowed, key_valid = causal_mask(tokens, positions, valid, cache)
    embed = nn.Embed(
      self.vocab_size,
      self.embed_dim,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="embed_tokens",
    )
    h = embed(tokens).astype(self.dtype)
    new_layers = []
    for layer in range(self.num_layers):
      h, kv = LlamaBlock(
        self.num_heads,
        self.num_kv_heads,
        self.head_dim,
        self.mlp_dim,
        self.rms_norm_eps,
        self.rope_theta,
        self.rope_scaling,
        self.attention_bias,
        self.output_bias,
        self.dtype,
        self.param_dtype,
        name=f"layers_{layer}",
      )(
        h,
        allowed,
        positions,
        index=start,
        cache=None if cache is None else cache["layers"][layer],
      )
      new_layers.append(kv)
    h = RMSNorm(self.rms_norm_eps, self.param_dtype, name="norm")(h)
    if return_hidden:
      out = h
    elif self.tie_embeddings:
      out = embed.attend(h).astype(jnp.float32)
    else:
      head = nn.Dense(
        self.vocab_size,
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="lm_head",
      )
      out = head(h).astype(jnp.float32)
    if return_hidden and self.is_initializing() and not self.tie_embeddings:
      nn.Dense(self.vocab_size, use_bias=False, param_dtype=self.param_dtype, name="lm_head")(h)
    if cache is None:
      return out
    return out, {"index": start + tokens.shape[1], "valid": key_valid, "layers": tuple(new_layers)}
