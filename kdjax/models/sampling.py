r"""Jitted batched generation for :class:`~kdjax.models.transformer.TransformerLM`.

:func:`generate` continues a batch of prompts with a key/value cache: one forward pass
over the prompts (prefill), then one single-token pass per new token inside a
``lax.while_loop`` (which stops as soon as every sequence has emitted EOS).

Prompts come **right-padded**: ``prompts[b, :prompt_lengths[b]]`` is prompt ``b``, the
rest is ignored. Inside, each row is shifted to the right (left padding), so that all
prompts end in the same cache slot; padding slots are marked invalid (never attended to)
and every token keeps its position in its own sequence. Each continuation is therefore
exactly what that prompt alone would produce.

Each new token is drawn from the filtered distribution

.. math::
  p(y) \propto \exp(z_y / T)\,[y \in \mathrm{top}_k]\,[y \in \mathrm{top}_p]

(temperature ``T``; top-k keeps the ``k`` largest logits, Fan et al. (2018),
"Hierarchical Neural Story Generation"; top-p keeps the smallest set of most likely
tokens whose probability reaches ``p``, Holtzman et al. (2020), "The Curious Case of
Neural Text Degeneration"), or is the argmax when ``greedy``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from kdjax.models.transformer import TransformerLM, init_cache

__all__ = ["filter_logits", "sample_logits", "generate"]


def filter_logits(
  logits: jax.Array,
  *,
  temperature: jax.typing.ArrayLike = 1.0,
  top_k: int = 0,
  top_p: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
  """Logits divided by ``temperature``, with entries outside top-k / top-p set to -inf.

  Args:
    logits: ``[..., vocab]``.
    temperature: T > 0.
    top_k: keep the k largest logits (0 = all). Ties with the k-th largest are kept.
    top_p: keep the most likely tokens until their probability reaches ``top_p``
      (1 = all); the most likely token is always kept.

  Returns:
    ``[..., vocab]`` float32 filtered logits.
  """
  logits = jnp.asarray(logits, jnp.float32) / temperature
  if top_k:
    kth = lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  order = jnp.argsort(-logits, axis=-1)
  sorted_probs = jnp.take_along_axis(jax.nn.softmax(logits), order, axis=-1)
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  keep_sorted = mass_before < top_p
  keep = (
    jnp.zeros_like(keep_sorted).at[tuple(jnp.indices(order.shape)[:-1]) + (order,)].set(keep_sorted)
  )
  return jnp.where(keep, logits, -jnp.inf)


def sample_logits(
  rng: jax.Array,
  logits: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  top_k: int,
  top_p: jax.typing.ArrayLike,
  greedy: bool,
) -> jax.Array:
  """One token id per row of ``logits [..., vocab]`` (int32 ``[...]``)."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
  return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


@functools.partial(
  jax.jit, static_argnames=("model", "max_new_tokens", "top_k", "greedy", "eos_id", "pad_id")
)
def _generate(
  model: TransformerLM,
  variables: Any,
  prompts: jax.Array,
  lengths: jax.Array,
  rng: jax.Array,
  temperature: jax.Array,
  top_p: jax.Array,
  *,
  max_new_tokens: int,
  top_k: int,
  greedy: bool,
  eos_id: int | None,
  pad_id: int,
) -> dict:
  batch, prompt_len = prompts.shape
  shift = prompt_len - lengths  # left padding per row
  slots = jnp.arange(prompt_len)
  source = jnp.clip(slots[None, :] - shift[:, None], 0, prompt_len - 1)
  left = jnp.take_along_axis(prompts, source, axis=1)
  valid = slots[None, :] >= shift[:, None]
  left = jnp.where(valid, left, pad_id)
  positions = jnp.maximum(slots[None, :] - shift[:, None], 0)
  cache = init_cache(model, batch, prompt_len + max_new_tokens - 1)
  logits, cache = model.apply(variables, left, positions=positions, valid=valid, cache=cache)
  sample = functools.partial(
    sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy
  )

  def cond(carry):
    i, _, _, done, _, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, last_logits, cache, done, tokens, rng = carry
    rng, key = jax.random.split(rng)
    token = jnp.where(done, pad_id, sample(key, last_logits))
    tokens = tokens.at[:, i].set(token)
    new_done = done if eos_id is None else done | (token == eos_id)
    last_logits, cache = lax.cond(
      i + 1 < max_new_tokens,
      lambda c: model.apply(
        variables, token[:, None], positions=(lengths + i)[:, None], valid=~done[:, None], cache=c
      ),
      lambda c: (last_logits[:, None], c),
      cache,
    )
    return i + 1, last_logits[:, -1], cache, new_done, tokens, rng

  tokens = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
  carry = (jnp.zeros((), jnp.int32), logits[:, -1], cache, jnp.zeros(batch, bool), tokens, rng)
  num_steps, _, _, _, tokens, _ = lax.while_loop(cond, body, carry)
  emitted = jnp.arange(max_new_tokens)[None, :] < num_steps
  if eos_id is None:
    mask = jnp.broadcast_to(emitted, tokens.shape)
  else:
    eos_before = jnp.cumsum(tokens == eos_id, axis=1) - (tokens == eos_id)
    mask = emitted & (eos_before == 0)
  return {"tokens": tokens, "mask": mask, "lengths": jnp.sum(mask, axis=1, dtype=jnp.int32)}


