"""kdjax.losses.get: the one lookup of a distillation loss by its config name."""

import inspect

import pytest

from kdjax import losses
from kdjax.losses import registry, sequence
from kdjax.train import objectives


def test_names_are_the_logit_pair_losses_and_the_short_divergence_names():
  assert losses.get("kd_loss") is losses.kd_loss and losses.get("dkd_loss") is losses.dkd_loss
  for short, fn in sequence.DIVERGENCES.items():
    assert losses.get(short) is fn
  assert losses.get("kl") is losses.kl_divergence and losses.get("tv") is losses.total_variation
  for name, fn in losses.LOSSES.items():
    params = list(inspect.signature(fn).parameters)
    assert params[:2] == ["student_logits", "teacher_logits"], name
  assert "taid_target_log_probs" not in losses.LOSSES  # a target, not a loss
  assert "soft_cross_entropy" not in losses.LOSSES  # takes targets, not teacher logits


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"loss must be one of \[.*'kd_loss'.*\], got 'kdd'"):
    losses.get("kdd")
  with pytest.raises(ValueError, match="config.kd.loss: loss must be one of"):
    objectives.divergence("kdd")


def test_the_train_and_lm_lookups_go_through_the_registry(monkeypatch):
  marker = lambda student_logits, teacher_logits, *, temperature=1.0: 0.0  # noqa: E731
  monkeypatch.setitem(registry.LOSSES, "kl", marker)
  monkeypatch.setitem(registry.LOSSES, "kd_loss", marker)
  assert sequence.get_divergence("kl").func is marker
  assert objectives.divergence("kd_loss") is marker
