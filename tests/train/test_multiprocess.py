"""Two processes on 127.0.0.1 (jax.distributed + gloo CPU collectives) train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from kdjax.jobs import workdir as workdir_lib
from kdjax.train import train_job

from .test_train_job import _config, _final_state  # noqa: F401  (importlib mode: same package dir)

CONFIG = "experiments/kd_mnist5k.py:runlocal,student_only"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_one_process(tmp_path):
  port = _free_port()
  # Two devices per process; the test run's other compile flags (conftest.py) carry over.
  xla_flags = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2")
  env = {**os.environ, "XLA_FLAGS": xla_flags}
  workdir = str(tmp_path / "two")
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "launch.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=240)[0])
    finally:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "step 20/20" in outputs[0] and "step 20/20" not in outputs[1]  # process 0 reports

  # The same global batch (32) on one process with this test's 8 devices.
  path, _, arg = CONFIG.partition(":")
  train_job.run(_config(path, arg), str(tmp_path / "one"))
  two, one = (workdir_lib.read_metrics(str(tmp_path / d)) for d in ("two", "one"))
  assert [r["step"] for r in two] == [r["step"] for r in one] == [5, 10, 15, 20]
  for a, b in zip(two, one):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  (step_two, state_two), (step_one, state_one) = (
    _final_state(workdir),
    _final_state(str(tmp_path / "one")),
  )
  assert step_two == step_one == 20
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), state_two, state_one
  )
