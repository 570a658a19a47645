"""Two processes on 127.0.0.1 (jax.distributed + gloo) solve KRR by CG with K's rows split."""

import os
import sys

import jax
import numpy as np

from kdjax import krr
from tests._helpers import free_port, run_processes

WORKER = os.path.join(os.path.dirname(__file__), "cg_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_two_processes_hold_half_the_rows_each_and_match_cholesky(tmp_path):
  port = free_port()
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  outs = [str(tmp_path / f"p{i}.npz") for i in range(2)]
  run_processes([[sys.executable, WORKER, str(port), str(i), outs[i]] for i in range(2)], env=env)
  results = [dict(np.load(o)) for o in outs]
  for r in results:
    assert int(r["processes"]) == 2 and int(r["devices"]) == 4
    assert int(r["global_rows"]) == 404  # 403 padded to a multiple of 4 devices
    assert int(r["local_rows"]) == 202  # each process holds only its half of the rows
  np.testing.assert_array_equal(results[0]["alpha"], results[1]["alpha"])
  with jax.enable_x64(True):
    want = krr.solve(results[0]["k"], results[0]["y"], reg=1e-3)
  np.testing.assert_allclose(
    results[0]["alpha"], want, rtol=1e-7, atol=1e-9 * float(np.max(np.abs(want)))
  )
