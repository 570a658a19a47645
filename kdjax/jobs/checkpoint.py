"""Orbax checkpoints of any pytree state (keep-last-N, async, corruption fallback), and the
SIGTERM flag that lets a job save before it exits.

A checkpoint ``checkpoints/<step>/`` holds the whole state pytree (a TrainState, a KipState,
a dict of them ...), restored straight into its sharded layout. Saving is asynchronous;
``wait`` blocks until the last save is on disk. Orbax writes each step into a temporary
directory and renames it when complete, so a kill mid-save leaves only a temporary
directory, which is ignored and removed on the next start.

A checkpoint that no longer restores (a truncated, deleted or garbage data file, a deleted
``_METADATA``) is moved aside to ``checkpoints/corrupt-<step>-<unix time>/`` (never
deleted) with a warning naming it, and :meth:`Checkpointer.restore_latest` falls back to
the newest intact one. When no checkpoint restores at all, nothing is moved and the error
names every checkpoint: that points to a different state structure (e.g. another model),
not to corruption.

Replicated arrays below ``REPLICA_PARALLEL_MIN_BYTES`` per replica are written whole by
their first replica. Orbax's default splits every replicated array over all its replicas
(replica-parallel writes), which compiles one slice program per device and per array
shape: hundreds of compiles for a small model on 8 devices, far slower than writing the
few bytes. Large arrays keep the parallel writes. Either way every shard is written once
(multi-host safe) and the files are the same.

Orbax is imported on first use (:func:`_orbax`), so ``import kdjax.jobs`` loads no orbax and
changes no orbax or absl state; the jax.Array handler above and a filter that hides orbax's
INFO lines are installed then, once per process.

Integrity: orbax's files carry no checksum, and a few garbled bytes inside a data file
restore without any error as changed arrays. Each step therefore carries a manifest,
``checkpoints/<step>/kdjax_manifest.json``: the size and the 64-bit xxh3 checksum of every
file of the step (the arrays, their metadata, the OCDBT manifests; not the step's
``_CHECKPOINT_METADATA`` and ``commit_success.txt``, which orbax rewrites while it
commits). It is written into orbax's temporary directory after every process has
finished writing and just before orbax's commit renames that directory into ``<step>/``
(:func:`_manifest_temporary_path`), so the data and its manifest appear together or not at
all: a kill -9 at any moment leaves either no step or a step with its manifest. Before
restoring a step, :meth:`Checkpointer.restore_latest` checks it: a file that is missing,
extra, of another size or of another checksum makes the step corrupt (moved aside as
above, with a warning that names the file; the next older step is tried). A step without
a manifest cannot come from a kill; it is

- *unverified* when another step of the directory has a manifest (e.g. an incomplete copy
  of the workdir): moved aside to ``unverified-<step>-<unix time>/`` and skipped;
- restored with a warning when no step has one: a directory written by kdjax before
  manifests.

xxh3 (the ``xxhash`` package) rather than a cryptographic hash: the threat is corruption,
which a 64-bit checksum misses with probability 2^-64, and anyone who can edit the files
can edit the manifest too. zlib's CRC-32 or hashlib's sha256 would need no dependency but
hash 5-10x slower than xxh3 here, 15-20% of a save's time instead of about 3%
(``benchmarks/checkpoint_hash.py``; figures and commands in ``docs/checkpoints.md``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import mmap
import os
import signal
import threading
import time
import zlib
from typing import Any

import jax
import xxhash

REPLICA_PARALLEL_MIN_BYTES = 1 << 20


class _HideOrbaxInfo(logging.Filter):
  """Drops orbax's INFO lines (dozens per save); its warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


