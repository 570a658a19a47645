"""The DistillSpec job (kdjax.train.distillspec): config errors (fast); the runlocal
experiment through the launcher is slow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import distillspec_pystdlib
from kdjax.train import distillspec, lm_job


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("drafts", {"fkl": {"mode": "token_kd"}}, "must include a 'ce' draft"),
    ("drafts", {"ce": {"mode": "ce"}, "x": {"mode": "dpo"}}, "drafts.x.mode must be one of"),
    ("speculative.draft_tokens", "0,2", "draft_tokens must list ints >= 1"),
    ("speculative.acceptance_draft_tokens", 0, "acceptance_draft_tokens must be an integer >= 1"),
    ("speculative.timing_prompts", 99, "timing_prompts=99 exceeds num_prompts"),
    ("speculative.max_new_tokens", 40, "exceeds config.teacher.model.max_len=32"),
  ],
)
def test_bad_distillspec_configs_raise_value_errors(tmp_path, key, value, message):
  c = distillspec_pystdlib.get_config("runlocal")
  first, _, last = key.rpartition(".")
  (c[first] if first else c)[last] = value
  with pytest.raises(ValueError, match=message):
    distillspec.run(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_distillspec_runlocal_through_the_launcher(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.main",
      "--config=experiments/distillspec_pystdlib.py:runlocal,drafts=ce+rkl+adaspec",
      f"--workdir={tmp_path}",
    ],
    check=True,
    cwd=root,
  )
  with open(tmp_path / "summary.json") as f:
    summary = lm_job.by_model(json.load(f))
  assert set(summary) == {"ce", "rkl", "adaspec", "target", "timing"}
  for name in ("ce", "rkl", "adaspec"):
    for key in ("acceptance_greedy", "acceptance_sampled", "speedup_greedy", "speedup_sampled"):
      assert np.isfinite(summary[name][key]) and summary[name][key] > 0
  assert 0 < summary["timing"]["draft_target_cost_ratio"]
