"""One-line errors for the launchers' command lines (``launch.main``, ``launch.sweep``).

absl prints a flag it cannot parse as ``FATAL Flags parsing error: ...`` plus a hint line,
and ml_collections lets an override of a key that the config does not have
(``--config.bogus_key=1``) escape as three chained tracebacks ending in
``AttributeError: "'bogus_key'"``. :func:`parse_flags` (``app.run``'s ``flags_parser``)
makes every bad flag one line on stderr and exit status 1::

  error: --config.bogus_key: config has no key 'bogus_key'; valid keys: batch_size, ...
  error: --config.dataset.nme: config.dataset has no key 'nme'; did you mean 'name'? valid ...
  error: flag --config.num_steps=abc: invalid literal for int() with base 10: 'abc'
    (config.num_steps is of type int, default 20)                      [one line]

and :func:`one_line_config_errors` does the same for a job's ``ValueError`` that names a
``config.`` key (``error: config.num_steps must be positive, got -1 (kd)``). ``--verbosity=1``
also logs the traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
from absl import flags, logging


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
      return None, f"{walked} is of type {type(node).__name__}, not a block with keys"
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
    message = " ".join(str(e).split())
    match = re.match(r"flag --config\.([^=\s]+)=", message)  # a value of the wrong type
    config = _config_for_errors(argv, flag_values) if match else None
    if config is not None:
      value, problem = _lookup(config, match.group(1))
      if problem is None and value is not None:
        key = f"config.{match.group(1)}"
        message += f" ({key} is of type {type(value).__name__}, default {value!r})"
    raise SystemExit(f"error: {message}") from None
  except (AttributeError, KeyError) as e:  # ml_collections: an override names no entry
    logging.debug("flag parsing failed", exc_info=True)
    config = _config_for_errors(argv, flag_values)
    for path in _overrides(argv) if config is not None else ():
      _, problem = _lookup(config, path)
      if problem is not None:
        raise SystemExit(f"error: --config.{path}: {problem}") from None
    raise SystemExit(f"error: bad --config override: {type(e).__name__}: {e}") from None


@contextlib.contextmanager
def one_line_config_errors() -> Iterator[None]:
  """Turns a ValueError whose message names a ``config.`` key (a job refusing a value)
  into a one-line ``SystemExit``; any other error keeps its traceback."""
  try:
    yield
  except ValueError as e:
    if not re.search(r"\bconfig\.\w", str(e)):
      raise
    logging.debug("the job refused its config", exc_info=True)
    raise SystemExit(f"error: {' '.join(str(e).split())}") from None


def run_job(config: Any, workdir: str) -> dict:
  """``launch.main``'s work: ``validate(config)`` then ``run(config, workdir)`` of
  ``config.job``'s module (see :func:`one_line_config_errors`)."""
  # Imported here, not at the top: every job's modules (jax, flax, orbax, ...) take seconds
  # to import, and a bad command line is reported before they are needed.
  from launch import jobs  # pylint: disable=import-outside-toplevel

  with one_line_config_errors():
    job = jobs.module(config)
    job.validate(config)  # every key, before the job touches its workdir
    return job.run(config, workdir)
