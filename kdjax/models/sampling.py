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

__all__ = ["filter_logits", "sample_logits", "generate", "speculative_generate"]


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


def _check_prompts(prompts, max_new_tokens: int) -> jax.Array:
  """``prompts`` as int32 ``[batch, prompt_len >= 1]``; ValueError for another shape or
  ``max_new_tokens < 1``."""
  prompts = jnp.asarray(prompts, jnp.int32)
  if prompts.ndim != 2 or prompts.shape[1] < 1:
    raise ValueError(f"prompts must be int [batch, prompt_len >= 1], got shape {prompts.shape}")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  return prompts


def _prompt_lengths(prompt_lengths, batch: int, prompt_len: int, *, traced_ok: bool) -> jax.Array:
  """int32 ``[batch]`` prompt lengths (default all ``prompt_len``), checked to lie in
  ``[1, prompt_len]``; with ``traced_ok``, traced lengths pass unchecked (their caller checks)."""
  if prompt_lengths is None:
    return jnp.full((batch,), prompt_len, jnp.int32)
  lengths = jnp.asarray(prompt_lengths, jnp.int32)
  if lengths.shape != (batch,):
    raise ValueError(f"prompt_lengths must have shape ({batch},), got {lengths.shape}")
  try:
    low, high = int(lengths.min()), int(lengths.max())
  except jax.errors.ConcretizationTypeError:  # traced: checked by the caller
    if not traced_ok:
      raise
    low, high = 1, prompt_len
  if low < 1 or high > prompt_len:
    raise ValueError(f"prompt_lengths must be in [1, {prompt_len}], got {lengths}")
  return lengths


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
  prompts = _check_prompts(prompts, max_new_tokens)
  batch, prompt_len = prompts.shape
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
  lengths = _prompt_lengths(prompt_lengths, batch, prompt_len, traced_ok=True)
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


# ----------------------------------------------------------------------------------------
# Speculative sampling.


def _row_cache(model: TransformerLM, cache_len: int) -> dict:
  """An empty batch-1 cache of ``cache_len`` slots, which may exceed ``model.max_len``: the
  model indexes its position embeddings by ``positions``, not by slot, so the extra slots
  only hold the draft tokens speculated past the last one that is kept."""
  cache = init_cache(model, 1, min(cache_len, model.max_len))
  extra = cache_len - cache["valid"].shape[1]
  if extra > 0:
    pad = lambda x: jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))  # noqa: E731
    cache = {**cache, "valid": pad(cache["valid"]), "layers": jax.tree.map(pad, cache["layers"])}
  return cache


def _roll_back(cache: dict, index: jax.Array) -> dict:
  """The cache with its next free slot reset to ``index`` and every slot from there on
  marked invalid (its stale keys/values are never attended to, and are overwritten)."""
  slots = jnp.arange(cache["valid"].shape[1])
  return {**cache, "index": index, "valid": cache["valid"] & (slots < index)[None]}


def _probs(logits: jax.Array, temperature: jax.Array, greedy: jax.Array) -> jax.Array:
  """``softmax(logits / T)`` (float32), or the one-hot of the argmax when ``greedy`` (a
  traced bool: greedy and sampled decoding share one compiled program)."""
  one_hot = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
  soft = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.where(greedy, one_hot, soft)


def _draw(key: jax.Array, probs: jax.Array, greedy: jax.Array) -> jax.Array:
  """One token from unnormalised ``probs [..., V]`` (the argmax when ``greedy``)."""
  drawn = jax.random.categorical(key, jnp.log(probs), axis=-1)
  return jnp.where(greedy, jnp.argmax(probs, axis=-1), drawn).astype(jnp.int32)


