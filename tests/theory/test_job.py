"""Each theory experiment config runs end to end (runlocal) through launch.main's job table."""

import importlib
import json
import math
import os

import numpy as np
import pytest

from launch import jobs


def load_config(name, arg):
  module = importlib.import_module(f"experiments.{name}")
  assert module.sweep(None) and all("name" in p for p in module.sweep(None))
  return module.get_config(arg)


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def check_pngs(workdir, names):
  for name in names:
    path = os.path.join(workdir, name)
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert os.path.getsize(path) > 10_000, name


def test_mobahi(tmp_path):
  config = load_config("theory_mobahi", "runlocal")
  summary = jobs.runner(config)(config, str(tmp_path))
  check_pngs(tmp_path, ["mobahi_spectrum.png", "mobahi_collapse.png", "mobahi_fits.png"])
  rows = records(tmp_path)
  assert [r["step"] for r in rows] == list(range(1, config.num_steps + 1))
  collapse = summary["collapse_round"]
  assert 2 <= collapse <= config.num_steps
  # Budget rounds: c_t increases until the collapse; the fit norm shrinks.
  regs = [r["reg/budget"] for r in rows if "reg/budget" in r]
  assert len(regs) == collapse - 1 and all(b > a for a, b in zip(regs, regs[1:]))
  norms = [r["norm2/budget"] for r in rows]
  assert all(b <= a for a, b in zip(norms, norms[1:])) and norms[collapse - 1] == 0
  # Fixed reg: the number of surviving basis functions never grows.
  basis = [r["basis_above_1e-2/fixed_reg"] for r in rows]
  assert all(b <= a for a, b in zip(basis, basis[1:]))
  assert all(math.isfinite(r["test_mse/fixed_reg"]) for r in rows)
  # The numerically found collapse round lies within Mobahi et al.'s bounds, everywhere.
  assert summary["collapse_round_lower_bound"] <= collapse <= summary["collapse_round_upper_bound"]
  sweep = np.load(os.path.join(tmp_path, "arrays.npz"))["collapse_sweep"]
  found, lower, upper = sweep[:, 2], sweep[:, 3], sweep[:, 4]
  assert np.all(np.isfinite(found)) and np.all((lower <= found) & (found <= upper))
  check_pngs(tmp_path, ["mobahi_bounds.png"])
  # Re-running the same command on the workdir works and gives the same summary.
  assert jobs.runner(config)(config, str(tmp_path)) == summary


@pytest.mark.parametrize("data", ["synthetic", "digits"])
def test_borup(tmp_path, data):
  config = load_config("theory_borup", f"{data},runlocal")
  summary = jobs.runner(config)(config, str(tmp_path))
  check_pngs(tmp_path, ["borup_test_error.png"])
  rows = records(tmp_path)
  assert len(rows) == config.num_steps
  first = rows[0]
  # Round 1 is plain KRR whatever the label weight.
  values = [v for k, v in first.items() if k.startswith("test_mse/")]
  assert max(values) - min(values) < 1e-9 * max(values)
  # alpha = 1 never distils: every round equals round 1.
  assert abs(summary["final_test_mse_alpha1"] - summary["test_mse_round1"]) < 1e-9
  assert 0.0 <= summary["fixed_optimal_alpha"] <= 1.0
  alphas = [r["alpha/stepwise optimal"] for r in rows[1:]]
  assert all(0.0 <= a <= 1.0 for a in alphas)
  if data == "synthetic":  # optimal against the clean function: no worse than any weight
    best_fixed = min(v for k, v in summary.items() if k.startswith("final_test_mse_alpha"))
    assert summary["final_test_mse_fixed_optimal"] <= best_fixed * 1.05
  else:
    assert all(0.0 <= r["test_acc/alpha=0"] <= 1.0 for r in rows)


def test_gp(tmp_path):
  config = load_config("theory_gp", "runlocal")
  summary = jobs.runner(config)(config, str(tmp_path))
  check_pngs(tmp_path, ["gp_regression.png", "gp_classification.png"])
  rows = records(tmp_path)
  assert len(rows) == max(config.num_steps, config.gpc.num_steps)
  # Distribution-centric = noise / t: its posterior variances shrink, so the NLL of a
  # too-small noise grows; data-centric round 1 equals distribution-centric round 1.
  assert (
    abs(rows[0]["gpr_test_mse/distribution-centric"] - rows[0]["gpr_test_mse/data-centric alpha=0"])
    < 1e-10
  )
  for key in ("gpc_test_acc/alpha=0", "gpc_test_acc/alpha=0.5"):
    accs = [r[key] for r in rows if key in r]
    assert len(accs) == config.gpc.num_steps and all(0.5 <= a <= 1.0 for a in accs)
  assert math.isfinite(summary["gpr_final_test_mse_distribution-centric"])
  # Distribution-centric CB-GPC (covariance t K): round 1 is the data-centric round 1.
  accs = [r["gpc_test_acc/distribution-centric"] for r in rows[: config.gpc.num_steps]]
  assert accs[0] == rows[0]["gpc_test_acc/alpha=0"] and all(0.5 <= a <= 1.0 for a in accs)


def test_unknown_experiment_is_a_clear_error(tmp_path):
  config = load_config("theory_gp", "runlocal")
  config.method = "nope"
  with pytest.raises(ValueError, match="config.method must be one of"):
    jobs.runner(config)(config, str(tmp_path))


def test_linear_kd(tmp_path):
  config = load_config("theory_linear_kd", "runlocal")
  summary = jobs.runner(config)(config, str(tmp_path))
  check_pngs(tmp_path, ["linear_kd.png"])
  rows = records(tmp_path)
  assert len(rows) == config.num_steps
  distances = [r["distance/linear"] for r in rows]
  assert all(b < a for a, b in zip(distances, distances[1:]))
  # Halving the learning rate halves gradient descent's distance to the flow (order 1).
  assert 0.9 < summary["gd_error_order"] < 1.1
  # The linear student keeps its initial component orthogonal to the data span.
  assert summary["limit_orthogonal_norm_linear"] == pytest.approx(
    summary["initial_orthogonal_norm"], rel=1e-9
  )


def test_jepa(tmp_path):
  config = load_config("theory_jepa", "runlocal")
  summary = jobs.runner(config)(config, str(tmp_path))
  check_pngs(tmp_path, ["jepa_feature_curves.png", "jepa_critical_times.png"])
  rows = records(tmp_path)
  assert len(rows) == config.num_steps
  # Learning curves rise from ~0 to 1 (their limit) for every feature.
  for key in rows[-1]:
    if key != "step":
      assert rows[0][key] < 0.5 and abs(rows[-1][key] - 1) < 1e-3, key
  # MAE learns the high-covariance feature first at every depth; JEPA's order is reported.
  assert all(summary[f"first_feature_mae_L{L}"] == 0 for L in config.depths)
  assert summary["first_feature_jepa_L1"] == 0
  assert summary["gd_max_abs_error_jepa"] < 0.05 and summary["gd_max_abs_error_mae"] < 0.05
