"""Tests of kdjax.jobs.checkpoint: any pytree, and the fallback on each kind of corruption."""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xxhash

from kdjax.distill import kip
from kdjax.jobs import checkpoint
from kdjax.train import state as state_lib


def _state(scale):
  return {
    "x": jnp.arange(4096, dtype=jnp.float32) * scale,
    "inner": (jnp.ones(3) * scale, jnp.int32(scale)),
  }


def _save_steps(directory, steps=(1, 2)):
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  for step in steps:
    ckpt.save(step, _state(step))
  ckpt.close()


def _data_files(step_dir):
  """The OCDBT data files of a step (orbax merges them into ``default/d/`` or keeps them
  under ``default/ocdbt.process_N/d/``, depending on the size)."""
  files = glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True)
  assert files
  return files


def _truncate(step_dir):
  for path in _data_files(step_dir):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _delete_data(step_dir):
  for path in _data_files(step_dir):
    os.remove(path)


def _garbage(step_dir):
  for path in _data_files(step_dir):
    size = os.path.getsize(path)
    with open(path, "wb") as f:
      f.write(np.random.default_rng(0).bytes(size))


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, "default", "_METADATA"))


def test_the_one_orbax_private_import_still_resolves():
  """kdjax.jobs.checkpoint's only use of orbax's private ``_src`` (its array metadata store,
  which orbax's own default jax.Array handler carries): fails when orbax moves it."""
  import orbax.checkpoint as ocp

  store = checkpoint._array_metadata_store()
  assert checkpoint.ORBAX_ARRAY_METADATA_STORE.startswith("orbax.checkpoint._src.")
  assert callable(store.write) and callable(store.read)
  checkpoint._orbax()  # installs our handler, carrying a store of that class
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  assert isinstance(handler, ocp.type_handlers.ArrayHandler)
  assert type(getattr(handler, "_array_metadata_store", None)) is type(store)


def test_saves_and_restores_any_pytree_and_reports_no_checkpoint(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "c"), keep=2)
  assert ckpt.restore_latest(_state(0)) == (None, None)
  ckpt.save(5, _state(5))
  ckpt.wait()
  step, state = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  ckpt.close()
  assert step == 5
  jax.tree.map(np.testing.assert_array_equal, state, _state(5))


@pytest.mark.parametrize("corrupt", [_truncate, _delete_data, _garbage, _delete_metadata])
def test_corrupt_newest_checkpoint_falls_back_and_is_kept_aside(tmp_path, corrupt, capsys):
  directory = str(tmp_path / "c")
  _save_steps(directory)
  corrupt(os.path.join(directory, "2"))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  step, state = ckpt.restore_latest(_state(0))
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))
  aside = [d for d in os.listdir(directory) if d.startswith("corrupt-2-")]
  assert len(aside) == 1 and not os.path.exists(os.path.join(directory, "2"))
  assert f"checkpoint {os.path.join(directory, '2')} is corrupt" in capsys.readouterr().out
  assert ckpt.latest_step() == 1
  ckpt.save(2, _state(20))  # the run goes on and saves step 2 again
  ckpt.close()
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  step, state = ckpt.restore_latest(_state(0))
  ckpt.close()
  assert step == 2 and float(state["x"][1]) == 20.0
  assert os.path.isdir(os.path.join(directory, aside[0]))  # never deleted


def test_no_restorable_checkpoint_is_an_error_naming_them_and_moves_nothing(tmp_path):
  directory = str(tmp_path / "c")
  _save_steps(directory, steps=(1,))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  with pytest.raises(checkpoint.CheckpointError, match=rf"{directory}/1: "):
    ckpt.restore_latest({"other": jnp.zeros(2)})  # another state structure
  ckpt.close()
  assert os.listdir(directory) == ["1"]


def test_leftover_temporary_directory_of_a_killed_save_is_ignored(tmp_path):
  directory = str(tmp_path / "c")
  _save_steps(directory, steps=(1,))
  leftover = os.path.join(directory, "2.orbax-checkpoint-tmp-123")
  os.makedirs(os.path.join(leftover, "default"))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  step, _ = ckpt.restore_latest(_state(0))
  ckpt.close()
  assert step == 1 and not os.path.exists(leftover)