class _HideHandlerOverride(logging.Filter):
  """Drops orbax's warning that a type handler is overridden (ours, on purpose, once)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "type_handler_registry" not in record.pathname


ORBAX_ARRAY_METADATA_STORE = "orbax.checkpoint._src.metadata.array_metadata_store"


def _array_metadata_store():
  """The one adapter to orbax's private API: its ``Store`` of per-array metadata.

  Orbax's default jax.Array handler is built with ``array_metadata_store=Store()`` (it
  records e.g. typed PRNG keys, restored as keys), but orbax exports the class only under
  ``_src``; our handler must carry one too to write the same checkpoints.
  ``tests/jobs/test_checkpoint.py`` fails when orbax moves it.
  """
  import importlib

  return importlib.import_module(ORBAX_ARRAY_METADATA_STORE).Store()


_SETUP_LOCK = threading.Lock()
_ORBAX = []


def _orbax():
  """``orbax.checkpoint``, imported and set up on first use (thread-safe, once)."""
  with _SETUP_LOCK:
    if not _ORBAX:
      import orbax.checkpoint as ocp
      from absl import logging as absl_logging

      absl_logging.get_absl_handler().addFilter(_HideOrbaxInfo())
      # Orbax's own jax.Array handler (with its array metadata store), but replica-parallel
      # writes only for slices of at least REPLICA_PARALLEL_MIN_BYTES (module docstring).
      handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES,
        array_metadata_store=_array_metadata_store(),
      )
      hide = _HideHandlerOverride()
      logging.getLogger("absl").addFilter(hide)
      try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
      finally:
        logging.getLogger("absl").removeFilter(hide)
      _ORBAX.append(ocp)
    return _ORBAX[0]


class CheckpointError(RuntimeError):
  """No checkpoint of a directory restores into the requested state."""


class CorruptCheckpoint(CheckpointError):
  """A checkpoint's files differ from its manifest, or it has none where it should."""


MANIFEST = "kdjax_manifest.json"
# Step-level files that orbax rewrites while it commits, after the manifest is written.
_NOT_IN_MANIFEST = frozenset({MANIFEST, "_CHECKPOINT_METADATA", "commit_success.txt"})
# Checksums of a buffer; a manifest names its own, new ones are written with _CHECKSUM.
_CHECKSUMS = {
  "xxh3_64": lambda buffer: xxhash.xxh3_64_intdigest(buffer),
  "crc32": zlib.crc32,
}
_CHECKSUM = "xxh3_64"


def _checksum(path: str, name: str) -> int:
  """Checksum ``name`` of a file's bytes, read through mmap (no copy)."""
  with open(path, "rb") as f:
    if os.fstat(f.fileno()).st_size == 0:
      return _CHECKSUMS[name](b"")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
      return _CHECKSUMS[name](buffer)


def _step_files(step_dir: str) -> list[str]:
  """The files of a step that its manifest covers, relative to ``step_dir``, sorted."""
  files = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      relative = os.path.relpath(os.path.join(root, name), step_dir)
      if relative not in _NOT_IN_MANIFEST:
        files.append(relative)
  return sorted(files)


def _write_manifest(step_dir: str) -> None:
  """Writes ``step_dir/kdjax_manifest.json``: ``{file: [size, checksum]}`` (atomic rename)."""
  files = {}
  for relative in _step_files(step_dir):
    path = os.path.join(step_dir, relative)
    files[relative] = [os.path.getsize(path), _checksum(path, _CHECKSUM)]
  path = os.path.join(step_dir, MANIFEST)
  with open(path + ".tmp", "w") as f:
    json.dump({"format": 1, "checksum": _CHECKSUM, "files": files}, f)
  os.replace(path + ".tmp", path)


def _manifest_problem(step_dir: str) -> str | None:
  """What differs between a step's files and its manifest, or None when they match.

  Raises:
    FileNotFoundError: the step has no manifest.
  """
  try:
    with open(os.path.join(step_dir, MANIFEST)) as f:
      manifest = json.load(f)
    files = {name: (int(size), int(sum_)) for name, (size, sum_) in manifest["files"].items()}
    checksum = manifest["checksum"]
    if checksum not in _CHECKSUMS:
      return f"{MANIFEST} names an unknown checksum {checksum!r}"
  except FileNotFoundError:
    raise
  except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
    return f"{MANIFEST} does not parse ({type(e).__name__}: {e})"
  present = _step_files(step_dir)
  missing = sorted(set(files) - set(present))
  if missing:
    return f"{missing[0]} is missing ({len(missing)} file(s) in all)"
  extra = sorted(set(present) - set(files))
  if extra:
    return f"{extra[0]} is not in {MANIFEST}"
  for name, (size, expected) in files.items():
    path = os.path.join(step_dir, name)
    if os.path.getsize(path) != size:
      return f"{name} has {os.path.getsize(path)} bytes, its manifest says {size}"
    if _checksum(path, checksum) != expected:
      return f"{name} has another {checksum} checksum than in its manifest"
  return None


