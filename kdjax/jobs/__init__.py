"""The parts every kdjax job is written on. A job is ``run(config, workdir) -> summary dict``,
registered by name in ``launch/jobs.py``; it holds only what is specific to its algorithm.
The device mesh is :mod:`kdjax.mesh` (a jax-only leaf, also used by the kernels and KRR).

``kdjax.jobs.config``
  The typed config blocks every job reads and checks (pure Python, before any work):
  ``Loop``, ``Optimizer`` (``.make(num_steps)``: the one optax builder), ``Dataset``,
  ``Evaluation``, each ``Block.from_config(config.block)`` with ValueErrors naming the full
  key; ``check_int``/``check_number``/``check_choice``; ``check_migrated`` (old keys of a
  recorded config.json are named with their new names).
``kdjax.jobs.workdir``
  ``open_workdir(workdir, config) -> Workdir`` (context manager): one-line errors for a bad
  path (``WorkdirError``), an exclusive ``flock`` on ``WORKDIR/.lock`` (``WorkdirBusy``
  names the holder's pid; a killed run leaves no stale lock), ``config.json`` recorded or
  compared (``WorkdirConfigMismatch``); ``.resuming`` tells whether to resume.
  ``atomic_write(path, data)``, ``save_npz(path, **arrays)``, ``read_metrics(workdir)``,
  ``read_jsonl(path)``.
``kdjax.jobs.checkpoint``
  ``Checkpointer(directory, *, keep)``: orbax checkpoints of ANY pytree state:
  ``save(step, state)``, ``restore_latest(template, shardings=None) -> (step, state)`` or
  ``(None, None)`` (a checkpoint whose files differ from its manifest of sizes and xxh3
  checksums, or that does not restore, is moved aside to ``corrupt-<step>-<time>`` with a
  warning and the newest intact one is used), ``restore``, ``latest_step``, ``wait``,
  ``close``. ``load_arrays(directory)`` for inspection.
  ``PreemptionFlag``: set by SIGTERM so the job saves and exits.
``kdjax.jobs.preemption``
  ``stop_requested(flag, step, every)`` (agreed by all processes) and ``Preempted``
  (a clean ``SystemExit`` raised once the checkpoint is saved; re-run to resume).
``kdjax.jobs.loop``
  ``run_steps(state, step_fn, *, start, total, every, name, checkpointer, metrics, on_log,
  on_eval, check, preemption)``: THE step loop of every job (when to log, evaluate,
  checkpoint; finite checks; SIGTERM save-and-exit); ``itstime(step, every, total)``,
  ``Every``, ``resume``, ``say`` (process 0), ``write_summary(workdir, summary)``
  (``summary.json``, flat, atomic). Its docstring is the how-to, with an example.
``kdjax.jobs.metrics``
  ``MetricsWriter(workdir, *, resume_step, total_steps, name)``: ``write(step, **values)``
  to ``metrics.jsonl`` + TensorBoard event files (tensorboardX) + the progress line
  ``[name] step s/T  key=val ...  X steps/s  ETA`` (process 0 only); ``close()``.
  ``check_finite(phase, step, **values)`` raises FloatingPointError naming phase and step.
``kdjax.jobs.figures``
  ``save_figure(fig, path)`` (PNG, atomic), ``plot_curves(records, keys, path)``,
  ``image_grid(x, per_row, path)``.
``kdjax.jobs.schedules``
  ``make_schedule(config, num_steps)``: constant / cosine, linear warmup, cosine floor
  ``final_lr_fraction``; rejects a learning rate that is not finite and > 0.
``kdjax.jobs.evaluate``
  ``evaluate(eval_step, variables, batches, mesh, batch_size, prefix)``: mean loss and
  accuracy of a jitted eval step (``kdjax.train.steps.make_eval_step``) over fixed-size
  batches sharded over the mesh (the last one padded and masked); ``pad_batch``.
``kdjax.jobs.data_loading``
  ``load_dataset(config.dataset)``: the named dataset, loaded and preprocessed
  (``kdjax.data.preprocess_dataset``); ``dataset_spec`` / ``load_spec`` to cache it.

A job's skeleton::

  def run(config, workdir):
    validate(config)                                   # every key, before any work
    with jobs.workdir.open_workdir(workdir, config) as wd:
      ckpt = jobs.checkpoint.Checkpointer(f"{wd.path}/checkpoints",
                                          keep=config.keep_checkpoints)
      start, state = jobs.loop.resume(ckpt, initial_state, "kip")
      metrics = jobs.metrics.MetricsWriter(wd.path, resume_step=start,
                                           total_steps=config.num_steps, name="kip")
      state = jobs.loop.run_steps(state, step_fn, start=start, total=config.num_steps,
                                  every=jobs.loop.Every.of(config), name="kip",
                                  checkpointer=ckpt, metrics=metrics, ...)
    jobs.loop.write_summary(wd.path, summary)
"""

from kdjax.jobs import (
  checkpoint,
  config,
  data_loading,
  evaluate,
  figures,
  loop,
  metrics,
  preemption,
  schedules,
  workdir,
)

__all__ = [
  "checkpoint",
  "config",
  "data_loading",
  "evaluate",
  "figures",
  "loop",
  "metrics",
  "preemption",
  "schedules",
  "workdir",
]