def generate(
  model: TransformerLM,
  variables: Any,
  prompts: jax.typing.ArrayLike,
  prompt_lengths: jax.typing.ArrayLike | None = None,
  *,
  rng: jax.Array,
  max_new_tokens: int,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  greedy: bool = False,
  eos_id: int | None = None,
  pad_id: int = 0,
) -> dict:
  """Continues each prompt by up to ``max_new_tokens`` tokens (jitted, KV cache).

  Args:
    model: the TransformerLM.
    variables: its variables (``{'params': ...}``).
    prompts: int ``[batch, prompt_len]``, right-padded (see the module docstring).
    prompt_lengths: int ``[batch]`` real length of each prompt, each in
      ``[1, prompt_len]`` (default: all ``prompt_len``).
    rng: PRNG key of the sampling.
    max_new_tokens: tokens to generate (>= 1); ``prompt_len + max_new_tokens - 1`` must
      fit in ``model.max_len`` (the last token is never fed back).
    temperature: softmax temperature T > 0 (also validated when ``greedy``).
    top_k: keep only the k most likely tokens (0 = off).
    top_p: nucleus mass in (0, 1] (1 = off).
    greedy: take the argmax instead of sampling.
    eos_id: generation of a sequence stops after it emits this token (None = never).
    pad_id: fills the tokens after EOS and the left padding.

  Returns:
    ``{'tokens': int32 [batch, max_new_tokens], 'mask': bool [batch, max_new_tokens]
    (True for generated tokens up to and including EOS), 'lengths': int32 [batch]}``.

  Raises:
    ValueError: a prompt too long for ``model.max_len``, ``temperature <= 0``, ``top_k``
      outside ``[0, vocab_size]``, ``top_p`` outside (0, 1], bad ``prompt_lengths``.
  """
  prompts = jnp.asarray(prompts, jnp.int32)
  if prompts.ndim != 2 or prompts.shape[1] < 1:
    raise ValueError(f"prompts must be int [batch, prompt_len >= 1], got shape {prompts.shape}")
  batch, prompt_len = prompts.shape
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if prompt_len + max_new_tokens - 1 > model.max_len:
    raise ValueError(
      f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} - 1 "
      f"exceeds the model's max_len={model.max_len}"
    )
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if not 0 <= top_k <= model.vocab_size:
    raise ValueError(f"top_k must be in [0, vocab_size={model.vocab_size}], got {top_k}")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  if prompt_lengths is None:
    lengths = jnp.full((batch,), prompt_len, jnp.int32)
  else:
    lengths = jnp.asarray(prompt_lengths, jnp.int32)
    if lengths.shape != (batch,):
      raise ValueError(f"prompt_lengths must have shape ({batch},), got {lengths.shape}")
    try:
      low, high = int(lengths.min()), int(lengths.max())
    except jax.errors.ConcretizationTypeError:  # traced: checked by the caller
      low, high = 1, prompt_len
    if low < 1 or high > prompt_len:
      raise ValueError(f"prompt_lengths must be in [1, {prompt_len}], got {lengths}")
  return _generate(
    model,
    variables,
    prompts,
    lengths,
    rng,
    jnp.float32(temperature),
    jnp.float32(top_p),
    max_new_tokens=max_new_tokens,
    top_k=int(top_k),
    greedy=bool(greedy),
    eos_id=eos_id,
    pad_id=int(pad_id),
  )
