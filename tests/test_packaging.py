"""Packaging contract: `import kdjax.losses` is light.

(The README's optax example is run by tests/test_docs.py, with every other docs block.)
"""

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


@pytest.mark.parametrize(
  "statement", ["import kdjax", "import kdjax.losses", "from kdjax.losses import kd_loss"]
)
def test_import_does_not_pull_heavy_dependencies(statement):
  code = textwrap.dedent(f"""
      import sys
      {statement}
      loaded = sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY_MODULES!r}))
      print(','.join(loaded))
      """)
  result = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "", f"{statement} imported {result.stdout.strip()}"
