r"""The one step loop every kdjax job runs: when to log, evaluate, checkpoint and stop.

A job writes only what is specific to its algorithm (how to build a state, what one step
does, what a record and an evaluation hold); :func:`run_steps` decides when each happens:

* after step ``s`` (``done = s + 1``) it logs when :func:`itstime`\ ``(done,
  log_every, total)``, evaluates when ``itstime(done, eval_every, total)`` and saves a
  checkpoint when ``itstime(done, checkpoint_every, total)``: every ``every`` steps and
  always at the last step;
* before a record is written or a checkpoint saved, the logged values (and what
  ``check`` returns) must be finite, else ``FloatingPointError`` names the job and the
  step (:func:`kdjax.jobs.metrics.check_finite`): a diverged state is never logged as a
  number nor saved;
* SIGTERM (TPU preemption, ``kill``) sets a :class:`~kdjax.jobs.checkpoint.PreemptionFlag`;
  after the step in flight the loop saves a checkpoint of that step, waits for it and
  raises :class:`~kdjax.jobs.preemption.Preempted` (a clean ``SystemExit(0)``); the same
  command then resumes from it (:func:`resume`);
* records go to the job's :class:`~kdjax.jobs.metrics.MetricsWriter` (``metrics.jsonl``,
  TensorBoard, the progress line on process 0); :func:`say` prints on process 0 only.

Resume equality: when ``step_fn``'s batch and random keys depend only on ``(seed,
step)`` and everything a record needs is in the checkpointed state (e.g. a running loss
sum, see the example), a run resumed from any checkpoint logs the records and ends with
the state of an uninterrupted run, bit for bit.

How to write a job's loop (a complete, runnable example)::

  import jax, jax.numpy as jnp
  from kdjax import jobs
  from kdjax.jobs import loop

  def step_fn(state, step):  # the batch of `step` is a function of (seed, step)
    x = jax.random.normal(jax.random.fold_in(jax.random.key(0), step), (8,))
    loss = jnp.mean((state["w"] - x) ** 2)
    new = {"w": state["w"] - 0.1 * (state["w"] - x), "loss_sum": state["loss_sum"] + loss}
    return new, {"loss": loss}

  def on_log(state, step, metrics):  # -> (state, record): mean loss since the last record
    return {**state, "loss_sum": state["loss_sum"] * 0}, {"train_loss": state["loss_sum"]}

  with jobs.workdir.open_workdir(workdir, config) as wd:
    ckpt = jobs.checkpoint.Checkpointer(f"{wd.path}/checkpoints", keep=3)
    try:
      start, state = loop.resume(ckpt, {"w": jnp.zeros(8), "loss_sum": jnp.float32(0)}, "toy")
      log = jobs.metrics.MetricsWriter(wd.path, resume_step=start, total_steps=100, name="toy")
      state = loop.run_steps(
        state, step_fn, start=start, total=100, name="toy",
        every=loop.Every(log=10, eval=50, checkpoint=20),
        checkpointer=ckpt, metrics=log, on_log=on_log,
        on_eval=lambda state, step: {"test_loss": jnp.mean(state["w"] ** 2)},
      )
      log.close()
    finally:
      ckpt.close()
    loop.write_summary(wd.path, {"test_loss": float(jnp.mean(state["w"] ** 2))})

A job module (registered in ``launch/jobs.py``) is ``validate(config)`` (every key, before
any work) and ``run(config, workdir) -> flat summary dict`` that ends with
:func:`write_summary`; a phase (a teacher, a generation, one student) counts as finished
when :func:`finished` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from kdjax.jobs import workdir as workdir_lib
from kdjax.jobs.checkpoint import Checkpointer, PreemptionFlag
from kdjax.jobs.metrics import MetricsWriter, check_finite
from kdjax.jobs.preemption import Preempted, stop_requested

__all__ = [
  "CHECKPOINT_DIR",
  "Every",
  "Preempted",
  "PreemptionFlag",
  "finished",
  "itstime",
  "last_checkpoint",
  "resume",
  "run_steps",
  "say",
  "write_summary",
]

SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"

State = Any
Record = Mapping[str, Any]


class Every(NamedTuple):
  """How often the loop logs, evaluates and checkpoints (each a positive number of steps).

  Attributes:
    log: a metrics record (``on_log``) every ``log`` steps; also the steps at which the
      processes of a multi-host run agree on a preemption.
    eval: an evaluation (``on_eval``) every ``eval`` steps.
    checkpoint: a checkpoint every ``checkpoint`` steps.
  """

  log: int
  eval: int
  checkpoint: int

  @classmethod
  def of(cls, config: Any) -> Every:
    """``config.log_every``, ``config.eval_every`` and ``config.checkpoint_every``."""
    return cls(int(config.log_every), int(config.eval_every), int(config.checkpoint_every))


def itstime(step: int, every: int, total: int) -> bool:
  """Whether ``step`` (the number of steps done) is a multiple of ``every`` or the last.

  Raises:
    ValueError: ``every`` is not a positive integer.
  """
  if every < 1:
    raise ValueError(f"every must be a positive number of steps, got {every}")
  return step % every == 0 or step == total


def say(message: str) -> None:
  """Prints ``message`` on process 0 only (progress, resume and summary lines)."""
  if jax.process_index() == 0:
    print(message, flush=True)


def resume(
  checkpointer: Checkpointer, state: State, name: str, shardings: Any = None
) -> tuple[int, State]:
  """``(step, state)`` of the newest intact checkpoint, else ``(0, state)``.

  Args:
    checkpointer: the job's checkpoints.
    state: the initial state (or a tree of ``jax.ShapeDtypeStruct``), the restore template.
    name: the job's name for the ``[name] resumed from ...`` line.
    shardings: the restored arrays' shardings (default: the template's).
  """
  step, restored = checkpointer.restore_latest(state, shardings)
  if step is None:
    return 0, state
  say(f"[{name}] resumed from the checkpoint at step {step}")
  return step, restored


def run_steps(
  state: State,
  step_fn: Callable[[State, int], tuple[State, Record]],
  *,
  start: int,
  total: int,
  every: Every,
  name: str,
  checkpointer: Checkpointer,
  metrics: MetricsWriter,
  on_log: Callable[[State, int, Record], tuple[State, Record]] | None = None,
  on_eval: Callable[[State, int], Record] | None = None,
  check: Callable[[State, Record], Record] | None = None,
  preemption: PreemptionFlag | None = None,
) -> State:
  """Runs ``state, metrics = step_fn(state, step)`` for ``step = start .. total - 1``.

  After each step, with ``done = step + 1`` (see the module docstring for an example):

  1. when ``itstime(done, every.log, total)``: ``state, record = on_log(state, done,
     metrics)`` (default: the step's metrics as floats); ``on_log`` may change the state,
     e.g. reset a running sum it keeps there;
  2. when it logs or saves: every logged value and every array of ``check(state,
     metrics)`` must be finite (FloatingPointError naming ``name`` and ``done``);
  3. when ``itstime(done, every.eval, total)``: ``record.update(on_eval(state, done))``;
  4. a non-empty record is written: ``metrics.write(done, **record)``;
  5. when ``itstime(done, every.checkpoint, total)``: ``checkpointer.save(done, state)``;
  6. when a preemption is requested (and ``done < total``): the checkpoint of ``done`` is
     saved and written to disk, and :class:`Preempted` is raised.

  Args:
    state: the state after ``start`` steps (e.g. from :func:`resume`); any pytree, saved
      whole in the checkpoints.
    step_fn: one step; ``step`` is the index of the step (the batch and keys of step
      ``step`` should depend only on the seed and ``step``). ``metrics``: scalars.
    start: the number of steps already done.
    total: the last step.
    every: log, eval and checkpoint periods.
    name: the job's (or phase's) name in errors and messages.
    checkpointer: where checkpoints go.
    metrics: where records go.
    on_log: ``(state, step, metrics) -> (state, record)``; default: ``(state, {k:
      float(v)})`` of the step's metrics.
    on_eval: ``(state, step) -> record``; default: no evaluation.
    check: ``(state, metrics) -> {name: array}``, more values that must be finite
      before a record or a checkpoint (e.g. the support images); default: none.
    preemption: the job's flag (entered by the job around all its work); when None,
      SIGTERM is caught during this loop only.

  Returns:
    The state after ``total`` steps (checkpointed; the save may still be in flight:
    ``checkpointer.wait()`` or ``close()`` finishes it).

  Raises:
    FloatingPointError: a logged or checked value is not finite.
    Preempted: SIGTERM arrived; the checkpoint of the step done is on disk.
  """
  if on_log is None:
    on_log = _default_log
  with contextlib.ExitStack() as stack:
    if preemption is None:
      preemption = stack.enter_context(PreemptionFlag())
    for step in range(start, total):
      state, step_metrics = step_fn(state, step)
      done = step + 1
      logs = itstime(done, every.log, total)
      saves = itstime(done, every.checkpoint, total)
      record = {}
      if logs:
        state, record = on_log(state, done, step_metrics)
        record = dict(record)
      if logs or saves:
        checked = dict(check(state, step_metrics)) if check is not None else {}
        check_finite(name, done, **{**_numbers(record), **checked})
      if on_eval is not None and itstime(done, every.eval, total):
        record.update(on_eval(state, done))
      if record:
        metrics.write(done, **record)
      if saves:
        checkpointer.save(done, state)
      if done < total and stop_requested(preemption, done, every.log):
        checkpointer.save(done, state)
        checkpointer.wait()
        say(
          f"[{name}] SIGTERM: saved the checkpoint at step {done}; "
          "re-run the same command to resume"
        )
        raise Preempted(0)
  return state


def _default_log(state: State, step: int, metrics: Record) -> tuple[State, dict]:
  return state, {k: float(v) for k, v in metrics.items()}


def _numbers(record: Record) -> dict:
  return {k: v for k, v in record.items() if not isinstance(v, str)}


def write_summary(workdir: str, summary: Mapping[str, Any]) -> dict:
  """Writes ``WORKDIR/summary.json`` (sorted keys, atomic, process 0) and prints it.

  Every job ends with this. ``summary`` is flat: names to numbers (NumPy scalars become
  Python numbers), strings, booleans or ``None`` (a value that does not exist, e.g. a
  round that was not reached: ``null`` in the JSON). Returns it as a dict.

  Raises:
    ValueError: a value is a list, dict or array (the summary must be flat).
  """
  summary = {k: v.item() if isinstance(v, np.generic) else v for k, v in summary.items()}
  nested = [k for k, v in summary.items() if v is not None and not isinstance(v, (int, float, str))]
  if nested:
    raise ValueError(f"a job's summary must be flat (numbers, strings, None); not: {nested}")
  text = json.dumps(summary, indent=2, sort_keys=True)
  if jax.process_index() == 0:
    workdir_lib.atomic_write(os.path.join(workdir, SUMMARY_FILE), text + "\n")
  say("summary: " + json.dumps(summary, sort_keys=True))
  return summary


def last_checkpoint(phase_dir: str) -> int | None:
  """The step of the newest complete checkpoint in ``phase_dir/checkpoints``, or None.

  Reads only: a missing directory is None and is not created.
  """
  directory = os.path.join(phase_dir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return None
  checkpointer = Checkpointer(directory, keep=1)
  try:
    return checkpointer.latest_step()
  finally:
    checkpointer.close()


def finished(phase_dir: str, total: int) -> bool:
  """Whether the run in ``phase_dir`` (a job, or a phase of one: a teacher, a generation, a
  student) is finished: its newest complete checkpoint is at step ``total``.

  The one test every job uses before it reuses a phase (e.g. a teacher from
  ``config.teacher_workdir``) instead of training it; reads only.
  """
  return last_checkpoint(phase_dir) == int(total)
