"""The metrics of a job: ``metrics.jsonl``, TensorBoard event files and the progress line.

:class:`MetricsWriter` appends one JSON object per :meth:`~MetricsWriter.write` to
``WORKDIR/metrics.jsonl``, writes the numeric scalars to TensorBoard event files in
``WORKDIR`` through ``tensorboardX`` (a maintained writer that needs no TensorFlow), and
prints ``[name] step s/T  key=val ...  X steps/s  ETA 1m05s``. Files and prints happen on
process 0 only. NaN and inf are written as they are (``NaN``/``Infinity`` in the JSON
lines), never dropped.

On resume from step ``resume_step``, records after it that the interrupted run logged are
dropped from the JSON lines (and hidden in TensorBoard with ``purge_step``), so the log of
a resumed run equals the log of an uninterrupted one.
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Any

import jax
import numpy as np

from kdjax.jobs import workdir as workdir_lib


def check_finite(phase: str, step: int, **values: Any) -> None:
  """Raises FloatingPointError naming ``phase``, ``step`` and each non-finite value.

  Args:
    phase: what was running (e.g. ``'teacher'``, ``'KIP'``).
    step: the step whose values these are.
    **values: scalars or arrays; each must hold only finite numbers.
  """
  bad = [name for name, value in values.items() if not np.all(np.isfinite(np.asarray(value)))]
  if bad:
    shown = ", ".join(f"{name}={np.asarray(values[name]).ravel()[:3].tolist()}" for name in bad)
    raise FloatingPointError(
      f"[{phase}] step {step}: non-finite {shown}; lower the learning rate or check the "
      "inputs and the teacher"
    )


def _to_python(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s"


class MetricsWriter:
  """Writes a job's metrics records (see the module docstring).

  Args:
    workdir: the run directory.
    resume_step: the step of the checkpoint the run resumes from (records after it are
      dropped); None or 0 starts a fresh log.
    total_steps: the job's last step (for the progress line's ETA), or None.
    name: the prefix of the progress line.
    rate: whether the progress line shows steps/s and the ETA: only when ``step`` counts
      steps that take time as they run (not for records written at once, such as one per
      model or per theory round computed beforehand).
  """

  def __init__(
    self,
    workdir: str,
    *,
    resume_step: int | None,
    total_steps: int | None,
    name: str,
    rate: bool = True,
  ):
    self.workdir, self.total_steps, self.name, self.rate = workdir, total_steps, name, rate
    self.main = jax.process_index() == 0
    self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    resume_step = resume_step or 0  # 0: a fresh start, every earlier record goes
    self.records = [
      r for r in workdir_lib.read_metrics(workdir) if resume_step and r["step"] <= resume_step
    ]
    self._tb = None
    if self.main:
      workdir_lib.atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
      import tensorboardX  # pylint: disable=g-import-not-at-top  # only jobs need it

      earlier = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
      self._tb = tensorboardX.SummaryWriter(
        logdir=workdir,
        purge_step=(resume_step + 1 if resume_step else 0) if earlier else None,
        flush_secs=30,
      )
    self._start_step, self._start_time = resume_step, None

  def write(self, step: int, **metrics: Any) -> dict:
    """Appends ``{"step": step, **metrics}`` and prints the progress line; returns the record.

    Array values become Python numbers (or nested lists); strings are kept.
    """
    record = {"step": int(step)}
    record.update({k: v if isinstance(v, str) else _to_python(v) for k, v in metrics.items()})
    self.records.append(record)
    if not self.main:
      return record
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
        self._tb.add_scalar(key, value, global_step=int(step))
    self._tb.flush()
    print(self._progress(record), flush=True)
    return record

  def _progress(self, record: dict) -> str:
    step = record["step"]
    shown = "  ".join(
      f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
      for k, v in record.items()
      if k != "step" and not isinstance(v, list)
    )
    line = f"[{self.name}] step {step}" + (f"/{self.total_steps}" if self.total_steps else "")
    line += f"  {shown}" if shown else ""
    if not self.rate:
      return line
    now = time.time()
    if self._start_time is None:  # the first record's time: compilation is not counted
      self._start_time, self._start_step = now, step
    elif step > self._start_step and now > self._start_time:
      rate = (step - self._start_step) / (now - self._start_time)
      line += f"  {rate:.3g} steps/s"
      if self.total_steps:
        line += f"  ETA {_duration(max(self.total_steps - step, 0) / rate)}"
    return line

  def close(self) -> None:
    """Flushes and closes the TensorBoard writer."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
