r"""Runs one experiment: ``python -m launch.main --config=experiments/NAME.py[:arg] --workdir=DIR``.

``--config.key=value`` overrides any config entry (an unknown key is an error).
``config.job`` picks the job module of the registry in ``launch/jobs.py``: its
``validate(config)`` runs before anything else, then ``run(config, workdir)``.
The workdir gets config.json, metrics.jsonl, TensorBoard event files, checkpoints/ and PNG
plots; running the same command again resumes, and a second run on a workdir that is in
use is refused. For multi-host runs pass ``--distributed`` (TPU VMs and GPU
clusters discover their peers) or ``--coordinator_address/--num_processes/--process_id``
(CPU hosts, gloo collectives).

A bad command line is one line on stderr and exit status 1, with no traceback
(:mod:`launch.cli`): an unknown ``--config.key`` (naming the valid keys at that level and
the closest one), a value of the wrong type (naming the key's type), a missing flag, and a
``ValueError`` of the job that names a ``config.`` key (e.g. an out-of-range value).
"""

from absl import app, flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if present).")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Call jax.distributed.initialize() with auto-detection (TPU/GPU)."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """Starts jax.distributed when the flags ask for more than one process."""
  import jax

  if _COORDINATOR.value:
    # Only used by the CPU backend (gloo collectives between CPU processes).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  initialize_distributed()  # first: validation may ask jax for the devices
  cli.run_job(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
