r"""Runs every point of a config's sweep, one workdir each, and tabulates the results.

``python -m launch.sweep --config=experiments/NAME.py[:arg] --workdir=ROOT``

The config file defines ``sweep(arg=None) -> list[dict]``: each dict has a ``name`` and
flattened config overrides (``{"name": "t4", "kd.temperature": 4.0}``). Point ``name``
runs in ``ROOT/name`` (so a re-run skips finished points and resumes unfinished ones);
the summaries that ``run`` returns are merged into ``ROOT/results.jsonl`` (one row per
finished point, earlier runs' rows kept, so ``--only=a`` then ``--only=b`` holds both) and
printed as a Markdown table, also saved as ``ROOT/results.md``. ``--only`` names that are
not points of the sweep are an error.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from types import ModuleType

from absl import app, flags
from ml_collections import config_flags

from kdjax.jobs import workdir as workdir_lib
from launch import cli, jobs

RESULTS = "results.jsonl"

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_ONLY = flags.DEFINE_list("only", [], "Run only these point names.")
flags.mark_flags_as_required(["config", "workdir"])


def config_module(path: str) -> ModuleType:
  """Imports ``experiments/NAME.py`` as the module ``experiments.NAME``.

  Raises:
    ValueError: ``path`` is not a file of this repository's ``experiments`` package.
  """
  directory, name = os.path.split(os.path.abspath(path))
  stem, ext = os.path.splitext(name)
  if os.path.basename(directory) != "experiments" or ext != ".py":
    raise ValueError(
      f"--config={path!r} must be experiments/NAME.py (a module of the experiments package)"
    )
  module = importlib.import_module(f"experiments.{stem}")
  if not os.path.samefile(module.__file__, path):
    raise ValueError(
      f"--config={path!r} is not the experiments.{stem} that Python imports "
      f"({module.__file__}); run from the repository root"
    )
  return module


def sweep_points(config_arg: str) -> list[dict]:
  """The ``sweep(arg)`` list of the config module of ``experiments/NAME.py[:arg]``."""
  path, _, arg = config_arg.partition(":")
  module = config_module(path)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} defines no sweep(arg) function")
  points = module.sweep(arg or None)
  names = [p.get("name") for p in points]
  if None in names or len(set(names)) != len(names):
    raise ValueError(f"every sweep point of {path} needs a unique 'name', got {names}")
  return points


def markdown_table(rows: list[dict]) -> str:
  """Formats a list of flat dicts as a Markdown table (floats to 4 significant digits)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def apply_point(base_config, point: dict):
  """Returns a locked copy of ``base_config`` with the point's dotted-key overrides.

  Raises:
    ValueError: an override names a key the config does not have (a typo would otherwise
      add a new, unused key) or has a value of the wrong type.
  """
  config = copy.deepcopy(base_config)
  config.lock()
  try:
    config.update_from_flattened_dict({k: v for k, v in point.items() if k != "name"})
  except (KeyError, TypeError) as error:
    raise ValueError(f"sweep point {point.get('name')!r}: {error}") from error
  return config


def read_results(root: str) -> list[dict]:
  """The rows of ``root/results.jsonl`` (empty when there is none)."""
  return workdir_lib.read_jsonl(os.path.join(root, RESULTS))


def run_sweep(base_config, points: list[dict], root: str, only=()) -> list[dict]:
  """Runs each point (sequentially, or those named in ``only``) and returns the rows of
  every finished point, in sweep order: this run's and the earlier runs' in ``root``.

  Raises:
    ValueError: a name in ``only`` is not a point of the sweep (the message lists them), or
      a point's config does not validate (named, before any point runs).
  """
  names = [p["name"] for p in points]
  unknown = [name for name in only if name not in names]
  if unknown:
    raise ValueError(f"--only names {unknown} that are not sweep points; valid: {names}")
  configs = {}
  for point in points:  # every point is validated before any of them runs
    if not only or point["name"] in only:
      config = configs[point["name"]] = apply_point(base_config, point)
      try:
        jobs.module(config).validate(config)
      except ValueError as error:
        raise ValueError(f"sweep point {point['name']!r}: {error}") from None
  rows = {row["name"]: row for row in read_results(root) if row.get("name") in names}
  for i, point in enumerate(points):
    overrides = {k: v for k, v in point.items() if k != "name"}
    if only and point["name"] not in only:
      continue
    print(f"[sweep] point {i + 1}/{len(points)}: {point['name']} {overrides}", flush=True)
    config = configs[point["name"]]
    summary = jobs.runner(config)(config, os.path.join(root, point["name"]))
    rows[point["name"]] = {"name": point["name"], **overrides, **(summary or {})}
    ordered = [rows[name] for name in names if name in rows]
    workdir_lib.atomic_write(
      os.path.join(root, RESULTS), "".join(json.dumps(r, default=str) + "\n" for r in ordered)
    )
  return [rows[name] for name in names if name in rows]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config_arg = config_flags.get_config_filename(flags.FLAGS["config"])  # "path[:arg]"
  with cli.one_line_config_errors():
    rows = run_sweep(_CONFIG.value, sweep_points(config_arg), _WORKDIR.value, _ONLY.value)
  table = markdown_table(rows)
  workdir_lib.atomic_write(os.path.join(_WORKDIR.value, "results.md"), table)
  print(table)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
