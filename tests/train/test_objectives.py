"""Objectives and augmentation against float64 NumPy references written from the papers."""

import itertools

import jax
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from kdjax.train import augment, objectives


def _logits(seed=0, n=6, k=3):
  rs = np.random.RandomState(seed)
  return (
    (rs.randn(n, k) * 2).astype(np.float32),
    (rs.randn(n, k) * 2).astype(np.float32),
    rs.randint(0, k, n).astype(np.int32),
  )


def _ce(s, targets, temperature=1.0):
  return -np.sum(targets * log_softmax(s.astype(np.float64) / temperature, -1), -1)


def test_born_again_plain_is_cross_entropy_to_the_teacher_distribution():
  s, t, y = _logits()
  got = objectives.born_again("none", temperature=2.0, ce_weight=0.5)(
    s, t, y, jax.random.PRNGKey(0)
  )
  p = softmax(t.astype(np.float64) / 2.0, -1)
  expected = _ce(s, p, 2.0) + 0.5 * _ce(s, np.eye(3)[y])
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_born_again_cwtm_weights_label_loss_by_normalised_teacher_confidence():
  s, t, y = _logits(1)
  got = objectives.born_again("cwtm")(s, t, y, jax.random.PRNGKey(0))
  confidence = softmax(t.astype(np.float64), -1).max(-1)
  expected = confidence / confidence.mean() * _ce(s, np.eye(3)[y])
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_born_again_dkpp_permutes_the_non_argmax_teacher_probabilities():
  s, t, y = _logits(2, n=4, k=3)
  objective = objectives.born_again("dkpp")
  values = [np.asarray(objective(s, t, y, jax.random.PRNGKey(k))) for k in range(6)]
  p = softmax(t.astype(np.float64), -1)
  for i in range(4):
    top = p[i].argmax()
    others = [c for c in range(3) if c != top]
    candidates = []
    for perm in itertools.permutations(others):
      target = np.zeros(3)
      target[top] = p[i, top]
      target[list(perm)] = p[i, others]
      candidates.append(_ce(s[i : i + 1], target[None])[0])
    for v in values:  # every draw is the CE to one of the permuted targets
      assert min(abs(v[i] - c) for c in candidates) < 1e-5
  assert any(not np.allclose(values[0], v) for v in values[1:])  # the permutation is random


def test_self_distillation_uses_ground_truth_weighted_targets():
  s, t, y = _logits(3)
  got = objectives.self_distillation(alpha=0.3, temperature=2.0)(s, t, y, jax.random.PRNGKey(0))
  targets = 0.7 * np.eye(3)[y] + 0.3 * softmax(t.astype(np.float64) / 2.0, -1)
  np.testing.assert_allclose(got, _ce(s, targets), rtol=1e-5)
  with pytest.raises(ValueError, match="self_distill.alpha must be in"):
    objectives.self_distillation(alpha=1.5)
  with pytest.raises(ValueError, match="born_again.weighting"):
    objectives.born_again("cwmt")


def test_supervised_label_smoothing_matches_numpy():
  s, _, y = _logits(4)
  got = objectives.supervised(0.1)(s, None, y, None)
  np.testing.assert_allclose(got, _ce(s, 0.9 * np.eye(3)[y] + 0.1 / 3), rtol=1e-5)


def test_crop_flip_returns_a_shifted_possibly_flipped_copy_of_each_image():
  images = np.random.RandomState(0).rand(5, 6, 6, 2).astype(np.float32)
  out = np.asarray(augment.random_crop_flip(jax.random.PRNGKey(3), images, pad=2))
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(5):
    crops = [
      (padded[i, a : a + 6, b : b + 6], f) for a in range(5) for b in range(5) for f in (0, 1)
    ]
    matches = [f for crop, f in crops if np.array_equal(out[i], crop[:, ::-1] if f else crop)]
    assert matches, f"image {i} is no crop of its padded original"
  assert out.shape == images.shape
  with pytest.raises(ValueError, match="config.augment must be one of"):
    augment.get("mixup")


def test_shift_never_flips_and_moves_by_at_most_two_pixels():
  images = np.random.RandomState(1).rand(4, 5, 5, 1).astype(np.float32)
  out = np.asarray(augment.get("shift")(jax.random.PRNGKey(0), images))
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(4):
    assert any(
      np.array_equal(out[i], padded[i, a : a + 5, b : b + 5]) for a in range(5) for b in range(5)
    )
