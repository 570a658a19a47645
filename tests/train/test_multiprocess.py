"""Two processes on 127.0.0.1 (jax.distributed + gloo CPU collectives) train like one process."""

import os
import sys

import jax
import numpy as np
import pytest

from kdjax.jobs import workdir as workdir_lib
from kdjax.train import train_job
from tests._helpers import free_port, run_processes

from .test_train_job import _config, _final_state  # noqa: F401  (importlib mode: same package dir)

CONFIG = "experiments/kd_mnist5k.py:runlocal,student_only"


@pytest.mark.slow
def test_two_processes_agree_with_one_process(tmp_path):
  port = free_port()
  # Two devices per process; the test run's other compile flags (conftest.py) carry over.
  xla_flags = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2")
  env = {**os.environ, "XLA_FLAGS": xla_flags}
  workdir = str(tmp_path / "two")
  outputs = run_processes(
    [
      [
        sys.executable,
        "-m",
        "launch.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ]
      for i in range(2)
    ],
    env=env,
  )
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
