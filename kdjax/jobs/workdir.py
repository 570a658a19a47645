"""The run directory of a job: config record, exclusive lock, atomic files, metrics records.

A workdir holds ``config.json`` (the resolved config of the run), ``metrics.jsonl`` (one
JSON object per log line, each with a ``step``), ``checkpoints/``, TensorBoard event files
and PNG plots. Every file is written atomically (temporary file, fsync, rename), so a run
killed at any moment leaves the old or the new version, never half a file.

:func:`open_workdir` is how a job enters its workdir: it checks the path, takes an
exclusive ``fcntl.flock`` lock on ``WORKDIR/.lock`` (a second run on the same workdir is
refused at once with the holder's pid; the kernel drops the lock when its process dies,
so a killed run leaves no stale lock), and records the config or checks it against the
record: re-running the same command resumes, a different config is refused. Temporary
files that a killed run's atomic writes left behind are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import glob
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from kdjax.jobs import config as config_lib

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"


class WorkdirConfigMismatch(ValueError):
  """The workdir already holds a run with a different config."""


class WorkdirError(ValueError):
  """The workdir path cannot be used (empty, a file, not writable)."""


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


@dataclasses.dataclass(frozen=True)
class Workdir:
  """An open workdir.

  Attributes:
    path: the directory.
    resuming: True when it already held this run's config (the job should resume).
  """

  path: str
  resuming: bool


def atomic_write(path: str, data: bytes | str) -> None:
  """Writes ``data`` to ``path`` atomically (temporary file in the same dir + rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  if isinstance(data, str):
    data = data.encode("utf-8")
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_npz(path: str, **arrays: Any) -> None:
  """Saves arrays to an ``.npz`` file atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  atomic_write(path, buffer.getvalue())


def config_to_dict(config: Any) -> dict:
  """A ConfigDict (or mapping) as plain JSON-compatible dicts, keys sorted."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort(sort_keys=True))
  return json.loads(json.dumps(dict(config), sort_keys=True, default=str))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    missing = "<missing>"
    return [
      d
      for k in sorted(set(old) | set(new))
      for d in _differences(
        old[k] if k in old else missing, new[k] if k in new else missing, f"{prefix}{k}."
      )
    ]
  return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def check_path(workdir: str) -> str:
  """Creates ``workdir`` if needed; returns its absolute path.

  Raises:
    WorkdirError: in one line, what is wrong with which path: empty, a file where the
      directory or one of its parents should be, or not writable.
  """
  if not workdir or not str(workdir).strip():
    raise WorkdirError("the workdir path is empty; pass --workdir=DIR")
  path = os.path.abspath(workdir)
  parent = path
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if os.path.exists(parent) and not os.path.isdir(parent):
    what = "the workdir" if parent == path else f"its parent {parent!r}"
    raise WorkdirError(f"workdir {workdir!r}: {what} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"workdir {workdir!r} cannot be created: {e.strerror}") from None
  if not os.access(path, os.W_OK):
    raise WorkdirError(f"workdir {workdir!r} is not writable")
  return path


def record_config(workdir: str, config: Any) -> bool:
  """Writes ``config`` to ``workdir/config.json``, or checks it against the record there.

  Returns:
    True when the workdir already held this config (the caller should resume).

  Raises:
    WorkdirConfigMismatch: the workdir holds a run with a different config; the message
      names every differing key.
    ValueError: the recorded config has keys an older kdjax used (``mode``, ``transfer``,
      ...); the message names each with its new name (:func:`kdjax.jobs.config.check_migrated`).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  new = config_to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    config_lib.check_migrated(old, f"workdir {workdir!r}")
    diffs = _differences(old, new)
    if diffs:
      raise WorkdirConfigMismatch(
        f"workdir {workdir!r} holds a run with a different config "
        f"({'; '.join(diffs)}); use a new --workdir or the same config to resume."
      )
    return True
  atomic_write(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
  return False


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds an exclusive ``flock`` on ``workdir/.lock`` (which records the holder's pid).

  Raises:
    WorkdirBusy: another live process holds it; the message names the workdir and pid.
    WorkdirError: the lock file cannot be written (e.g. a read-only file system).
  """
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(f"workdir {workdir!r} is not writable: {e.strerror}") from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        raise
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirBusy(
        f"workdir {workdir!r} is in use by another run (pid {holder}); "
        f"wait for it to end or use another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


@contextlib.contextmanager
def open_workdir(workdir: str, config: Any, *, locked: bool = True) -> Iterator[Workdir]:
  """Enters a job's workdir: checks the path, locks it, records or checks ``config``.

  Args:
    workdir: the run directory (created).
    config: the job's ConfigDict, recorded in ``config.json``.
    locked: take the exclusive lock (False for a sub-directory of an already locked
      workdir). In a multi-process run only process 0 locks and records; the others
      wait for it.

  Yields:
    A :class:`Workdir`; ``resuming`` tells whether it already held this run.

  Raises:
    WorkdirError, WorkdirBusy, WorkdirConfigMismatch: see :func:`check_path`,
      :func:`lock` and :func:`record_config`.
  """
  path = check_path(workdir)
  if jax.process_index() != 0:  # process 0 locks and records; the others follow it
    multihost_utils.sync_global_devices(f"open_workdir {path}")
    yield Workdir(path, os.path.exists(os.path.join(path, CONFIG_FILE)))
    return
  with lock(path) if locked else contextlib.nullcontext():
    if locked:  # no other writer: temporary files of a killed atomic_write are leftovers
      for leftover in glob.glob(os.path.join(path, ".tmp-*")):
        os.remove(leftover)
    try:
      resuming = record_config(path, config)
    except OSError as e:
      raise WorkdirError(f"workdir {workdir!r} is not writable: {e.strerror}") from None
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"open_workdir {path}")
    yield Workdir(path, resuming)


def read_jsonl(path: str) -> list[dict]:
  """The JSON objects of a JSON-lines file, one per line (empty if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_metrics(workdir: str) -> list[dict]:
  """Returns the records of ``workdir/metrics.jsonl`` (empty if there are none)."""
  return read_jsonl(os.path.join(workdir, METRICS_FILE))
