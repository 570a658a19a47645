"""Tests of the KV cache and kdjax.models.sampling against full recomputation and statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from kdjax import models
from kdjax.models import sampling

MODEL = models.TransformerLM(
  vocab_size=17, max_len=24, embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32
)


@pytest.fixture(scope="module")
def variables():
  v = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  # Larger weights than the initialisation: peaked, prompt-dependent next-token distributions.
  return jax.tree.map(lambda x: x * 3.0, v)


@jax.jit
def _forward(variables, padded):
  return MODEL.apply(variables, padded)


def _full_logits(variables, sequence):
  """Last-position logits of the whole sequence, recomputed from scratch (padded on the
  right to max_len, which a causal model ignores, so one compilation serves every length)."""
  padded = np.zeros((1, MODEL.max_len), np.int32)
  padded[0, : len(sequence)] = sequence
  return np.asarray(_forward(variables, padded)[0, len(sequence) - 1], np.float64)


def test_greedy_with_the_cache_equals_argmax_of_full_recomputation_for_ragged_prompts(variables):
  rs = np.random.RandomState(0)
  lengths = np.array([5, 2, 7, 1])
  prompts = rs.randint(0, 17, size=(4, 7))
  prompts[0, 5:] = 3  # right padding: ignored
  out = sampling.generate(
    MODEL, variables, prompts, lengths, rng=jax.random.PRNGKey(1), max_new_tokens=10, greedy=True
  )
  assert out["tokens"].shape == (4, 10) and bool(out["mask"].all())
  for b in range(4):
    sequence = list(prompts[b, : lengths[b]])
    for t in range(10):
      expected = int(np.argmax(_full_logits(variables, sequence)))
      assert int(out["tokens"][b, t]) == expected, (b, t)
      sequence.append(expected)


def test_cached_logits_equal_full_forward_logits(variables):
  tokens = np.random.RandomState(1).randint(0, 17, size=(3, 9))
  full = _forward(variables, np.pad(tokens, ((0, 0), (0, 15))))[:, :9]
  apply = jax.jit(lambda v, x, c: MODEL.apply(v, x, cache=c))
  logits, cache = apply(variables, tokens[:, :4], models.init_cache(MODEL, 3, 9))
  steps = [logits]
  for t in range(4, 9):
    logits, cache = apply(variables, tokens[:, t : t + 1], cache)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-4)


def test_sampled_tokens_follow_softmax_of_logits_over_temperature(variables):
  prompt = np.array([[4, 9, 1]])
  n, temperature = 4000, 1.7
  out = sampling.generate(
    MODEL,
    variables,
    np.repeat(prompt, n, 0),
    rng=jax.random.PRNGKey(7),
    max_new_tokens=1,
    temperature=temperature,
  )
  p = special.softmax(_full_logits(variables, prompt[0]) / temperature)
  counts = np.bincount(np.asarray(out["tokens"][:, 0]), minlength=17)
  expected = n * p
  big = expected >= 5  # chi-square validity: pool the rare tokens
  observed = np.r_[counts[big], counts[~big].sum()]
  expected = np.r_[expected[big], expected[~big].sum()]
  assert stats.chisquare(observed, expected).pvalue > 1e-3
  # The same test rejects the untempered distribution.
  p1 = n * special.softmax(_full_logits(variables, prompt[0]))
  assert stats.chisquare(counts[big], p1[big] * counts[big].sum() / p1[big].sum()).pvalue < 1e-6


def test_top_k_and_top_p_sample_only_inside_their_support(variables):
  prompt = np.repeat(np.array([[2, 3]]), 2000, 0)
  logits = _full_logits(variables, prompt[0])
  order = np.argsort(-logits)
  out = sampling.generate(
    MODEL, variables, prompt, rng=jax.random.PRNGKey(3), max_new_tokens=1, top_k=3, temperature=3.0
  )
  assert set(np.unique(out["tokens"])) == set(order[:3])
  p = special.softmax(logits)
  nucleus = order[: np.searchsorted(np.cumsum(p[order]), 0.6) + 1]
  out = sampling.generate(
    MODEL, variables, prompt, rng=jax.random.PRNGKey(4), max_new_tokens=1, top_p=0.6
  )
  assert set(np.unique(out["tokens"])) == set(nucleus)
  filtered = sampling.filter_logits(logits[None], top_p=0.6)
  np.testing.assert_array_equal(np.isfinite(filtered[0]), np.isin(np.arange(17), nucleus))


def test_eos_stops_a_sequence_and_masks_what_follows(variables):
  prompts = np.random.RandomState(2).randint(0, 17, size=(3, 4))
  free = sampling.generate(
    MODEL, variables, prompts, rng=jax.random.PRNGKey(0), max_new_tokens=8, greedy=True
  )
  eos = int(free["tokens"][0, 2])
  out = sampling.generate(
    MODEL,
    variables,
    prompts,
    rng=jax.random.PRNGKey(0),
    max_new_tokens=8,
    greedy=True,
    eos_id=eos,
    pad_id=16,
  )
  tokens, mask = np.asarray(out["tokens"]), np.asarray(out["mask"])
  for b in range(3):
    hits = np.flatnonzero(np.asarray(free["tokens"][b]) == eos)
    stop = hits[0] + 1 if hits.size else 8
    np.testing.assert_array_equal(tokens[b, :stop], free["tokens"][b, :stop])
    assert mask[b].sum() == stop == out["lengths"][b]
    assert (tokens[b, stop:] == 16).all()


def test_bad_generation_arguments_raise_value_errors(variables):
  prompts = np.zeros((2, 20), np.int32)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="max_len=24"):
    sampling.generate(MODEL, variables, prompts, rng=key, max_new_tokens=6)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    sampling.generate(MODEL, variables, prompts[:, :3], rng=key, max_new_tokens=2, temperature=0.0)
  with pytest.raises(ValueError, match="top_p"):
    sampling.generate(MODEL, variables, prompts[:, :3], rng=key, max_new_tokens=2, top_p=0.0)
  with pytest.raises(ValueError, match="prompt_lengths"):
    sampling.generate(MODEL, variables, prompts[:, :3], [0, 2], rng=key, max_new_tokens=2)
