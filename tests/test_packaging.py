"""Packaging contract: the leaf packages (`kdjax.losses`, `kernels`, `krr`, `theory`) and
`kdjax.jobs` import nothing heavy and print nothing.

(The README's optax example is run by tests/test_docs.py, with every other docs block.)
"""

import ast
import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Not dependencies of `kdjax` itself (pyproject: only jax and numpy); extras may use them.
HEAVY_MODULES = (
  "flax",
  "optax",
  "orbax",
  "tensorflow",
  "tensorflow_datasets",
  "chex",
  "ml_collections",
  "matplotlib",
)


# Each module, imported in this order in one fresh interpreter, and the heavy packages it may
# not load. The leaves need only jax, numpy and scipy; `kdjax.jobs` imports orbax, absl and
# optax only when a checkpoint or a schedule is made (so its import changes no global state
# of theirs).
IMPORTS = (
  ("kdjax", HEAVY_MODULES),
  ("kdjax.losses", HEAVY_MODULES),
  ("kdjax.kernels", HEAVY_MODULES),
  ("kdjax.krr", HEAVY_MODULES),
  ("kdjax.theory", HEAVY_MODULES),
  ("kdjax.jobs", ("flax", "optax", "orbax", "absl", "tensorflow")),
)
_MARK = "@@import "


@functools.cache
def _import_report() -> tuple[dict, dict]:
  """One subprocess imports IMPORTS in order; per module: the top-level packages it loaded
  first (`new`), all loaded so far, the Python warnings raised and everything written to
  stderr/stdout meanwhile."""
  code = textwrap.dedent(f"""
      import importlib, json, sys, warnings
      report = {{}}
      for name, _ in {IMPORTS!r}:
        print("{_MARK}" + name, file=sys.stderr, flush=True)
        print("{_MARK}" + name, flush=True)
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          importlib.import_module(name)
        sys.stdout.flush(); sys.stderr.flush()
        loaded = {{m.split('.')[0] for m in sys.modules}}
        report[name] = dict(
          new=sorted(loaded - set().union(*(r["loaded"] for r in report.values()))),
          loaded=sorted(loaded),
          warnings=[f"{{w.category.__name__}}: {{w.message}}" for w in caught],
        )
      print("{_MARK}report", json.dumps(report))
      """)
  result = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=180,
    env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "")},
  )
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.split(f"{_MARK}report ")[1])
  output = {name: "" for name, _ in IMPORTS}
  for stream in (result.stdout.split(f"{_MARK}report ")[0], result.stderr):
    for chunk in stream.split(_MARK)[1:]:
      name, _, text = chunk.partition("\n")
      output[name] += text
  return report, output


@pytest.mark.parametrize("name,forbidden", IMPORTS)
def test_import_loads_no_heavy_dependency_and_prints_nothing(name, forbidden):
  report, output = _import_report()
  assert not set(report[name]["loaded"]) & set(forbidden) - set(report[name]["new"]), (
    "an earlier import in IMPORTS loaded a heavy package (see its failure)"
  )
  loaded = sorted(set(report[name]["new"]) & set(forbidden))
  assert not loaded, f"import {name} loaded {loaded}"
  assert not report[name]["warnings"], f"import {name} warned: {report[name]['warnings']}"
  assert output[name].strip() == "", f"import {name} printed: {output[name]!r}"


# What a leaf module may import from kdjax at module level besides its own package: the
# shared argument checks and the device mesh (both import only jax and numpy).
LEAF_MAY_IMPORT = ("kdjax.checks", "kdjax.mesh")


def _module_level_kdjax_imports(path: pathlib.Path) -> list[str]:
  """The kdjax modules ``path`` imports outside any function (``from kdjax import x`` is
  ``kdjax.x``)."""
  names = []
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      base = node.module
      names += [f"{base}.{a.name}" if base == "kdjax" else base for a in node.names]
  return [n for n in names if n == "kdjax" or n.startswith("kdjax.")]


@pytest.mark.parametrize("leaf", ("losses", "kernels", "krr", "theory"))
def test_leaf_imports_only_itself_and_the_shared_checks(leaf):
  """Imports point downward: a leaf never reaches up to jobs, models, train or data (which
  the runtime test above cannot see when they load nothing heavy, like ``kdjax.jobs``)."""
  bad = {}
  for path in sorted((REPO / "kdjax" / leaf).rglob("*.py")):
    for name in _module_level_kdjax_imports(path):
      if not (name.startswith(f"kdjax.{leaf}") or name.startswith(LEAF_MAY_IMPORT)):
        bad.setdefault(str(path.relative_to(REPO)), []).append(name)
  assert not bad, f"leaf modules import upward: {bad}"
