"""Real signals: SIGTERM saves and exits cleanly; SIGKILL loses only the steps since the last
checkpoint; either way the re-run command ends like an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from kdjax.jobs import checkpoint, workdir as workdir_lib

CONFIG = "--config=experiments/kd_mnist5k.py:runlocal,student_only"
OVERRIDES = [
  "--config.num_steps=400",
  "--config.checkpoint_every=50",
  "--config.eval_every=100",
  "--config.log_every=10",
]


def _launch(workdir):
  # Two devices per process; the test run's other compile flags (conftest.py) carry over.
  xla_flags = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2")
  env = {**os.environ, "XLA_FLAGS": xla_flags}
  return subprocess.Popen(
    [sys.executable, "-m", "launch.main", CONFIG, f"--workdir={workdir}", *OVERRIDES],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _wait_for_step(workdir, step, proc, timeout=240):
  start = time.time()
  while time.time() - start < timeout:
    records = workdir_lib.read_metrics(workdir) if os.path.exists(workdir) else []
    if records and records[-1]["step"] >= step:
      return
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    time.sleep(0.05)
  raise TimeoutError(f"no step {step} in {workdir}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_and_restarted_run_equals_uninterrupted_run(tmp_path, sig):
  reference = str(tmp_path / "reference")
  out = _launch(reference).communicate(timeout=600)[0]
  assert "step 400/400" in out, out[-2000:]

  workdir = str(tmp_path / "killed")
  proc = _launch(workdir)
  _wait_for_step(workdir, 120, proc)
  proc.send_signal(sig)
  out = proc.communicate(timeout=120)[0]
  if sig == signal.SIGTERM:
    assert proc.returncode == 0, out[-2000:]
    assert "SIGTERM: saved the checkpoint" in out
  else:
    assert proc.returncode == -signal.SIGKILL
  saved = checkpoint.load_arrays(os.path.join(workdir, "checkpoints"))[0]
  assert 100 <= saved < 400

  out = _launch(workdir).communicate(timeout=600)[0]
  assert f"resumed from the checkpoint at step {saved}" in out, out[-2000:]
  assert workdir_lib.read_metrics(workdir) == workdir_lib.read_metrics(reference)
  (a_step, a), (b_step, b) = (
    checkpoint.load_arrays(os.path.join(d, "checkpoints")) for d in (workdir, reference)
  )
  assert a_step == b_step == 400
  jax.tree.map(np.testing.assert_array_equal, a, b)
