"""Training: TrainState, objectives, jitted sharded steps, checkpoints and the run loop.

Modules:
  state        TrainState (arrays only), optimizers from configs, sharded initialisation.
  sharding     replicate / FSDP parameter-sharding rules (the mesh is kdjax.mesh).
  objectives   supervised, KD (any kdjax.losses divergence), born-again, self-distillation.
  augment      on-device augmentation (crop/flip, shift) keyed by seed and step.
  steps        pure train_step(state, batch[, teacher_variables]) and eval steps, jitted.
  loop         run(config, workdir): phases, resume, metrics, plots (launcher entry point).

Workdir, checkpoints, metrics, plots, mesh and schedules come from ``kdjax.jobs``; the
configs live in ``experiments/`` (base configs in ``experiments.common``).
"""
