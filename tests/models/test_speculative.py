"""Tests of speculative sampling: exact output distribution (chi-square on enumerated
probabilities, with the power to reject the draft's own distribution), greedy equality
with plain greedy decoding, EOS, rollback statistics and bad input."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from kdjax import models
from kdjax.models import sampling

# A tiny vocabulary, so that every continuation can be enumerated.
TINY = models.TransformerLM(
  vocab_size=5, max_len=8, embed_dim=8, num_layers=1, num_heads=2, mlp_dim=16
)


@functools.cache
def _tiny_variables(seed, scale):
  v = jax.jit(TINY.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))
  return jax.tree.map(lambda x: x * scale, v)


def _exact_distribution(variables, prompt, new_tokens, temperature, eos_id):
  """{kept continuation: probability} under ``softmax(logits / T)`` by enumeration, in
  float64 from one forward pass over every prefix; continuations stop after EOS."""
  prefixes = [p for n in range(new_tokens) for p in itertools.product(range(5), repeat=n)]
  padded = np.zeros((len(prefixes), TINY.max_len), np.int32)
  for i, prefix in enumerate(prefixes):
    padded[i, : len(prompt) + len(prefix)] = list(prompt) + list(prefix)
  logits = np.asarray(jax.jit(TINY.apply)(variables, padded), np.float64)
  cond = {
    prefix: special.softmax(logits[i, len(prompt) + len(prefix) - 1] / temperature)
    for i, prefix in enumerate(prefixes)
  }
  out = {}
  for seq in itertools.product(range(5), repeat=new_tokens):
    kept = seq if eos_id not in seq else seq[: seq.index(eos_id) + 1]
    prob = np.prod([cond[seq[:t]][seq[t]] for t in range(len(kept))])
    out[kept] = out.get(kept, 0.0) + prob / 5 ** (new_tokens - len(kept))
  return out


def _chisquare_pvalue(samples, exact):
  outcomes = sorted(exact)
  counts = np.array([samples.get(o, 0) for o in outcomes], np.float64)
  assert counts.sum() == sum(samples.values())  # every sample is a possible outcome
  expected = counts.sum() * np.array([exact[o] for o in outcomes])
  big = expected >= 5  # chi-square validity: pool the rare outcomes
  observed = np.r_[counts[big], counts[~big].sum()]
  expected = np.r_[expected[big], expected[~big].sum()]
  return stats.chisquare(observed, expected).pvalue


def test_speculative_samples_have_exactly_the_targets_distribution():
  target, draft = _tiny_variables(0, 3.0), _tiny_variables(1, 3.0)
  n, new_tokens, temperature, eos = 4000, 3, 0.8, 4
  prompt = [1, 3]
  out = sampling.speculative_generate(
    TINY,
    target,
    TINY,
    draft,
    np.tile([1, 3, 2, 2], (n, 1)),  # right-padded: real length 2
    np.full(n, 2),
    rng=jax.random.PRNGKey(0),
    max_new_tokens=new_tokens,
    num_draft_tokens=2,
    temperature=temperature,
    eos_id=eos,
  )
  tokens, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
  samples = {}
  for row, length in zip(tokens, lengths):
    samples[tuple(row[:length])] = samples.get(tuple(row[:length]), 0) + 1
  exact_target = _exact_distribution(target, prompt, new_tokens, temperature, eos)
  exact_draft = _exact_distribution(draft, prompt, new_tokens, temperature, eos)
  assert abs(sum(exact_target.values()) - 1) < 1e-9
  assert _chisquare_pvalue(samples, exact_target) > 1e-3
  # Power: the same samples reject the draft's distribution, which the draft proposed.
  assert _chisquare_pvalue(samples, exact_draft) < 1e-6
  # Statistics: rejections happened, and each call emits accepted + 1 tokens at most.
  rate = np.asarray(out["acceptance_rate"])
  assert 0.2 < rate.mean() < 0.95
  calls, accepted = np.asarray(out["num_target_calls"]), np.asarray(out["num_accepted"])
  assert (lengths <= accepted + calls).all() and (lengths >= calls).all()
  np.testing.assert_allclose(out["accepted_per_call"], accepted / calls, rtol=1e-6)
  # A draft equal to the target is always accepted (same compiled program).
  same = sampling.speculative_generate(
    TINY,
    target,
    TINY,
    target,
    np.tile([1, 3, 2, 2], (n, 1)),
    np.full(n, 2),
    rng=jax.random.PRNGKey(1),
    max_new_tokens=new_tokens,
    num_draft_tokens=2,
    temperature=temperature,
    eos_id=eos,
  )
  assert float(np.mean(same["acceptance_rate"])) > 0.99


# The same shapes and static arguments as the chi-square test: one compiled program serves
# both (greedy is a traced flag).
N, NEW, K, EOS = 4000, 3, 2, 4


def test_greedy_speculative_decoding_equals_greedy_target_decoding():
  target, draft = _tiny_variables(2, 3.0), _tiny_variables(1, 3.0)  # (a target that emits EOS)
  rs = np.random.RandomState(0)
  lengths = rs.randint(1, 5, size=N)
  prompts = rs.randint(0, 5, size=(N, 4))
  greedy = dict(rng=jax.random.PRNGKey(1), max_new_tokens=NEW, greedy=True, eos_id=EOS)
  plain = sampling.generate(TINY, target, prompts, lengths, **greedy)
  assert 0 < (np.asarray(plain["lengths"]) < NEW).sum() < N  # some rows emit EOS early
  spec = sampling.speculative_generate(
    TINY, target, TINY, draft, prompts, lengths, num_draft_tokens=K, **greedy
  )
  for key in ("tokens", "mask", "lengths"):
    np.testing.assert_array_equal(spec[key], plain[key])
  accepted, rejected = np.asarray(spec["num_accepted"]), np.asarray(spec["num_rejected"])
  assert (accepted > 0).any() and (rejected > 0).any()
  assert (np.asarray(spec["num_target_calls"]) < np.asarray(spec["lengths"])).any()
  # A single prompt runs without vmap: the same tokens and counts as its row of the batch.
  row = int(np.argmax((rejected > 0) & (accepted > 0)))
  one = sampling.speculative_generate(
    TINY,
    target,
    TINY,
    draft,
    prompts[row : row + 1],
    lengths[row : row + 1],
    num_draft_tokens=K,
    **greedy,
  )
  for key in ("tokens", "num_target_calls", "num_accepted", "num_rejected"):
    np.testing.assert_array_equal(one[key][0], spec[key][row])


TARGET = models.TransformerLM(
  vocab_size=17, max_len=24, embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32
)
DRAFT = models.TransformerLM(
  vocab_size=17, max_len=20, embed_dim=8, num_layers=1, num_heads=2, mlp_dim=16
)


def test_bad_speculative_arguments_raise_value_errors():
  target = draft = {}  # (refused before any model runs)
  prompts, key = np.zeros((2, 4), np.int32), jax.random.PRNGKey(0)
  call = functools.partial(sampling.speculative_generate, TARGET, target, DRAFT, draft, rng=key)
  with pytest.raises(ValueError, match="num_draft_tokens must be >= 1"):
    call(prompts, max_new_tokens=2, num_draft_tokens=0)
  other = models.TransformerLM(vocab_size=9, max_len=24, embed_dim=8, num_layers=1, num_heads=2)
  with pytest.raises(ValueError, match="draft vocab_size=9 differs from target vocab_size=17"):
    sampling.speculative_generate(
      TARGET, target, other, {}, prompts, rng=key, max_new_tokens=2, num_draft_tokens=2
    )
  with pytest.raises(ValueError, match="draft's max_len=20"):
    call(np.zeros((2, 12), np.int32), max_new_tokens=10, num_draft_tokens=2)
  with pytest.raises(ValueError, match="target's max_len=24"):
    call(np.zeros((2, 20), np.int32), max_new_tokens=6, num_draft_tokens=2)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    call(prompts, max_new_tokens=2, num_draft_tokens=2, temperature=0.0)
  with pytest.raises(ValueError, match="prompt_lengths"):
    call(prompts, [0, 2], max_new_tokens=2, num_draft_tokens=2)
