"""Tests of kdjax.jobs.checkpoint: any pytree, and the fallback on each kind of corruption."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.jobs import checkpoint


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
