"""The TPU VM and GPU launch scripts, exercised with --dry-run (nothing is executed)."""

import subprocess

CONFIG = "launch/jobs.py"  # Any existing file: the scripts only check that it exists.


def _dry_run(script, *args):
  result = subprocess.run(["bash", f"launch/{script}", *args], capture_output=True, text=True)
  return result.returncode, result.stdout.splitlines(), result.stderr


def test_tpu_vm_dry_run_prints_the_whole_gcloud_sequence():
  code, lines, _ = _dry_run(
    "tpu_vm.sh",
    "--name",
    "kd1",
    "--zone",
    "us-central2-b",
    "--accelerator",
    "v4-16",
    "--spot",
    "--dry-run",
    "--",
    f"--config={CONFIG}:runlocal",
    "--workdir=runs/kd",
  )
  assert code == 0
  assert lines[0].startswith("+ gcloud compute tpus tpu-vm create kd1 --zone=us-central2-b")
  assert "--accelerator-type=v4-16" in lines[0] and lines[0].endswith("--spot")
  assert any("archive --format=tar.gz" in l and l.endswith("HEAD") for l in lines)
  run = [l for l in lines if "launch.main" in l]
  assert len(run) == 1 and "--worker=all" in run[0] and "--distributed" in run[0]
  assert f"--config={CONFIG}:runlocal" in run[0]
  assert any(
    "scp --recurse --worker=0" in l and l.endswith("kd1:kdjax/runs/kd runs/") for l in lines
  )
  assert lines[-1] == "+ gcloud compute tpus tpu-vm delete kd1 --zone=us-central2-b --quiet"


def test_tpu_vm_keep_skips_delete_and_missing_options_fail():
  code, lines, _ = _dry_run(
    "tpu_vm.sh",
    "--name",
    "a",
    "--zone",
    "z",
    "--accelerator",
    "v5e-8",
    "--keep",
    "--dry-run",
    "--",
    f"--config={CONFIG}",
    "--workdir=w",
  )
  assert code == 0 and not any(" delete " in l for l in lines)
  code, _, err = _dry_run("tpu_vm.sh", "--zone", "z", "--dry-run")
  assert code == 2 and "missing required option(s): --name --accelerator" in err


def test_gpu_multi_host_dry_run_assigns_process_ids():
  code, lines, _ = _dry_run(
    "gpu.sh",
    "--hosts",
    "me@g1,me@g2",
    "--port",
    "9999",
    "--dry-run",
    "--",
    f"--config={CONFIG}",
    "--workdir=runs/kd",
  )
  assert code == 0
  runs = [l for l in lines if "launch.main" in l]
  assert len(runs) == 2
  for i, line in enumerate(runs):
    assert "--coordinator_address=g1:9999" in line and "--num_processes=2" in line
    assert f"--process_id={i}" in line and line.startswith(f"+ ssh me@g{i + 1} ")
  assert lines[-1] == "+ rsync -a me@g1:kdjax/runs/kd runs/"


def test_scripts_refuse_a_missing_config_file():
  for script, extra in (
    ("gpu.sh", ["--hosts", "h"]),
    ("tpu_vm.sh", ["--name", "a", "--zone", "z", "--accelerator", "v4-8"]),
  ):
    code, lines, err = _dry_run(
      script, *extra, "--dry-run", "--", "--config=experiments/nope.py", "--workdir=w"
    )
    assert code == 2 and "experiments/nope.py does not exist" in err and not lines
