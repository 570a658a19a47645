"""Tests of kdjax.data.batches: determinism by (seed, step), epochs, sharding."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import data


def test_batch_depends_only_on_seed_and_step():
  x, y = np.arange(50.0)[:, None], np.arange(50)
  a = data.Batches(x, y, batch_size=8, seed=3)
  b = data.Batches(x, y, batch_size=8, seed=3)
  resumed = dict(b.iterate(start_step=13, num_steps=3))
  for step in (13, 14, 15):
    np.testing.assert_array_equal(a.batch(step)["label"], resumed[step]["label"])
  assert not np.array_equal(
    a.batch(0)["label"], data.Batches(x, y, batch_size=8, seed=4).batch(0)["label"]
  )


def test_each_epoch_visits_distinct_examples():
  steps = 50 // 8
  for epoch in range(3):
    seen = np.concatenate(
      [data.batch_indices(50, 8, seed=0, step=epoch * steps + s) for s in range(steps)]
    )
    assert len(set(seen.tolist())) == steps * 8
  assert not np.array_equal(
    data.batch_indices(50, 8, seed=0, step=0), data.batch_indices(50, 8, seed=0, step=steps)
  )


def test_sharded_batch_matches_numpy_batch():
  mesh = Mesh(np.array(jax.devices()), ("data",))
  x = np.random.default_rng(0).normal(size=(40, 2, 2, 1)).astype(np.float32)
  y = np.arange(40, dtype=np.int32)
  sharded = data.Batches(x, y, batch_size=16, seed=1, sharding=NamedSharding(mesh, P("data")))
  plain = data.Batches(x, y, batch_size=16, seed=1)
  batch = sharded.batch(5)
  assert batch["image"].shape == (16, 2, 2, 1)
  assert batch["image"].sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(batch["label"]), plain.batch(5)["label"])


def test_bad_batch_size():
  with pytest.raises(ValueError, match="batch_size must be in"):
    data.Batches(np.zeros((4, 1)), np.zeros(4), batch_size=5, seed=0)
  with pytest.raises(ValueError, match="same length"):
    data.Batches(np.zeros((4, 1)), np.zeros(3), batch_size=2, seed=0)
