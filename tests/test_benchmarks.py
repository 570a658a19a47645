"""benchmarks/: the shared timing helper, and every script runs with tiny sizes (slow)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_time_call_is_the_median_of_the_timed_calls_after_warmup(monkeypatch):
  ticks = iter([10.0, 11.0, 20.0, 23.0, 30.0, 32.0])  # timed calls take 1 s, 3 s, 2 s
  monkeypatch.setattr(common.time, "perf_counter", lambda: next(ticks))
  blocked, calls = [], []
  monkeypatch.setattr(common.jax, "block_until_ready", blocked.append)

  def fn(x, *, scale):
    calls.append((x, scale))
    return len(calls)

  assert common.time_call(fn, 7, scale=2, warmup=2, repeats=3) == 2.0
  assert calls == [(7, 2)] * 5
  assert blocked == [1, 2, 3, 4, 5]  # every result, warm-up included, is waited for


def test_time_call_measures_real_work():
  seconds = common.time_call(lambda: sum(range(200_000)), warmup=0, repeats=3)
  assert 0 < seconds < 5


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"repeats": 0}])
def test_time_call_rejects_bad_counts(kwargs):
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    common.time_call(print, **kwargs)


def test_describe_devices_names_backend_and_devices():
  line = common.describe_devices()
  assert "backend cpu" in line and " x " in line, line


# Each script with sizes small enough for seconds of work, and a line of its final table:
# they must keep running after refactors of the modules and configs they import.
SMOKE = {
  "chunked_kd": (
    [
      "--n=64",
      "--hidden=16",
      "--vocab=256",
      "--chunk_sizes=32",
      "--time_n=32",
      "--time_hidden=16",
      "--time_vocab=128",
      "--time_chunk_size=32",
      "--repeats=1",
    ],
    "chunked_fused",
  ),
  "logit_losses": (["--batch=8", "--vocab=32", "--repeats=1"], "| float32 loss+grad |"),
  "hf_load": (["--size_gb=0.005", "--vocab=1000", "--width=128"], "| from_pretrained |"),
  "kernels": (["--fc_n=16", "--flatten_n=2", "--gap_n=2", "--repeats=1"], "| gap |"),
  "train_step": (
    ["--batch_size=16", "--student_width=8", "--teacher_width=8", "--iters=1", "--repeats=1"],
    "KD / parts",
  ),
  "checkpoint_hash": (["--megabytes=4", "--repeats=1"], "| xxh3_64 |"),
  "kip_table": (["--per_class=1", "--steps=2", "--seeds=1"], "| all 4,000 |"),
  "kd_mnist5k": (["--seeds=1", "--arg=runlocal"], "| mean ± std |"),
  "lm_kd": (
    [
      "--notable",
      "--batch=2",
      "--seq_len=16",
      "--vocab=64",
      "--chunk_size=8",
      "--new_tokens=4",
      "--prompt_len=2",
      "--repeats=1",
    ],
    "speed-up",
  ),
  "krr_scale": (
    ["--sizes=64", "--dim=4", "--rank=8", "--batch_size=32", "--repeats=1"],
    "cg_blocks",
  ),
  "distill_table": (
    [
      "--datasets=digits",
      "--per_class=1",
      "--methods=rfad,dm,kip,closed_form",
      "--num_steps=2",
      # rfad.* keys once broke the dm rows of a mixed table: now only rfad's rows get them.
      "--overrides=evaluation.num_steps=2,evaluation.seeds=1,rfad.num_models=1,dm:num_steps=3",
      "--kip_overrides=kip.target_batch_size=80",
      "--seeds=2",
    ],
    "| digits | 1 | dm (3 steps, 2 seeds) |",
  ),
}


def test_distill_table_overrides_apply_to_their_methods_only():
  from benchmarks import distill_table as t

  overrides = t.parse_overrides(
    ["rfad.num_models=3", "dm:num_steps=7", "evaluation.seeds=1", "dc.inner_steps=4"],
    ["kip.target_batch_size=80"],
  )
  assert overrides[1] == ("dm", "num_steps", "7") and overrides[4][0] == "kip"
  used = {}
  rfad, dm, dc, kip = (
    t.config_for("digits", 10, m, overrides=overrides, used=used.setdefault(m, set()))
    for m in ("rfad", "dm", "dc", "kip")
  )
  assert used == {"rfad": {0, 2}, "dm": {1, 2}, "dc": {2, 3}, "kip": {4}}
  assert rfad.rfad.num_models == 3 and rfad.num_steps == 600 and rfad.evaluation.seeds == 1
  assert dm.num_steps == 7 and dm.evaluation.seeds == 1 and "rfad" not in dm
  assert dc.dc.inner_steps == 4 and dc.num_steps == 200
  assert kip.kip.target_batch_size == 80 and kip.evaluation.seeds == 1  # kip's own block
  field = t.config_for("digits", 1, "dm", protocol="field")
  assert field.evaluation.width == 128 and field.evaluation.epochs == 1000
  with pytest.raises(ValueError, match="has no key rfad.widht"):
    t.config_for("digits", 1, "rfad", overrides=t.parse_overrides(["rfad.widht=3"]))
  for bad in ("rfadd:num_steps=3", "num_steps"):
    with pytest.raises(ValueError, match=r"expected \[METHOD:\]key=value"):
      t.parse_overrides([bad])


def test_distill_table_seed_rows_are_the_mean_and_std_over_seeds():
  from benchmarks import distill_table as t

  runs = [{"acc": a, "acc_std": 0.5} for a in (0.90, 0.94, 0.95)]
  got = t.over_seeds(runs, "acc")
  assert got["mean"] == pytest.approx(0.93) and got["std"] == pytest.approx(np.sqrt(0.0014 / 3))
  assert t.over_seeds(runs[:1], "acc") == {"mean": 0.90, "std": 0.5}  # the networks' std


def test_every_benchmark_has_a_smoke_run():
  scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__", "common"}
  assert scripts == set(SMOKE)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_runs_with_tiny_sizes(name, tmp_path):
  args, expected = SMOKE[name]
  args = args + ([f"--root={tmp_path}"] if name == "kd_mnist5k" else [])
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
    [sys.executable, "-m", f"benchmarks.{name}", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert expected in result.stdout, result.stdout