def test_small_replicated_arrays_are_saved_without_per_device_slices(tmp_path, monkeypatch):
  """Replica-parallel writes (one slice program per device) only for slices >= 1 MiB."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  big = checkpoint.REPLICA_PARALLEL_MIN_BYTES * jax.device_count() // 4  # float32 elements
  state = {
    "small": jax.device_put(jnp.arange(40.0).reshape(8, 5), replicated),
    "sharded": jax.device_put(jnp.arange(64.0).reshape(16, 4), sharded),
    "big": jax.device_put(jnp.arange(big, dtype=jnp.float32), replicated),
  }
  sliced = []
  slice_in_dim = jax.lax.slice_in_dim

  def spy(operand, *args, **kwargs):
    sliced.append(operand.shape)
    return slice_in_dim(operand, *args, **kwargs)

  monkeypatch.setattr(jax.lax, "slice_in_dim", spy)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "c"), keep=1)
  ckpt.save(1, state)
  ckpt.wait()
  assert set(sliced) == {(big,)}  # only the 8 MiB array is written in parallel slices
  shardings = jax.tree.map(lambda x: x.sharding, state)
  step, restored = ckpt.restore_latest(jax.eval_shape(lambda: state), shardings)
  ckpt.close()
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  assert restored["small"].sharding == replicated and restored["sharded"].sharding == sharded


def _garble_16_bytes(step_dir):
  """16 random bytes in the middle of the step's largest data file (size unchanged)."""
  path = max(_data_files(step_dir), key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2 - 8)
    f.write(np.random.default_rng(1).bytes(16))
  return os.path.relpath(path, step_dir)


def _kip_state(scale):
  """A KIP job's state (support set, Adam state, step) of random, incompressible values."""
  rng = np.random.default_rng(scale)
  x = jnp.asarray(rng.normal(size=(20, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(20, 10)), jnp.float32)
  return kip.KipState(x, y, optax.adam(1e-2).init({"x": x}), jnp.int32(scale))


def _kd_state(scale):
  """A KD job's student TrainState (an MLP's parameters, SGD momentum, batch stats)."""
  rng = np.random.default_rng(scale)
  params = {
    f"Dense_{i}": {
      "kernel": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=64), jnp.float32),
    }
    for i in range(3)
  }
  return state_lib.TrainState(
    step=jnp.int32(scale),
    params=params,
    opt_state=optax.sgd(0.1, momentum=0.9).init(params),
    model_state={"batch_stats": {"mean": jnp.asarray(rng.normal(size=64), jnp.float32)}},
  )


def _equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda u, v: np.array_equal(u, v), a, b)))


@pytest.mark.parametrize("make_state", [_kip_state, _kd_state], ids=["kip", "kd"])
def test_16_garbled_bytes_in_the_newest_step_are_caught_and_it_falls_back(
  tmp_path, make_state, capsys
):
  """The issue's case: orbax restores such a step without an error, as changed arrays."""
  directory = str(tmp_path / "c")
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  for step in (1, 2):
    ckpt.save(step, make_state(step))
  ckpt.close()
  garbled = _garble_16_bytes(os.path.join(directory, "2"))
  # Without its manifest, orbax restores the garbled step as changed arrays:
  unchecked = str(tmp_path / "unchecked")
  shutil.copytree(directory, unchecked)
  for step in ("1", "2"):
    os.remove(os.path.join(unchecked, step, checkpoint.MANIFEST))
  ckpt = checkpoint.Checkpointer(unchecked, keep=3)
  step, state = ckpt.restore_latest(make_state(0))
  ckpt.close()
  assert step == 2 and not _equal(state, make_state(2))

  ckpt = checkpoint.Checkpointer(directory, keep=3)
  with pytest.raises(checkpoint.CorruptCheckpoint, match=f"{garbled} has another xxh3_64 checksum"):
    ckpt.restore(2, make_state(0))
  step, state = ckpt.restore_latest(make_state(0))
  ckpt.close()
  assert step == 1 and _equal(state, make_state(1))
  out = capsys.readouterr().out
  assert (
    f"checkpoint {os.path.join(directory, '2')} is corrupt ({garbled} has another xxh3_64" in out
  )
  assert len([d for d in os.listdir(directory) if d.startswith("corrupt-2-")]) == 1


def test_16_garbled_bytes_in_an_older_step_are_caught_when_it_is_needed(tmp_path, capsys):
  directory = str(tmp_path / "c")
  _save_steps(directory, steps=(1, 2, 3))
  _garble_16_bytes(os.path.join(directory, "2"))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  assert ckpt.restore_latest(_state(0))[0] == 3  # the newest is intact: used, nothing moved
  with pytest.raises(checkpoint.CorruptCheckpoint, match="another xxh3_64 checksum"):
    ckpt.restore(2, _state(0))
  with pytest.raises(checkpoint.CorruptCheckpoint, match="another xxh3_64 checksum"):
    checkpoint.load_arrays(directory, 2)
  assert sorted(os.listdir(directory)) == ["1", "2", "3"]
  _garble_16_bytes(os.path.join(directory, "3"))  # now the newest too: both set aside
  step, state = ckpt.restore_latest(_state(0))
  ckpt.close()
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))
  assert sorted(d.split("-")[:2] for d in os.listdir(directory) if "-" in d) == [
    ["corrupt", "2"],
    ["corrupt", "3"],
  ]
  assert capsys.readouterr().out.count("is corrupt") == 2


