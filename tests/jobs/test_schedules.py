"""Tests of kdjax.jobs.schedules.make_schedule against the closed form of each schedule."""

import math

import ml_collections
import numpy as np
import pytest

from kdjax.jobs import schedules


def _config(**kw):
  c = {"learning_rate": 0.1, "schedule": "cosine", "warmup_steps": 0, "final_lr_fraction": 0.0}
  return ml_collections.ConfigDict({**c, **kw})


def _cosine(t, lr, total, floor):
  return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))


@pytest.mark.parametrize("floor", [0.0, 0.01])
def test_cosine_with_floor(floor):
  schedule = schedules.make_schedule(_config(final_lr_fraction=floor), 100)
  for t in (0, 1, 50, 99, 100, 150):
    np.testing.assert_allclose(
      float(schedule(t)), _cosine(t, 0.1, 100, floor), rtol=1e-5, atol=1e-7
    )


def test_warmup_then_cosine_and_constant():
  schedule = schedules.make_schedule(_config(warmup_steps=10), 110)
  np.testing.assert_allclose([float(schedule(t)) for t in (0, 5, 10)], [0.0, 0.05, 0.1], rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), _cosine(50, 0.1, 100, 0.0), rtol=1e-5)
  assert schedules.make_schedule(_config(schedule="constant"), 100) == 0.1
  warm = schedules.make_schedule(_config(schedule="constant", warmup_steps=4), 100)
  np.testing.assert_allclose([float(warm(t)) for t in (2, 4, 50)], [0.05, 0.1, 0.1], rtol=1e-6)


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_learning_rate_that_is_not_finite_and_positive(lr):
  with pytest.raises(ValueError, match=r"config.kip.learning_rate must be finite and > 0"):
    schedules.make_schedule(_config(learning_rate=lr), 100, name="kip")


def test_rejects_unknown_schedule_and_bad_floor():
  with pytest.raises(ValueError, match="config.optimizer.schedule must be one of"):
    schedules.make_schedule(_config(schedule="linear"), 100)
  with pytest.raises(ValueError, match="final_lr_fraction must be in"):
    schedules.make_schedule(_config(final_lr_fraction=2.0), 100)
