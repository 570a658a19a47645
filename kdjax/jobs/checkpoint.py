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
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import jax

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
    """
    ocp = _orbax()
    return self.manager.restore(
      int(step), args=ocp.args.StandardRestore(_target(template, shardings))
    )

  def restore_latest(self, template: Any, shardings: Any = None) -> tuple[int | None, Any]:
    """Restores the newest intact checkpoint; ``(None, None)`` when there is none.

    Checkpoints newer than it that fail to restore are moved aside with a warning.

    Raises:
      CheckpointError: there are checkpoints but none restores into ``template``.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      try:
        state = self.restore(step, template, shardings)
      except Exception as e:  # pylint: disable=broad-except  # any reason: try an older one
        failures.append((step, e))
        continue
      for bad, error in failures:
        self._move_aside(bad, error)
      return step, state
    if failures:
      details = "; ".join(
        f"{os.path.join(self.directory, str(s))}: {type(e).__name__}: "
        f"{str(e).splitlines()[0][:200] if str(e) else ''}"
        for s, e in failures
      )
      raise CheckpointError(
        f"no checkpoint in {self.directory!r} restores into this job's state ({details}). "
        "If the config or code changed, use a new --workdir; if they are corrupt, move "
        "them away to start from step 0."
      )
    return None, None

  def _move_aside(self, step: int, error: Exception) -> None:
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, f"corrupt-{step}-{int(time.time())}")
    if jax.process_index() == 0 and os.path.exists(source):
      os.replace(source, target)
    logging.warning(
      "checkpoint %s does not restore (%s: %s); moved it to %s and fell back "
      "to an older checkpoint",
      source,
      type(error).__name__,
      str(error).splitlines()[0][:200] if str(error) else "",
      target,
    )
    print(
      f"WARNING: checkpoint {source} is corrupt ({type(error).__name__}); moved it to {target}",
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
  """
  ocp = _orbax()
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise ValueError(f"no checkpoint in {directory!r}")
  path = os.path.join(os.path.abspath(directory), str(step), "default")
  with ocp.StandardCheckpointer() as reader:
    metadata = reader.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
    )
    return step, reader.restore(path, target)
