"""KRR solve time and peak memory against n: one Cholesky against Nyström-preconditioned CG.

  .venv/bin/python -m benchmarks.krr_scale --sizes=1000,2000,5000 --memory_budget_gb=0

Each (method, n) runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is
its own. The kernel is the NTK of a 2-layer ReLU network (`kdjax.kernels.stax`) on synthetic
Gaussian inputs (`--dim`), 10 target columns. `K` is built row block by row block into one
NumPy array before the timed solve (not timed), except for `cg_blocks`, which never stores
`K` and recomputes it in every CG product (its time includes the kernel evaluations).

Methods: `cholesky` (`kdjax.krr.solve`), `cg` (`kdjax.krr.solve_cg` on the dense `K`, rows
over the mesh), `cg_blocks` (`solve_cg` on a `kdjax.krr.BlockGram`).

`--memory_budget_gb` simulates a device budget: a method whose working set (Cholesky:
`K` + its factor = 2 n^2 words; CG: `K` = n^2 words; cg_blocks: `batch_size * n` words,
plus the rank-r preconditioner `n r` for both CG) exceeds it is reported as "over budget"
instead of run. Every solve is checked against the target residual.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["1000", "2000", "4000"], "Training set sizes n.")
_METHODS = flags.DEFINE_list("methods", ["cholesky", "cg", "cg_blocks"], "Solvers to time.")
_DIM = flags.DEFINE_integer("dim", 32, "Input dimension of the synthetic data.")
_REG = flags.DEFINE_float("reg", 1e-4, "Relative ridge: lambda = reg tr(K) / n.")
_RANK = flags.DEFINE_integer("rank", 256, "Nyström preconditioner rank.")
_TOL = flags.DEFINE_float("tol", 1e-5, "CG relative residual tolerance.")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Rows per block (K build and cg_blocks).")
_BUDGET = flags.DEFINE_float(
  "memory_budget_gb", 0.0, "Simulated device memory budget in GB (0: none)."
)
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed repeats (median) after one warm-up.")
_MAX_BLOCKS_N = flags.DEFINE_integer(
  "max_blocks_n", 4000, "Largest n for cg_blocks (it recomputes K per step)."
)
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'method,n' to run in this process.")

WORD = 4  # float32 bytes


def working_set_gb(method: str, n: int) -> float:
  if method == "cholesky":
    words = 2 * n * n
  elif method == "cg":
    words = n * n + 3 * n * _RANK.value
  else:
    words = _BATCH.value * n * 8 + 3 * n * _RANK.value
  return words * WORD / 1e9


def run_worker(method: str, n: int) -> dict:
  """Times one solve in this process; returns the row of the table."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from benchmarks import common  # noqa: PLC0415
  from kdjax import krr  # noqa: PLC0415
  from kdjax.kernels import stax  # noqa: PLC0415

  kernel_fn = jax.jit(
    stax.serial(
      stax.Dense(512, 1.5, 0.1),
      stax.Relu(),
      stax.Dense(512, 1.5, 0.1),
      stax.Relu(),
      stax.Dense(1, 1.5, 0.1),
    )[2],
    static_argnames="get",
  )
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(n, _DIM.value)) / np.sqrt(_DIM.value)).astype(np.float32)
  y = np.tanh(3 * x[:, :10]).astype(np.float32)
  b = _BATCH.value
  if method == "cg_blocks":
    gram = krr.BlockGram(lambda a, c, get: kernel_fn(a, c, get=get), jnp.asarray(x), b, "ntk")
    solve = lambda: krr.solve_cg(
      gram, y, reg=_REG.value, tol=_TOL.value, rank=_RANK.value, return_info=True
    )
    check = None
  else:
    k = np.empty((n, n), np.float32)
    for lo in range(0, n, b):
      k[lo : lo + b] = np.asarray(kernel_fn(x[lo : lo + b], x, get="ntk"))
    check = k
    if method == "cholesky":
      solve = lambda: (krr.solve(k, y, reg=_REG.value), None)
    else:
      solve = lambda: krr.solve_cg(
        k, y, reg=_REG.value, tol=_TOL.value, rank=_RANK.value, return_info=True
      )
  seconds = common.time_call(lambda: solve()[0], repeats=_REPEATS.value)
  alpha, info = solve()
  row = {
    "method": method,
    "n": n,
    "seconds": seconds,
    "iterations": None if info is None else int(info.iterations),
  }
  if check is not None:
    lam = _REG.value * float(np.trace(check, dtype=np.float64)) / n
    residual = check @ np.asarray(alpha) + lam * np.asarray(alpha) - y
    row["relative_residual"] = float(np.linalg.norm(residual) / np.linalg.norm(y))
  row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
  return row


def main(argv):
  del argv
  if _WORKER.value:
    method, n = _WORKER.value.split(",")
    print(json.dumps(run_worker(method, int(n))))
    return
  from benchmarks import common  # noqa: PLC0415

  print(common.describe_devices())
  print(
    f"reg={_REG.value}, rank={_RANK.value}, tol={_TOL.value}, dim={_DIM.value}, "
    f"float32, budget={_BUDGET.value or 'none'} GB"
  )
  print(
    "| n | method | time (s) | CG iterations | rel. residual | peak RSS (GB) | working set (GB) |"
  )
  print("|---|---|---|---|---|---|---|")
  times = {}
  for n in (int(s) for s in _SIZES.value):
    for method in _METHODS.value:
      need = working_set_gb(method, n)
      if method == "cg_blocks" and n > _MAX_BLOCKS_N.value:
        continue
      if _BUDGET.value and need > _BUDGET.value:
        print(f"| {n} | {method} | over budget | | | | {need:.2f} > {_BUDGET.value} |")
        continue
      args = [sys.executable, "-m", "benchmarks.krr_scale", f"--worker={method},{n}"]
      args += [
        f"--{f}={flags.FLAGS[f].value}"
        for f in ("dim", "reg", "rank", "tol", "batch_size", "repeats")
      ]
      out = subprocess.run(args, capture_output=True, text=True, check=False)
      if out.returncode:
        print(f"| {n} | {method} | failed: {out.stderr.strip().splitlines()[-1]} |")
        continue
      row = json.loads(out.stdout.strip().splitlines()[-1])
      times[(method, n)] = row["seconds"]
      res = row.get("relative_residual")
      print(
        f"| {n} | {method} | {row['seconds']:.2f} | {row['iterations'] or ''} | "
        f"{'' if res is None else f'{res:.1e}'} | {row['peak_rss_gb']:.2f} | {need:.2f} |",
        flush=True,
      )
  for (method, n), t in sorted(times.items(), key=lambda kv: kv[0][1]):
    if method == "cg" and ("cholesky", n) in times:
      print(f"n={n}: CG / Cholesky time = {t / times[('cholesky', n)]:.2f}")


if __name__ == "__main__":
  app.run(main)
