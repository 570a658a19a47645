"""Executes every colabs/*.ipynb top to bottom in smoke mode and checks its results.

Each notebook runs in a fresh ``python3`` Jupyter kernel with ``KDJAX_COLAB_SMOKE=1``
(the notebooks shrink their sizes) and one device, as on a CPU Colab. A cell that raises
fails the test. Every notebook ends by defining a ``results`` dict; an extra cell appended
here prints it as JSON, and the notebook's check below asserts on it. The notebooks run
concurrently, at most ``CONCURRENT`` kernels at a time: most of their time is
single-threaded imports and compilation, so overlapping them fills the 2 cores.
"""

import asyncio
import json
import os
import pathlib

import nbclient
import nbformat
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLABS = sorted((ROOT / "colabs").glob("*.ipynb"))
MARKER = "__KDJAX_RESULTS__"
CONCURRENT = 3  # kernels at once: enough to keep 2 cores busy, with bounded memory
READ_RESULTS = f"import json as _json\nprint({MARKER!r} + _json.dumps(results, default=float))"


def check_kd_losses(r):
  assert r["teacher_accuracy"] > 0.7, r
  for key in ("student_kd_accuracy", "student_labels_accuracy"):
    assert r[key] > 5 * r["chance"], (key, r)
  assert r["student_kd_loss_last"] < 0.5 * r["student_kd_loss_first"], r


def check_self_distillation_theory(r):
  # Closed forms of kdjax.theory against the notebook's NumPy iterated solves (float64).
  for key in (
    "max_abs_diff_closed_vs_iterated",
    "max_abs_diff_shrinkage",
    "max_abs_diff_constrained",
    "max_abs_diff_limit",
    "max_abs_diff_gp",
  ):
    assert r[key] < 1e-9, (key, r[key])
  assert r["collapse_round_closed"] is not None
  assert r["collapse_round_closed"] == r["collapse_round_iterated"]
  # Mobahi et al. (2020): without labels every round shrinks the predictions.
  norms = r["train_norms_alpha0"]
  assert all(b < a for a, b in zip(norms, norms[1:])), norms
  # The optimal label weight is at least as good as every alpha on the notebook's grid.
  assert 0.0 <= r["optimal_alpha"] <= 1.0
  assert r["final_error_optimal_alpha"] <= min(r["final_errors"].values()) + 1e-12, r


def check_kip_distillation(r):
  for per_class, accuracy in r["kip_accuracy"].items():
    initial = r["kip_initial_accuracy"][per_class]
    assert accuracy > initial + 0.05, (per_class, initial, accuracy)
    assert accuracy > r["random_subset"][per_class][0], (per_class, r)
    assert r["kip_loss_last"][per_class] < r["kip_loss_first"][per_class], r
  for mean, _ in r["random_subset"].values():
    assert mean > 2 * r["chance"], r


def check_theory_dynamics(r):
  assert r["max_abs_diff_limit"] < 1e-10, r
  assert 1.8 < r["gd_errors"][0] / r["gd_errors"][1] < 2.2, r  # GD error is O(eta)
  assert r["mae_first_feature"] == [0] * len(r["mae_first_feature"]), r
  assert r["jepa_first_feature"][0] == 0, r
  assert r["jepa_gd_vs_ode"] < 1e-2, r
  assert all(lo <= found <= hi for lo, found, hi in r["collapse_rows"]), r
  assert r["max_abs_diff_gpc_duplicated"] < 1e-8, r


def check_lm_distillation(r):
  assert r["cache_matches"] is True, r
  bpb, uniform = r["bits_per_byte"], r["uniform_bits_per_byte"]
  assert 0 < bpb["teacher"] < uniform - 0.5, r  # learnt something in 30 smoke steps
  assert all(0 < value < uniform + 0.5 for value in bpb.values()), r
  assert r["teacher_loss_last"] < r["teacher_loss_first"], r
  assert all(n >= 1 for n in r["sample_lengths"]), r
  assert r["speculative_matches"] is True, r  # greedy speculative == greedy target
  assert all(0 <= a <= 1 for a in r["acceptance"].values()) and len(r["acceptance"]) == 4, r
  assert set(r["xtok_bits_per_byte"]) == {"ce", "alm"}, r
  assert all(0 < value < 16 for value in r["xtok_bits_per_byte"].values()), r