def _speculative_row(
  target: TransformerLM,
  target_variables: Any,
  draft: TransformerLM,
  draft_variables: Any,
  prompt: jax.Array,
  length: jax.Array,
  rng: jax.Array,
  temperature: jax.Array,
  greedy: jax.Array,
  *,
  max_new_tokens: int,
  num_draft_tokens: int,
  eos_id: int | None,
  pad_id: int,
) -> dict:
  """Speculative sampling of one prompt (``prompt [P]``, real length ``length``).

  Slot ``s`` of both caches holds the token at position ``s``. Invariant at the start of
  each round: both caches hold the prompt and the emitted tokens except the last one
  (``x``), ``index = length - 1 + n`` after ``n`` emitted tokens, and ``y`` is the token
  before ``x`` (``x``'s slot is ``index``, ``y``'s ``index - 1``).
  """
  k = num_draft_tokens
  prompt_len = prompt.shape[0]
  cache_len = prompt_len + max_new_tokens + k - 1
  slots = jnp.arange(prompt_len)
  prefill = dict(positions=slots[None], valid=(slots < length - 1)[None])

  def start(model, variables):
    _, cache = model.apply(variables, prompt[None], cache=_row_cache(model, cache_len), **prefill)
    return _roll_back(cache, length - 1)

  def clip(model, positions):
    # Positions past max_len - 1 only occur for drafts beyond max_new_tokens (discarded).
    return jnp.minimum(positions, model.max_len - 1)

  def round_(carry):
    n, t_cache, d_cache, x, y, done, out, stats, rng = carry
    index = t_cache["index"]
    rng, draft_key, accept_key, fix_key = jax.random.split(rng, 4)
    # Draft, first step: [y, x] at slots index - 1, index (re-writing y, which is missing
    # from the draft's cache after a round where every draft token was accepted).
    has_y = index >= 1
    first = jnp.maximum(index - 1, 0)
    tokens = jnp.where(has_y, jnp.stack([y, x]), jnp.stack([x, pad_id]))
    logits, d_cache = draft.apply(
      draft_variables,
      tokens[None],
      positions=clip(draft, first + jnp.arange(2))[None],
      valid=jnp.stack([jnp.bool_(True), has_y])[None],
      cache={**d_cache, "index": first},
    )
    d_cache = {**d_cache, "index": index + 1}
    q_first = _probs(jnp.where(has_y, logits[0, 1], logits[0, 0]), temperature, greedy)
    keys = jax.random.split(draft_key, k)
    d_first = _draw(keys[0], q_first, greedy)

    def draft_step(c, key):
      d_cache, token = c
      logits, d_cache = draft.apply(
        draft_variables,
        token[None, None],
        positions=clip(draft, d_cache["index"])[None, None],
        cache=d_cache,
      )
      q = _probs(logits[0, 0], temperature, greedy)
      new = _draw(key, q, greedy)
      return (d_cache, new), (new, q)

    (d_cache, _), (rest, q_rest) = lax.scan(draft_step, (d_cache, d_first), keys[1:])
    drafts = jnp.concatenate([d_first[None], rest])  # [k]
    q = jnp.concatenate([q_first[None], q_rest])  # [k, V]
    # Target: scores x, d_1 .. d_k in one call -> p_1 .. p_{k+1}.
    logits, t_cache = target.apply(
      target_variables,
      jnp.concatenate([x[None], drafts])[None],
      positions=clip(target, index + jnp.arange(k + 1))[None],
      cache=t_cache,
    )
    p = _probs(logits[0], temperature, greedy)  # [k + 1, V]
    # Accept d_i with probability min(1, p_i(d_i) / q_i(d_i)), until the first rejection.
    p_d = jnp.take_along_axis(p[:k], drafts[:, None], axis=1)[:, 0]
    q_d = jnp.take_along_axis(q, drafts[:, None], axis=1)[:, 0]
    u = jax.random.uniform(accept_key, (k,))
    accepted = jnp.sum(jnp.cumprod(u * q_d < p_d), dtype=jnp.int32)
    # Then one more token: from norm(max(0, p_a - q_a)) after a rejection at a, or from
    # p_{k+1} (q taken as 0) when all k were accepted.
    q_a = jnp.where(accepted < k, q[jnp.minimum(accepted, k - 1)], 0.0)
    residual = jnp.maximum(p[accepted] - q_a, 0.0)
    residual = jnp.where(jnp.sum(residual) > 0, residual, p[accepted])  # (rounding guard)
    fixed = _draw(fix_key, residual, greedy)
    steps = jnp.arange(k + 1)
    proposed = jnp.concatenate([drafts, fixed[None]])
    emitted = jnp.where(steps < accepted, proposed, jnp.where(steps == accepted, fixed, pad_id))
    out = lax.dynamic_update_slice(out, emitted, (n,))
    # What counts: tokens up to max_new_tokens and the first EOS.
    keep = jnp.minimum(accepted + 1, max_new_tokens - n)
    new_done = done
    if eos_id is not None:
      is_eos = (emitted == eos_id) & (steps <= accepted)
      keep = jnp.minimum(keep, jnp.where(jnp.any(is_eos), jnp.argmax(is_eos) + 1, k + 1))
      new_done = done | jnp.any(is_eos)
    calls, num_accepted, num_rejected = stats
    stats = (
      calls + 1,
      num_accepted + jnp.minimum(accepted, keep),
      num_rejected + ((accepted < k) & (accepted < keep)).astype(jnp.int32),
    )
    new_index = index + accepted + 1
    y = jnp.where(accepted >= 1, drafts[jnp.maximum(accepted - 1, 0)], x)
    return (
      n + accepted + 1,
      _roll_back(t_cache, new_index),
      _roll_back(d_cache, new_index),
      fixed,
      y,
      new_done,
      out,
      stats,
      rng,
    )

  def cond(carry):
    n, done = carry[0], carry[5]
    return (n < max_new_tokens) & ~done

  zero = jnp.zeros((), jnp.int32)
  carry = (
    zero,
    start(target, target_variables),
    start(draft, draft_variables),
    prompt[length - 1],
    jnp.where(length >= 2, prompt[jnp.maximum(length - 2, 0)], pad_id),
    jnp.bool_(False),
    jnp.full((max_new_tokens + k + 1,), pad_id, jnp.int32),
    (zero, zero, zero),
    rng,
  )
  n, *_, out, (calls, num_accepted, num_rejected), _ = lax.while_loop(cond, round_, carry)
  tokens = out[:max_new_tokens]
  mask = jnp.arange(max_new_tokens) < n
  if eos_id is not None:
    eos_before = jnp.cumsum(tokens == eos_id) - (tokens == eos_id)
    mask = mask & (eos_before == 0)
  return {
    "tokens": jnp.where(mask, tokens, pad_id),
    "mask": mask,
    "lengths": jnp.sum(mask, dtype=jnp.int32),
    "num_target_calls": calls,
    "num_accepted": num_accepted,
    "num_rejected": num_rejected,
  }


