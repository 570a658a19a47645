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