@functools.cache
def _manifest_temporary_path(directory: str) -> type:
  """Orbax's atomic-rename temporary directory, with the manifest written into it first.

  Orbax calls ``finalize`` on the primary process once every process has written its files
  (after its ``async_write_complete`` barrier), in the background thread of an async save;
  ``finalize`` renames ``<step>.orbax-checkpoint-tmp-*`` into ``<step>``. Writing the
  manifest at its start puts the manifest inside the commit. Orbax finalizes each item's
  sub-directory (``default/``) with the same class first: only the step directories of
  ``directory`` get a manifest.
  """
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=import-outside-toplevel

  class ManifestTemporaryPath(atomicity.AtomicRenameTemporaryPath):
    async def finalize(self, *args, **kwargs):
      if os.path.dirname(os.fspath(self.get_final())) == directory:
        await asyncio.to_thread(_write_manifest, os.fspath(self.get()))
      await super().finalize(*args, **kwargs)

  return ManifestTemporaryPath


def _target(template: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs with shardings: from ``shardings``, else from the template's arrays."""

  def leaf(x, sharding=None):
    sharding = sharding if sharding is not None else getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  if shardings is None:
    return jax.tree.map(leaf, template)
  return jax.tree.map(leaf, template, shardings)


class Checkpointer:
  """Saves and restores pytree states under ``directory`` (one sub-directory per step).

  Args:
    directory: where checkpoints live (created).
    keep: how many of the newest checkpoints to keep (>= 1).
    use_async: write in a background thread.
  """

  def __init__(self, directory: str, *, keep: int, use_async: bool = True):
    if keep < 1:
      raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
    self.directory = os.path.abspath(directory)
    ocp = _orbax()
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=use_async,
        temporary_path_class=_manifest_temporary_path(self.directory),
      ),
    )

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Starts saving ``state`` as checkpoint ``step`` (no-op if that step is already saved)."""
    if step in self.manager.all_steps():
      return
    ocp = _orbax()
    self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

  def restore(self, step: int, template: Any, shardings: Any = None) -> Any:
    """Restores checkpoint ``step`` with the structure and dtypes of ``template``.

    Args:
      step: which checkpoint.
      template: a pytree of arrays or ShapeDtypeStructs with the state's structure.
      shardings: a matching pytree of shardings (default: the template arrays' own).

    Raises:
      CorruptCheckpoint: its files differ from its manifest, or it has none while other
        steps have one (see the module docstring).
    """
    problem = self._integrity_problem(step, self.manager.all_steps())
    if problem is not None:
      raise CorruptCheckpoint(f"checkpoint {self._step_dir(step)}: {problem[1]}")
    return self._restore(step, template, shardings)

  def _restore(self, step: int, template: Any, shardings: Any) -> Any:
    ocp = _orbax()
    return self.manager.restore(
      int(step), args=ocp.args.StandardRestore(_target(template, shardings))
    )

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _integrity_problem(self, step: int, steps: Any) -> tuple[str, str] | None:
    """``(kind, what)`` when ``step`` fails its manifest check (kind ``'corrupt'`` or
    ``'unverified'``), None when it passes or the directory predates manifests (a warning)."""
    try:
      problem = _manifest_problem(self._step_dir(step))
    except FileNotFoundError:
      signed = [s for s in steps if os.path.exists(os.path.join(self._step_dir(s), MANIFEST))]
      if signed:
        return "unverified", (
          f"it has no {MANIFEST} while step {max(signed)} has one, so its files cannot be "
          "checked (an incomplete copy?)"
        )
      logging.warning(
        "checkpoint %s has no %s (written before kdjax checked checkpoints): restored "
        "without checking its files",
        self._step_dir(step),
        MANIFEST,
      )
      return None
    return None if problem is None else ("corrupt", problem)

  def restore_latest(self, template: Any, shardings: Any = None) -> tuple[int | None, Any]:
    """Restores the newest intact checkpoint; ``(None, None)`` when there is none.

    Each step is first checked against its manifest: one that fails is moved aside with a
    warning. Checkpoints newer than the one restored that fail to restore are moved aside
    with a warning too.

    Raises:
      CheckpointError: there are checkpoints that pass their manifest check but none
        restores into ``template``.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      problem = self._integrity_problem(step, steps)
      if problem is not None:
        self._move_aside(step, problem[1], prefix=problem[0])
        continue
      try:
        state = self._restore(step, template, shardings)
      except Exception as e:  # pylint: disable=broad-except  # any reason: try an older one
        failures.append((step, e))
        continue
      for bad, error in failures:
        self._move_aside(bad, _describe(error))
      return step, state
    if failures:
      details = "; ".join(f"{self._step_dir(s)}: {_describe(e)}" for s, e in failures)
      raise CheckpointError(
        f"no checkpoint in {self.directory!r} restores into this job's state ({details}). "
        "If the config or code changed, use a new --workdir; if they are corrupt, move "
        "them away to start from step 0."
      )
    return None, None

  def _move_aside(self, step: int, reason: str, prefix: str = "corrupt") -> None:
    source = self._step_dir(step)
    target = os.path.join(self.directory, f"{prefix}-{step}-{int(time.time())}")
    if jax.process_index() == 0 and os.path.exists(source):
      os.replace(source, target)
    logging.warning(
      "checkpoint %s is %s (%s); moved it to %s and fell back to an older checkpoint",
      source,
      prefix,
      reason,
      target,
    )
    print(
      f"WARNING: checkpoint {source} is {prefix} ({reason}); moved it to {target}",
      flush=True,
    )
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until pending saves are complete."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def _describe(error: Exception) -> str:
  """``Type: first line`` of an exception, at most 200 characters of message."""
  first = str(error).splitlines()[0][:200] if str(error) else ""
  return f"{type(error).__name__}: {first}"


class PreemptionFlag:
  """Set by SIGTERM (TPU preemption, ``kill``) so a job can save and exit cleanly.

  Use as a context manager: the previous handler is restored on exit. Outside the main
  thread (where Python allows no signal handlers) it is a flag that only ``set`` raises.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def set(self, *unused) -> None:
    """Raises the flag (also the SIGTERM handler, hence the unused signal arguments)."""
    self._event.set()

  def is_set(self) -> bool:
    """Whether a preemption was requested."""
    return self._event.is_set()

  def __enter__(self) -> PreemptionFlag:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self.set)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def load_arrays(directory: str, step: int | None = None) -> tuple[int, Any]:
  """Reads a checkpoint written on any device topology onto this process's first device.

  For inspection, notebooks and tests (e.g. comparing runs on different meshes).

  Args:
    directory: the ``checkpoints/`` directory of a run.
    step: which checkpoint; the latest when None.

  Returns:
    ``(step, tree)``: the saved pytree (dataclasses and named tuples as nested dicts) of
    jax Arrays.

  Raises:
    CorruptCheckpoint: the step's files differ from its manifest (a step without one is
      read unchecked).
  """
  ocp = _orbax()
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise ValueError(f"no checkpoint in {directory!r}")
  step_dir = os.path.join(os.path.abspath(directory), str(step))
  try:
    problem = _manifest_problem(step_dir)
  except FileNotFoundError:
    problem = None
  if problem is not None:
    raise CorruptCheckpoint(f"checkpoint {step_dir}: {problem}")
  path = os.path.join(step_dir, "default")
  with ocp.StandardCheckpointer() as reader:
    metadata = reader.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
    )
    return step, reader.restore(path, target)