def test_manifest_covers_every_file_sizes_and_checksums(tmp_path):
  """Written by sync and async saves; an extra, missing, resized file or a garbled
  manifest each make the step corrupt."""
  for use_async in (False, True):
    directory = str(tmp_path / f"c{use_async}")
    ckpt = checkpoint.Checkpointer(directory, keep=3, use_async=use_async)
    ckpt.save(1, _state(1))
    ckpt.close()
    step_dir = os.path.join(directory, "1")
    with open(os.path.join(step_dir, checkpoint.MANIFEST)) as f:
      manifest = json.load(f)
    files = sorted(
      os.path.relpath(os.path.join(root, name), step_dir)
      for root, _, names in os.walk(step_dir)
      for name in names
    )
    assert sorted(manifest["files"]) == [
      f
      for f in files
      if f not in (checkpoint.MANIFEST, "_CHECKPOINT_METADATA", "commit_success.txt")
    ]
    assert "default/_METADATA" in manifest["files"]
    for name, (size, crc) in manifest["files"].items():
      data = open(os.path.join(step_dir, name), "rb").read()
      assert (size, crc) == (len(data), xxhash.xxh3_64_intdigest(data))
  problem = checkpoint._manifest_problem  # pylint: disable=protected-access
  assert problem(step_dir) is None
  extra = os.path.join(step_dir, "default", "stray")
  open(extra, "w").close()
  assert problem(step_dir) == f"default/stray is not in {checkpoint.MANIFEST}"
  os.remove(extra)
  data = _data_files(step_dir)[0]
  with open(data, "ab") as f:
    f.write(b"x")
  assert "bytes, its manifest says" in problem(step_dir)
  os.remove(data)
  assert "is missing (1 file(s) in all)" in problem(step_dir)
  with open(os.path.join(step_dir, checkpoint.MANIFEST), "w") as f:
    f.write('{"files": [1, 2]')
  assert f"{checkpoint.MANIFEST} does not parse" in problem(step_dir)
  with open(os.path.join(step_dir, checkpoint.MANIFEST), "w") as f:
    json.dump({"format": 1, "checksum": "md4", "files": {}}, f)
  assert problem(step_dir) == f"{checkpoint.MANIFEST} names an unknown checksum 'md4'"


def test_a_manifest_is_checked_with_the_checksum_it_names(tmp_path, monkeypatch):
  """E.g. the CRC-32 one (what benchmarks/checkpoint_hash.py compares xxh3 with)."""
  monkeypatch.setattr(checkpoint, "_CHECKSUM", "crc32")
  directory = str(tmp_path / "c")
  _save_steps(directory, steps=(1,))
  step_dir = os.path.join(directory, "1")
  with open(os.path.join(step_dir, checkpoint.MANIFEST)) as f:
    assert json.load(f)["checksum"] == "crc32"
  monkeypatch.setattr(checkpoint, "_CHECKSUM", "xxh3_64")
  assert checkpoint._manifest_problem(step_dir) is None  # pylint: disable=protected-access
  garbled = _garble_16_bytes(step_dir)
  assert checkpoint._manifest_problem(step_dir) == (  # pylint: disable=protected-access
    f"{garbled} has another crc32 checksum than in its manifest"
  )


def test_step_without_manifest_is_unverified_unless_no_step_has_one(tmp_path, capsys):
  """No kill leaves a step without its manifest (it is inside orbax's commit): where other
  steps have one, it is moved aside; a directory without any predates manifests."""
  directory = str(tmp_path / "c")
  _save_steps(directory, steps=(1, 2))
  os.remove(os.path.join(directory, "2", checkpoint.MANIFEST))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  with pytest.raises(checkpoint.CorruptCheckpoint, match="no kdjax_manifest.json while step 1"):
    ckpt.restore(2, _state(0))
  assert ckpt.restore_latest(_state(0))[0] == 1
  ckpt.close()
  assert [d for d in os.listdir(directory) if d.startswith("unverified-2-")]
  assert f"checkpoint {os.path.join(directory, '2')} is unverified (it has no" in (
    capsys.readouterr().out
  )
  os.remove(os.path.join(directory, "1", checkpoint.MANIFEST))
  ckpt = checkpoint.Checkpointer(directory, keep=3)
  step, state = ckpt.restore_latest(_state(0))
  ckpt.close()
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))
