"""One of the processes of tests/krr/test_multiprocess.py (run as a script, not collected).

Usage: python tests/krr/cg_worker.py PORT PROCESS_ID OUT.npz
"""

import os
import sys

# Two devices per process; the test run's other compile flags (conftest.py) carry over.
os.environ["XLA_FLAGS"] = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_x64", True)


def main(port, process_id, out):
  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id
  )
  import numpy as np  # noqa: PLC0415

  from kdjax import krr  # noqa: PLC0415
  from kdjax.kernels import stax  # noqa: PLC0415

  rng = np.random.default_rng(0)
  x = rng.normal(size=(403, 8))
  y = rng.normal(size=(403, 2))
  kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))[2]
  k = np.asarray(kernel_fn(x, None, "ntk"))
  gram = krr.row_sharded(k)  # what solve_cg places: this process's rows only
  local_rows = sum(s.data.shape[0] for s in gram.addressable_shards)
  alpha, info = krr.solve_cg(k, y, reg=1e-3, tol=1e-10, rank=64, return_info=True)
  np.savez(
    out,
    alpha=np.asarray(alpha),
    k=k,
    y=y,
    local_rows=local_rows,
    global_rows=gram.shape[0],
    processes=jax.process_count(),
    devices=len(jax.devices()),
    iterations=int(info.iterations),
  )


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
