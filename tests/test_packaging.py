"""Packaging contract: the leaf packages (`kdjax.losses`, `kernels`, `krr`, `theory`) and
`kdjax.jobs` import nothing heavy and print nothing, and the README's optax example works."""

import functools
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
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


# The README example (also in the README section of issue 3): kd_loss inside someone
# else's optax training step. `student_apply`, `teacher_apply` and `optimizer` are the
# user's; the test below executes exactly this text.
README_EXAMPLE = """\
import jax, jax.numpy as jnp, optax
from kdjax.losses import kd_loss

@jax.jit
def train_step(params, opt_state, teacher_params, x, y):
  teacher_logits = jax.lax.stop_gradient(teacher_apply(teacher_params, x))  # frozen teacher
  def loss_fn(params):
    logits = student_apply(params, x)
    return jnp.mean(kd_loss(logits, teacher_logits, temperature=4.0)
                    + optax.softmax_cross_entropy_with_integer_labels(logits, y))
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss
"""


def test_readme_optax_example_trains():
  import jax.numpy as jnp
  import optax

  rng = np.random.default_rng(0)
  num, dim, classes = 256, 8, 4
  x = jnp.asarray(rng.standard_normal((num, dim)), jnp.float32)
  teacher_params = {"w": jnp.asarray(rng.standard_normal((dim, classes)), jnp.float32)}
  y = jnp.argmax(x @ teacher_params["w"], axis=-1)
  namespace = {
    "student_apply": lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"],
    "teacher_apply": lambda p, x: x @ p["w"],
    "optimizer": optax.adam(1e-2),
  }
  exec(README_EXAMPLE, namespace)  # the example's code, verbatim
  params = {
    "w1": jnp.asarray(0.3 * rng.standard_normal((dim, 16)), jnp.float32),
    "w2": jnp.zeros((16, classes), jnp.float32),
  }
  opt_state = namespace["optimizer"].init(params)
  losses = []
  for _ in range(150):
    params, opt_state, loss = namespace["train_step"](params, opt_state, teacher_params, x, y)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
  accuracy = float(jnp.mean(jnp.argmax(namespace["student_apply"](params, x), -1) == y))
  assert accuracy > 0.9


def test_readme_example_matches_readme_when_present():
  readme = (REPO / "README.md").read_text()
  blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "kd_loss(" in b]
  if not blocks:
    pytest.skip("README.md has no kd_loss example yet")
  assert README_EXAMPLE in blocks, "README.md's kd_loss example differs from README_EXAMPLE"
