r"""`GlobalSelfAttention`: neural-tangents' infinite-width attention with linear scaling.

With `linear_scaling=True` (neural-tangents' default) the query and key weights are tied
and their dot products are scaled by `1 / (C n_key)`, so that as the number of heads and
key/value channels grows the attention weights of example `i` converge to the constants

.. math::
  G_i(p, p') = \sigma\big(\sigma_{QK} \tilde K_i(p, p')\big), \qquad
  \sigma_{QK} = W_{query,std} W_{key,std},

with `sigma` applied over all key positions `p'` (softmax) or elementwise (identity, abs,
relu), and `\tilde K_i` the covariance of example `i` with itself, interpolated with the
positional-embedding covariance `R` (`pos_emb_type`). The outputs are a Gaussian process
with, for `\sigma_{OV} = W_{out,std} W_{value,std}`,

.. math::
  K'_{ij}(p, q) = \sigma_{OV}^2 \sum_{p', q'} G_i(p, p') V_{ij}(p', q') G_j(q, q') + b_{std}^2,
  \qquad
  \Theta'_{ij} = \sigma_{OV}^2 G_i \Theta^V_{ij} G_j^T + b_{std}^2
    + 2 (K'_{ij} - b_{std}^2),

where `V` is `K` (or `\tilde K` with `val_pos_emb`) and `\Theta^V` the NTK likewise.

References:
  Hron, Bahri, Sohl-Dickstein, Novak, 2020, "Infinite attention: NNGP and NTK for deep
    attention networks" (ICML).
  Novak et al., 2020, "Neural Tangents: Fast and Easy Infinite Neural Networks in Python".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from kdjax.kernels.stax import layout
from kdjax.kernels.stax.covariance import batch_diagonal, single
from kdjax.kernels.stax.layer import check_std, layer

_MECHANISMS = {
  "SOFTMAX": lambda g: jax.nn.softmax(g, axis=-1),
  "IDENTITY": lambda g: g,
  "ABS": jnp.abs,
  "RELU": jax.nn.relu,
}
_POS_EMB_TYPES = ("NONE", "SUM", "CONCAT")


def _pos_emb_covariance(spatial: tuple, p_norm: float, decay_fn: Callable | None) -> jax.Array:
  """`R[p, q]` `[P, P]`: identity, or `decay_fn(sum_a |p_a - q_a|^p_norm)`."""
  size = math.prod(spatial)
  if decay_fn is None:
    return jnp.eye(size)
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(n) for n in spatial], indexing="ij"), -1)
  grid = grid.reshape(size, len(spatial))
  distance = jnp.sum(jnp.abs(grid[:, None] - grid[None]) ** p_norm, axis=-1)
  return jnp.asarray(decay_fn(distance))


def GlobalSelfAttention(
  n_chan_out: int,
  n_chan_key: int,
  n_chan_val: int,
  n_heads: int,
  linear_scaling: bool = True,
  W_key_std: float = 1.0,
  W_value_std: float = 1.0,
  W_query_std: float = 1.0,
  W_out_std: float = 1.0,
  b_std: float | None = None,
  attention_mechanism: str = "SOFTMAX",
  pos_emb_type: str = "NONE",
  pos_emb_p_norm: float = 2,
  pos_emb_decay_fn: Callable | None = None,
  n_chan_pos_emb: int | None = None,
  W_pos_emb_std: float = 1.0,
  val_pos_emb: bool = False,
  batch_axis: int = 0,
  channel_axis: int = -1,
):
  r"""Global scaled dot-product self-attention over all spatial positions (module docstring).

  `f(x) = concat_h[sigma(Q_h(x) K_h(x)^T / (C n_key)) V_h(x)] W_out + b` with
  `Q_h = K_h` (tied, linear scaling), NTK-parameterised weights and, for
  `pos_emb_type='SUM'`/`'CONCAT'`, trainable Gaussian positional embeddings added to or
  concatenated with the inputs (of keys and queries, and of values if `val_pos_emb`).

  Args:
    n_chan_out: output channels.
    n_chan_key: key/query channels per head.
    n_chan_val: value channels per head.
    n_heads: number of heads.
    linear_scaling: must be True (the kernel of `1/sqrt` scaling has no closed form for
      most mechanisms; not supported here).
    W_key_std: key weight std (the kernel depends on `W_key_std * W_query_std`).
    W_value_std: value weight std (the kernel depends on `W_out_std * W_value_std`).
    W_query_std: query weight std.
    W_out_std: output weight std.
    b_std: bias std; None for no bias.
    attention_mechanism: 'SOFTMAX', 'IDENTITY', 'ABS' or 'RELU'.
    pos_emb_type: 'NONE', 'SUM' or 'CONCAT'.
    pos_emb_p_norm: `p` of the distance given to `pos_emb_decay_fn`.
    pos_emb_decay_fn: positional covariance as a function of `sum_a |p_a - q_a|^p`; None
      for independent (one-hot) embeddings per position.
    n_chan_pos_emb: CONCAT only: embedding channels (None: as many as the inputs).
    W_pos_emb_std: embedding std.
    val_pos_emb: whether values also see the embeddings.
    batch_axis: the batch axis of the inputs (see `layout`).
    channel_axis: the channel axis of the inputs.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  for name, value in (
    ("n_chan_out", n_chan_out),
    ("n_chan_key", n_chan_key),
    ("n_chan_val", n_chan_val),
    ("n_heads", n_heads),
  ):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if linear_scaling is not True:
    raise ValueError(
      f"linear_scaling={linear_scaling!r} is not supported: only linear_scaling=True (tied "
      "queries and keys, 1/n_chan_key scaling) has the closed-form kernel implemented here"
    )
  for name, value in (
    ("W_key_std", W_key_std),
    ("W_value_std", W_value_std),
    ("W_query_std", W_query_std),
    ("W_out_std", W_out_std),
    ("W_pos_emb_std", W_pos_emb_std),
  ):
    check_std(name, value, False)
  check_std("b_std", b_std, True)
  if attention_mechanism not in _MECHANISMS:
    raise ValueError(
      f"attention_mechanism must be one of {sorted(_MECHANISMS)}, got {attention_mechanism!r}"
    )
  if pos_emb_type not in _POS_EMB_TYPES:
    raise ValueError(f"pos_emb_type must be one of {_POS_EMB_TYPES}, got {pos_emb_type!r}")
  if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
    raise ValueError(f"pos_emb_decay_fn must be callable or None, got {pos_emb_decay_fn!r}")
  if not isinstance(pos_emb_p_norm, (int, float)) or not pos_emb_p_norm > 0:
    raise ValueError(f"pos_emb_p_norm must be a positive number, got {pos_emb_p_norm!r}")
  if n_chan_pos_emb is not None:
    if pos_emb_type != "CONCAT":
      raise ValueError(
        f"n_chan_pos_emb only applies to pos_emb_type='CONCAT', got {pos_emb_type!r}"
      )
    c = n_chan_pos_emb
    if isinstance(c, bool) or not isinstance(c, int) or c < 1:
      raise ValueError(f"n_chan_pos_emb must be a positive int or None, got {c!r}")
  if not isinstance(val_pos_emb, bool):
    raise ValueError(f"val_pos_emb must be a bool, got {val_pos_emb!r}")
  layout.check_arg("batch_axis", batch_axis)
  layout.check_arg("channel_axis", channel_axis)
  qk_std = W_query_std * W_key_std
  ov_std = W_out_std * W_value_std
  mechanism = _MECHANISMS[attention_mechanism]
  with_pos_emb = pos_emb_type != "NONE"

  def pos_channels(channels):
    return channels if n_chan_pos_emb is None else n_chan_pos_emb

  def check_spatial(spatial):
    if not spatial:
      raise ValueError(
        "GlobalSelfAttention needs inputs with spatial axes [batch, *spatial, channels]"
      )

  # The finite network, on canonical [n, *S, C] inputs.
  def init_fn(key, input_shape):
    check_spatial(tuple(input_shape[1:-1]))
    k_q, k_k, k_v, k_o, k_b, k_pe = jax.random.split(key, 6)
    del k_q  # queries are tied to keys (linear scaling)
    c_keys = c_vals = input_shape[-1]
    pos_emb = None
    if with_pos_emb:
      c_pe = pos_channels(input_shape[-1])
      pos_emb = jax.random.normal(k_pe, (1,) + tuple(input_shape[1:-1]) + (c_pe,))
      if pos_emb_type == "CONCAT":
        c_keys += c_pe
        c_vals += c_pe if val_pos_emb else 0
    keys = jax.random.normal(k_k, (n_heads, c_keys, n_chan_key))
    values = jax.random.normal(k_v, (n_heads, c_vals, n_chan_val))
    w_out = jax.random.normal(k_o, (n_chan_val * n_heads, n_chan_out))
    b = None if b_std is None else jax.random.normal(k_b, (n_chan_out,))
    out_shape = tuple(input_shape[:-1]) + (n_chan_out,)
    return out_shape, (None, keys, values, w_out, b, pos_emb)

  def apply_fn(params, x, **kwargs):
    _, keys, values, w_out, b, pos_emb = params
    n, spatial = x.shape[0], x.shape[1:-1]
    check_spatial(spatial)
    x_val = x
    if with_pos_emb:
      if pos_emb_decay_fn is not None:
        chol = jnp.linalg.cholesky(_pos_emb_covariance(spatial, pos_emb_p_norm, pos_emb_decay_fn))
        flat = pos_emb.reshape(-1, pos_emb.shape[-1])
        pos_emb = (chol.astype(x.dtype) @ flat).reshape(pos_emb.shape)
      pos_emb = W_pos_emb_std * pos_emb.astype(x.dtype)
      if pos_emb_type == "SUM":
        x = x + pos_emb
      else:
        x = jnp.concatenate([x, jnp.broadcast_to(pos_emb, x.shape[:-1] + pos_emb.shape[-1:])], -1)
      x_val = x if val_pos_emb else x_val
    x, x_val = x.reshape(n, -1, x.shape[-1]), x_val.reshape(n, -1, x_val.shape[-1])
    k = jnp.einsum("npc,hck->hnpk", x, keys)
    v = jnp.einsum("npc,hcv->hnpv", x_val, values)
    g = jnp.einsum("hnpk,hnqk->hnpq", k, k) * (qk_std / (x.shape[-1] * n_chan_key))
    heads = jnp.einsum("hnpq,hnqv->npvh", mechanism(g), v)
    heads = heads.reshape(heads.shape[:2] + (-1,))
    out = heads @ w_out * (ov_std / math.sqrt(n_chan_val * n_heads * x_val.shape[-1]))
    out = out.reshape((n,) + spatial + (n_chan_out,))
    return out if b is None else out + b_std * b

  def transform(k):
    k = single("GlobalSelfAttention", k)
    layout.require("GlobalSelfAttention", k, batch_axis, channel_axis)
    check_spatial(k.spatial)
    if not k.full:
      raise ValueError("GlobalSelfAttention needs pixel-pair covariances")
    size = math.prod(k.spatial)
    flat = lambda m, batch_ndim: m.reshape(m.shape[:batch_ndim] + (size, size))
    bias = 0.0 if b_std is None else b_std**2
    if with_pos_emb:
      r = _pos_emb_covariance(k.spatial, pos_emb_p_norm, pos_emb_decay_fn).astype(k.nngp.dtype)
      in_weight, pe_weight = 1.0, W_pos_emb_std**2
      if pos_emb_type == "CONCAT":
        total = k.channels + pos_channels(k.channels)
        in_weight, pe_weight = k.channels / total, pe_weight * pos_channels(k.channels) / total
      interp = lambda m: in_weight * m + pe_weight * r
    else:
      interp = lambda m: m
    values = interp if val_pos_emb else (lambda m: m)

    def weights(cov):
      return mechanism(qk_std * interp(flat(cov, 1)))

    g1 = weights(k.cov1)
    g2 = g1 if k.cov2 is None else weights(k.cov2)

    def weigh(mat, ga, gb, pairs):
      spec = "ipa,ijab,jqb->ijpq" if pairs else "ipa,iab,iqb->ipq"
      out = ov_std**2 * jnp.einsum(spec, ga, values(mat), gb) + bias
      return out.reshape(out.shape[: 2 if pairs else 1] + k.spatial + k.spatial)

    nngp = weigh(flat(k.nngp, 2), g1, g2, True)
    ntk = None
    if k.with_ntk:
      ntk_in = jnp.zeros_like(flat(k.nngp, 2)) if k.ntk is None else flat(k.ntk, 2)
      ntk = weigh(ntk_in, g1, g2, True) + 2 * (nngp - bias)
    if k.cov2 is None:  # x2 is x1: the covariances are the batch diagonal
      cov1, cov2 = batch_diagonal(nngp), None
    else:
      cov1 = weigh(flat(k.cov1, 1), g1, g1, False)
      cov2 = weigh(flat(k.cov2, 1), g2, g2, False)
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, channels=n_chan_out, is_input=False)

  init_fn, apply_fn = layout.in_layout(
    "GlobalSelfAttention", init_fn, apply_fn, batch_axis, channel_axis
  )
  requirements = {"batch_axis": batch_axis, "channel_axis": channel_axis}
  return layer(init_fn, apply_fn, transform, lambda full: True, requirements=requirements)