@functools.partial(
  jax.jit,
  static_argnames=(
    "target",
    "draft",
    "max_new_tokens",
    "num_draft_tokens",
    "eos_id",
    "pad_id",
  ),
)
def _speculative(
  target,
  target_variables,
  draft,
  draft_variables,
  prompts,
  lengths,
  rng,
  temperature,
  greedy,
  **static,
) -> dict:
  row = functools.partial(
    _speculative_row, target, target_variables, draft, draft_variables, **static
  )
  keys = jax.random.split(rng, prompts.shape[0])
  if prompts.shape[0] == 1:  # no vmap: plain dynamic slices, an unbatched loop
    out = jax.tree.map(lambda v: v[None], row(prompts[0], lengths[0], keys[0], temperature, greedy))
  else:
    out = jax.vmap(row, in_axes=(0, 0, 0, None, None))(prompts, lengths, keys, temperature, greedy)
  accepted = out["num_accepted"].astype(jnp.float32)
  judged = accepted + out["num_rejected"]
  out["acceptance_rate"] = accepted / jnp.maximum(judged, 1)
  out["accepted_per_call"] = accepted / jnp.maximum(out["num_target_calls"], 1)
  return out


def speculative_generate(
  target: TransformerLM,
  target_variables: Any,
  draft: TransformerLM,
  draft_variables: Any,
  prompts: jax.typing.ArrayLike,
  prompt_lengths: jax.typing.ArrayLike | None = None,
  *,
  rng: jax.Array,
  max_new_tokens: int,
  num_draft_tokens: int,
  temperature: float = 1.0,
  greedy: bool = False,
  eos_id: int | None = None,
  pad_id: int = 0,
) -> dict:
  r"""Speculative sampling: ``target``'s continuations, drafted by ``draft`` (jitted, KV caches).

  Each round the draft proposes ``k = num_draft_tokens`` tokens
  :math:`d_i \sim q_i = q(\cdot \mid x_{<t+i})` autoregressively, and the target scores all
  of them in one call, giving :math:`p_1, \dots, p_{k+1}`. Draft token :math:`d_i` is
  accepted with probability :math:`\min(1, p_i(d_i) / q_i(d_i))`, in order, until the
  first rejection at :math:`a + 1`; then one more token is drawn, from

  .. math::
    \mathrm{norm}\big(\max(0,\ p_{a+1} - q_{a+1})\big) \ \text{after a rejection},\qquad
    p_{k+1} \ \text{when all } k \text{ were accepted},

  so every round emits ``a + 1`` tokens (1 to ``k + 1``) for one target call, and the
  emitted sequence has exactly the target's distribution (here ``softmax(logits / T)``).
  With ``greedy`` both distributions are the one-hot argmax: a draft token is kept when
  it is the target's argmax, and the output is greedy decoding of the target, token for
  token. Leviathan, Kalman & Matias (2023), "Fast Inference from Transformers via
  Speculative Decoding"; Chen et al. (2023), "Accelerating Large Language Model Decoding
  with Speculative Sampling".

  Rejected tokens are rolled back in both KV caches: the cache index returns to the
  slot after the last kept token, and the slots past it are marked invalid and then
  overwritten (slot ``s`` holds position ``s``, so a query never reaches a stale slot
  beyond its own anyway: resetting the index is what the test of greedy equality
  guards). Each sequence of the batch keeps its own caches and accepts its own
  counts (the per-row function is ``vmap``-ped; a batch of one runs without ``vmap``);
  a sequence stops at ``max_new_tokens`` or after emitting ``eos_id``.

  Args:
    target: the TransformerLM whose distribution is sampled.
    target_variables: its variables.
    draft: a (cheaper) TransformerLM with the same vocabulary.
    draft_variables: its variables.
    prompts: int ``[batch, prompt_len]``, right-padded (as :func:`generate`).
    prompt_lengths: int ``[batch]`` real prompt lengths in ``[1, prompt_len]`` (default:
      all ``prompt_len``).
    rng: PRNG key (row ``b`` uses ``jax.random.split(rng, batch)[b]``).
    max_new_tokens: tokens to generate (>= 1); ``prompt_len + max_new_tokens - 1`` must
      fit in both models' ``max_len``.
    num_draft_tokens: draft tokens ``k >= 1`` proposed per target call.
    temperature: ``T > 0`` of both models' softmax (validated also when ``greedy``).
    greedy: greedy decoding of the target (drafts proposed greedily too).
    eos_id: a sequence stops after emitting this token (None = never).
    pad_id: fills the tokens after EOS.

  Returns:
    :func:`generate`'s ``{'tokens', 'mask', 'lengths'}`` plus, per sequence (counting only
    kept tokens, up to ``max_new_tokens`` and EOS): ``'num_target_calls'`` int32 [batch]
    (rounds), ``'num_accepted'`` int32 [batch] (accepted draft tokens),
    ``'num_rejected'`` int32 [batch] (rejected draft tokens: at most one per call),
    ``'accepted_per_call'`` float32 [batch] (accepted draft tokens per target call; the
    tokens per call are one more) and ``'acceptance_rate'`` float32 [batch] (per-token
    acceptance rate ``accepted / (accepted + rejected)``, the empirical
    :math:`\alpha` of Leviathan et al.).

  Raises:
    ValueError: ``num_draft_tokens < 1``, vocabularies that differ, a prompt that does
      not fit the draft's or the target's ``max_len``, ``temperature <= 0``, bad
      ``prompt_lengths`` or ``max_new_tokens``.
  """
  if num_draft_tokens < 1:
    raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
  if draft.vocab_size != target.vocab_size:
    raise ValueError(
      "speculative decoding needs one vocabulary: draft vocab_size="
      f"{draft.vocab_size} differs from target vocab_size={target.vocab_size}"
    )
  prompts = _check_prompts(prompts, max_new_tokens)
  batch, prompt_len = prompts.shape
  for role, model in (("target", target), ("draft", draft)):
    if prompt_len + max_new_tokens - 1 > model.max_len:
      raise ValueError(
        f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} - 1 "
        f"exceeds the {role}'s max_len={model.max_len}"
      )
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  lengths = _prompt_lengths(prompt_lengths, batch, prompt_len, traced_ok=False)
  return _speculative(
    target,
    target_variables,
    draft,
    draft_variables,
    prompts,
    lengths,
    rng,
    jnp.float32(temperature),
    jnp.bool_(greedy),
    max_new_tokens=int(max_new_tokens),
    num_draft_tokens=int(num_draft_tokens),
    eos_id=eos_id,
    pad_id=int(pad_id),
  )
