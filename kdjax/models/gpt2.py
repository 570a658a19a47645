r"""GPT-2 (Radford et al. (2019), "Language models are unsupervised multitask learners").

.. math::
  h_0 = E[x_t] + P_{p_t}, \quad a_l = h_l + W_{proj}\,\mathrm{Attn}(W_{attn}\,
  \mathrm{LN}_1(h_l)), \quad h_{l+1} = a_l + W_2\,\mathrm{gelu}(W_1\,\mathrm{LN}_2(a_l)),
  \quad \mathrm{logits} = E\,\mathrm{LN}_f(h_L)

with learned positions, pre-LayerNorm blocks, the tanh-approximated GELU (``gelu_new``)
and the LM head tied to the token embedding. The call signature and the KV cache are
:class:`~kdjax.models.transformer.TransformerLM`'s, so :func:`kdjax.models.sampling.generate`
and the ``lm`` job use it unchanged.

Parameter names follow Hugging Face (``wte``, ``wpe``, ``h_{i}/attn_c_attn`` for
``h.{i}.attn.c_attn``, ``h_{i}/mlp_c_fc``, ``ln_f``). HF's ``Conv1D`` stores its weight as
``[in, out]``, which is already a flax ``kernel`` (no transpose, unlike ``nn.Linear``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models.llama import attention
from kdjax.models.transformer import Cache, causal_mask, check_tokens, update_cache

ACTIVATIONS = {
  "gelu_new": lambda x: nn.gelu(x, approximate=True),
  "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
  "gelu": lambda x: nn.gelu(x, approximate=False),
  "relu": nn.relu,
}


class GPT2Block(nn.Module):
  """Pre-LN block: multi-head causal attention, then the GELU MLP, each with a residual."""

  num_heads: int
  mlp_dim: int
  layer_norm_eps: float
  activation: str
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x, allowed, *, cache=None, index=None):
    dense = lambda features, name: nn.Dense(  # noqa: E731
      features, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    norm = lambda name: nn.LayerNorm(  # noqa: E731
      self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    b, t, width = x.shape
    head_dim = width // self.num_heads
    h = norm("ln_1")(x)
    qkv = dense(3 * width, "attn_c_attn")(h)
    q, k, v = (a.reshape(b, t, self.num_heads, head_dim) for a in jnp.split(qkv, 3, axis=-1))
    if cache is not None:
      k, v = update_cache(cache, k, v, index)
    out = attention(q, k, v, allowed, 1.0 / math.sqrt(head_dim))
    x = x + dense(width, "attn_c_proj")(out.reshape(b, t, width).astype(x.dtype))
    h = norm("ln_2")(x)
    h = dense(self.mlp_dim, "mlp_c_fc")(h)
    x = x + dense(width, "mlp_c_proj")(ACTIVATIONS[self.activation](h))
    return x, (k, v)


class GPT2LM(nn.Module):
  """GPT-2 decoder-only LM (see the module docstring).

  Attributes:
    vocab_size: tokens (and logits per position).
    max_len: number of learned positions (``n_positions``).
    embed_dim: model width (``n_embd``).
    num_layers: blocks (``n_layer``).
    num_heads: attention heads (``n_head``, divides ``embed_dim``).
    mlp_dim: MLP hidden width (``n_inner``, default ``4 * embed_dim``).
    layer_norm_eps: the LayerNorm epsilon.
    activation: a key of :data:`ACTIVATIONS` (``activation_function``).
    dtype: compute dtype (float32 or bfloat16); logits are always float32.
    param_dtype: dtype of newly initialised parameters.
  """

  vocab_size: int = 256
  max_len: int = 128
  embed_dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  layer_norm_eps: float = 1e-5
  activation: str = "gelu_new"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def kv_shape(self) -> tuple[int, int]:
    """``(num_heads, head_dim)``: the trailing shape of each cached key/value."""
    return (self.num_heads, self.embed_dim // self.num_heads)

  def head_weights(self, params) -> jax.Array:
    """The ``[embed_dim + 1, vocab]`` LM head (tied embedding, zero bias) for chunked KD."""
    kernel = params["wte"]["embedding"].T
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
    """As :meth:`kdjax.models.transformer.TransformerLM.__call__` (no dropout)."""
    del train
    check_tokens(tokens, self.max_len)
    if self.embed_dim % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide embed_dim={self.embed_dim}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
    start, positions, allowed, key_valid = causal_mask(tokens, positions, valid, cache)
    wte = nn.Embed(
      self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="wte"
    )
    wpe = self.param(
      "wpe", nn.initializers.normal(0.01), (self.max_len, self.embed_dim), self.param_dtype
    )
    h = wte(tokens) + jnp.take(wpe, positions, axis=0).astype(self.dtype)
    new_layers = []
    for layer in range(self.num_layers):
      h, kv = GPT2Block(
        self.num_heads,
        self.mlp_dim,
        self.layer_norm_eps,
        self.activation,
        self.dtype,
        self.param_dtype,
        name=f"h_{layer}",
      )(h, allowed, index=start, cache=None if cache is None else cache["layers"][layer])
      new_layers.append(kv)
    h = nn.LayerNorm(
      self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="ln_f"
    )(h)
    out = h if return_hidden else wte.attend(h).astype(jnp.float32)
    if cache is None:
      return out
    return out, {"index": start + tokens.shape[1], "valid": key_valid, "layers": tuple(new_layers)}
