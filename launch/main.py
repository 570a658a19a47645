r"""Runs one experiment: ``python -m launch.main --config=experiments/NAME.py[:arg] --workdir=DIR``.

``--config.key=value`` overrides any config entry (an unknown key is an error).
``config.job`` picks the ``run(config, workdir)`` of the registry in ``launch/jobs.py``.
The workdir gets config.json, metrics.jsonl, TensorBoard event files, checkpoints/ and PNG
plots; running the same command again resumes, and a second run on a workdir that is in
use is refused. For multi-host runs pass ``--distributed`` (TPU VMs and GPU
clusters discover their peers) or ``--coordinator_address/--num_processes/--process_id``
(CPU hosts, gloo collectives).

A bad command line is one line on stderr and exit status 1, with no traceback: an unknown
``--config.key`` (naming the valid keys at that level, and the closest one), a value of
the wrong type (naming the key's type), a missing flag, and a ``ValueError`` of the job
that names a ``config.`` key (an out-of-range value: the job's validation, before any
work). ``--verbosity=1`` also logs the traceback.
"""

import difflib
import re
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from launch import jobs

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


def _config_argument(argv: Sequence[str]) -> str | None:
  """The value of ``--config=PATH[:arg]`` (or ``--config PATH``) in ``argv``."""
  for i, arg in enumerate(argv):
    match = re.fullmatch(r"--?config(?:=(.*))?", arg)
    if match:
      return match.group(1) if match.group(1) is not None else (argv[i + 1 : i + 2] or [None])[0]
  return None


def _overrides(argv: Sequence[str]) -> list[str]:
  """The dotted paths of the ``--config.PATH=value`` overrides in ``argv``, in order."""
  return [m.group(1) for a in argv if (m := re.fullmatch(r"--?config\.([^=]+)(?:=.*)?", a))]


def _lookup(config: Any, path: str) -> tuple[Any, str | None]:
  """``(value, None)`` for the entry ``config.<path>``, or ``(None, why there is none)``.

  Paths with an index (``a[0].b``) are left to ml_collections: ``(None, None)``.
  """
  node, walked = config, "config"
  for part in path.split("."):
    if "[" in part:
      return None, None
    if not isinstance(node, ml_collections.ConfigDict):
      return None, f"{walked} is a {type(node).__name__}, not a block with keys"
    if part not in node:
      keys = sorted(node.keys())
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f"did you mean {close[0]!r}? " if close else ""
      return None, f"{walked} has no key {part!r}; {hint}valid keys: {', '.join(keys)}"
    node, walked = node[part], f"{walked}.{part}"
  return node, None


def _config_for_errors(argv: Sequence[str], flag_values: flags.FlagValues) -> Any:
  """The config (without overrides) that ``--config`` names, or None if it does not load."""
  argument = _config_argument(argv)
  if argument is None:
    return None
  try:
    return flag_values["config"].parser.parse(argument)
  except Exception:  # pylint: disable=broad-except  # only for a better message
    return None


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl's flag parsing with one-line errors (``app.run``'s ``flags_parser``).

  Raises:
    SystemExit: with the one-line message, for any bad flag.
  """
  try:
    return flag_values(list(argv))
  except flags.Error as e:
    message = str(e).strip().replace("\n", " ")
    match = re.match(r"flag --config\.([^=\s]+)=", message)
    config = _config_for_errors(argv, flag_values) if match else None
    value, problem = _lookup(config, match.group(1)) if config is not None else (None, "-")
    if problem is None and value is not None:
      message += f" (config.{match.group(1)} is a {type(value).__name__}, default {value!r})"
    raise SystemExit(f"error: {message}") from None
  except (AttributeError, KeyError) as e:  # ml_collections: an override names no entry
    logging.debug("flag parsing failed", exc_info=True)
    config = _config_for_errors(argv, flag_values)
    for path in _overrides(argv) if config is not None else ():
      _, problem = _lookup(config, path)
      if problem is not None:
        raise SystemExit(f"error: --config.{path}: {problem}") from None
    raise SystemExit(f"error: bad --config override: {type(e).__name__}: {e}") from None


def run_job(config: Any, workdir: str) -> dict:
  """Runs ``config.job`` in ``workdir``; a ValueError naming a ``config.`` key (a bad value)
  becomes a one-line ``SystemExit``, any other error keeps its traceback."""
  try:
    return jobs.runner(config)(config, workdir)
  except ValueError as e:
    if not re.search(r"\bconfig\.\w", str(e)):
      raise
    logging.debug("the job refused its config", exc_info=True)
    raise SystemExit(f"error: {str(e).strip()}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  initialize_distributed()
  run_job(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
