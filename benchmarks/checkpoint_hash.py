"""What the checkpoint manifest (size + checksum of every file, `kdjax.jobs.checkpoint`) costs.

A save is timed from `Checkpointer.save` to the end of `Checkpointer.wait` (the state is
on disk and committed, manifest included): without a manifest (its writer replaced by a
no-op), with the xxh3 manifest kdjax writes, and with a CRC-32 one (zlib, no dependency),
alternating the three so that a change of machine load hits all of them. The state is
random float32 (incompressible, like trained weights; orbax compresses with zstd, so zeros
or ramps would write fewer bytes). Also printed: each manifest writer alone on a saved step
(its files in the page cache), and the check that precedes a restore against the restore.

  .venv/bin/python -m benchmarks.checkpoint_hash                  # 100 MB state, 7 repeats
  .venv/bin/python -m benchmarks.checkpoint_hash --megabytes=4 --repeats=1   # a smoke run
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from kdjax.jobs import checkpoint

_MEGABYTES = flags.DEFINE_float("megabytes", 100.0, "Size of the saved state (MB, 1e6 B).")
_ARRAYS = flags.DEFINE_integer("arrays", 8, "Number of equal float32 arrays in the state.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed saves of each kind (medians printed).")


def _state(megabytes: float, arrays: int) -> dict:
  n = max(1, int(megabytes * 1e6 / 4 / arrays))
  rng = np.random.default_rng(0)
  return {f"w{i}": jnp.asarray(rng.standard_normal(n, np.float32)) for i in range(arrays)}


def _timed_save(ckpt: checkpoint.Checkpointer, step: int, state: dict) -> float:
  start = time.perf_counter()
  ckpt.save(step, state)
  ckpt.wait()
  return time.perf_counter() - start


def _elapsed(fn, *args) -> float:
  start = time.perf_counter()
  fn(*args)
  return time.perf_counter() - start


def main(argv):
  del argv
  print(common.describe_devices())
  state = _state(_MEGABYTES.value, _ARRAYS.value)
  nbytes = sum(x.nbytes for x in state.values())
  print(f"state: {_ARRAYS.value} float32 arrays, {nbytes / 1e6:.1f} MB, random normal")
  # pylint: disable=protected-access
  write_manifest, default = checkpoint._write_manifest, checkpoint._CHECKSUM
  kinds = ("none", "xxh3_64", "crc32")
  times = {kind: [] for kind in kinds}
  with tempfile.TemporaryDirectory() as root:
    ckpt = checkpoint.Checkpointer(os.path.join(root, "c"), keep=2)
    step = 0
    _timed_save(ckpt, step, state)  # warm-up: orbax's first save creates its directories
    try:
      for _ in range(_REPEATS.value):
        for kind in kinds:
          step += 1
          checkpoint._write_manifest = write_manifest if kind != "none" else (lambda d: None)
          checkpoint._CHECKSUM = default if kind == "none" else kind
          times[kind].append(_timed_save(ckpt, step, state))
    finally:
      checkpoint._write_manifest, checkpoint._CHECKSUM = write_manifest, default
    step += 1
    _timed_save(ckpt, step, state)
    step_dir = os.path.join(ckpt.directory, str(step))
    alone = {}
    for kind in kinds[1:]:
      checkpoint._CHECKSUM = kind
      alone[kind] = statistics.median(
        _elapsed(write_manifest, step_dir) for _ in range(_REPEATS.value)
      )
    checkpoint._CHECKSUM = default
    write_manifest(step_dir)
    check = statistics.median(
      _elapsed(checkpoint._manifest_problem, step_dir) for _ in range(_REPEATS.value)
    )
    restore = statistics.median(
      _elapsed(ckpt._restore, step, state, None) for _ in range(_REPEATS.value)
    )
    on_disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(step_dir) for f in fs)
    ckpt.close()
  # pylint: enable=protected-access
  base = statistics.median(times["none"])
  print(f"files of one step: {on_disk / 1e6:.1f} MB; medians of {_REPEATS.value} saves")
  print("| manifest | save + wait (s) | vs none | manifest writer alone (s) | alone / save |")
  print("|---|---|---|---|---|")
  for kind in kinds:
    median = statistics.median(times[kind])
    writer = f"{alone[kind]:.3f} | {100 * alone[kind] / base:.1f}%" if kind in alone else "- | -"
    print(f"| {kind} | {median:.3f} | {100 * (median / base - 1):+.1f}% | {writer} |")
  print(
    f"check before a restore: {check:.3f} s, restore {restore:.3f} s "
    f"({100 * check / restore:.1f}% of the restore)"
  )
  print(f"xxh3_64 manifest cost: {100 * alone['xxh3_64'] / base:.1f}% of a save (writer alone)")


if __name__ == "__main__":
  app.run(main)