def check_dataset_distillation(r):
  assert r["closed_form_diff"] < 1e-6, r  # one point per class reproduces the ridge model
  assert r["rfad_loss_last"] < r["rfad_loss_first"], r
  assert r["frepo_loss_last"] < r["frepo_loss_first"], r
  for name, accuracy in r["accuracy"].items():
    assert accuracy > 2 * r["chance"], (name, r)


def check_diffusion_distillation(r):
  e = r["energy"]
  assert all(np.isfinite(v) for v in e.values()), r
  assert e["teacher_nfe64"] < e["teacher_nfe1"] / 3, r  # Euler converges with the NFE
  assert e["progressive_nfe1"] < e["teacher_nfe1"], r  # distilled into one step
  assert {f"{s}_nfe1" for s in ("progressive", "consistency", "dmd", "flow_map")} <= set(e), r


CHECKS = {
  "kd_losses.ipynb": check_kd_losses,
  "self_distillation_theory.ipynb": check_self_distillation_theory,
  "kip_distillation.ipynb": check_kip_distillation,
  "theory_dynamics.ipynb": check_theory_dynamics,
  "lm_distillation.ipynb": check_lm_distillation,
  "dataset_distillation.ipynb": check_dataset_distillation,
  "diffusion_distillation.ipynb": check_diffusion_distillation,
}


def kernel_env():
  """The test process's environment in smoke mode, one CPU device, kdjax importable."""
  env = dict(os.environ)
  env["KDJAX_COLAB_SMOKE"] = "1"
  flags = [
    f
    for f in env.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env["XLA_FLAGS"] = " ".join(flags)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  return env


def test_every_notebook_is_listed():
  assert {path.name for path in COLABS} == set(CHECKS)


@pytest.mark.parametrize("path", COLABS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  for i, cell in enumerate(code):
    assert cell.outputs == [], f"code cell {i} has committed outputs"
    assert cell.execution_count is None, f"code cell {i} has an execution count"
  # The first code cell installs kdjax from the git URL held in one variable.
  assert "KDJAX_GIT_URL =" in code[0].source and "%pip install" in code[0].source
  # The smoke-mode switch is explained to the reader and used by the parameters cell.
  assert any("KDJAX_COLAB_SMOKE" in c.source for c in nb.cells if c.cell_type == "markdown")
  assert any('os.environ.get("KDJAX_COLAB_SMOKE")' in c.source for c in code)


async def execute(path):
  """Runs the notebook at ``path`` in its own kernel; returns the text its last cell printed."""
  nb = nbformat.read(path, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell(READ_RESULTS))
  client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
  )
  await client.async_execute(env=kernel_env())  # raises CellExecutionError if a cell raises
  return "".join(out.get("text", "") for out in nb.cells[-1].outputs if out.output_type == "stream")


# Notebooks whose smoke run takes over a minute on 2 cores run with the slow tests only.
SLOW = {"dataset_distillation.ipynb", "diffusion_distillation.ipynb", "lm_distillation.ipynb"}
FAST_COLABS = [path for path in COLABS if path.name not in SLOW]


def check_results(path, printed):
  """Raises the notebook's cell error, or checks the results its last cell printed."""
  if isinstance(printed, BaseException):
    raise printed
  assert MARKER in printed, printed
  results = json.loads(printed.split(MARKER, 1)[1])
  CHECKS[path.name](results)


@pytest.fixture(scope="module")
def executed():
  """{notebook name: printed text, or the exception its execution raised}, all run at once."""

  async def run_all():
    gate = asyncio.Semaphore(CONCURRENT)

    async def run_one(path):
      async with gate:
        return await execute(path)

    return await asyncio.gather(*(run_one(path) for path in FAST_COLABS), return_exceptions=True)

  return dict(zip((path.name for path in FAST_COLABS), asyncio.run(run_all())))


@pytest.mark.parametrize("path", FAST_COLABS, ids=lambda p: p.name)
def test_notebook_runs_and_results_hold(path, executed):
  check_results(path, executed[path.name])


@pytest.mark.slow
@pytest.mark.parametrize(
  "path", [path for path in COLABS if path.name in SLOW], ids=lambda p: p.name
)
def test_slow_notebook_runs_and_results_hold(path):
  try:
    printed = asyncio.run(execute(path))
  except Exception as error:  # noqa: BLE001 - re-raised by check_results
    printed = error
  check_results(path, printed)
