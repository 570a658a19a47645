"""Speed of kdjax's infinite-width kernels, optionally next to neural-tangents.

Three float32 measurements, on whatever device JAX uses by default:

  fc3      FC3-ReLU NTK (3 x [Dense 1024, Relu], Dense) on two batches of `--fc_n`
           MNIST-sized (784-d) inputs, as a ratio to one `x1 @ x2.T` of the same
           inputs (the physical floor: the kernel needs that product).
  flatten  ConvNet NTK, 3 x [Conv 64 3x3 SAME, Relu], Flatten, Dense, on
           `--flatten_n x --flatten_n` 32x32x3 images: kernel entries per second.
  gap      the same ConvNet with a GlobalAvgPool head on 16x16x3 images
           (`--gap_n x --gap_n`): entries per second. Its kernel carries the
           pixel-by-pixel covariance [n1, n2, 16, 16, 16, 16].

Every timing is the median of `--repeats` calls of a jitted function after a warm-up
call (compilation excluded; `benchmarks.common.time_call`). `--peer_python=PY` reruns
the same specs with neural-tangents 0.6.5 in the interpreter PY (a separate venv with
jax==0.4.23 and neural-tangents==0.6.5; kdjax never imports it) and prints both side by
side; without it, the neural-tangents column stays empty.

  .venv/bin/python -m benchmarks.kernels
  .venv/bin/python -m benchmarks.kernels --peer_python=PATH/TO/VENV/bin/python
  .venv/bin/python -m benchmarks.kernels --only=gap --gap_n=32
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common

_ONLY = flags.DEFINE_list("only", ["fc3", "flatten", "gap"], "Measurements to run.")
_FC_N = flags.DEFINE_integer("fc_n", 4096, "Inputs per batch of the fc3 kernel.")
_FLATTEN_N = flags.DEFINE_integer("flatten_n", 128, "Images per batch of the flatten kernel.")
_GAP_N = flags.DEFINE_integer("gap_n", 32, "Images per batch of the gap kernel.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (the median is printed).")
_PEER_PYTHON = flags.DEFINE_string(
  "peer_python", "", "Python of a venv with neural-tangents 0.6.5; empty: no peer column."
)
_PEER_MODE = flags.DEFINE_bool(
  "peer_mode", False, "Internal: measure with neural_tangents.stax, print JSON."
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

W_STD, B_STD = 2**0.5, 0.1


def conv_net(stax, head):
  layers = []
  for _ in range(3):
    layers += [stax.Conv(64, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), stax.Relu()]
  head_layer = stax.Flatten() if head == "flatten" else stax.GlobalAvgPool()
  return stax.serial(*layers, head_layer, stax.Dense(10, W_std=W_STD, b_std=B_STD))


def fc3_net(stax):
  layers = []
  for _ in range(3):
    layers += [stax.Dense(1024, W_std=W_STD, b_std=B_STD), stax.Relu()]
  return stax.serial(*layers, stax.Dense(10, W_std=W_STD, b_std=B_STD))


def measure(stax, which, sizes, repeats):
  """Runs the requested measurements with a `stax` module; returns a dict."""
  rng = np.random.default_rng(0)
  results = {}
  if "fc3" in which:
    n = sizes["fc_n"]
    x1 = jnp.asarray(rng.normal(size=(n, 784)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(n, 784)), jnp.float32)
    kernel_fn = jax.jit(fc3_net(stax)[2], static_argnames="get")
    matmul = jax.jit(lambda a, b: a @ b.T)
    t_kernel = common.time_call(kernel_fn, x1, x2, get="ntk", repeats=repeats)
    t_matmul = common.time_call(matmul, x1, x2, repeats=repeats)
    results["fc3"] = {
      "n": n,
      "kernel_s": t_kernel,
      "matmul_s": t_matmul,
      "ratio": t_kernel / t_matmul,
    }
  for head, side in (("flatten", 32), ("gap", 16)):
    if head not in which:
      continue
    n = sizes[f"{head}_n"]
    x1 = jnp.asarray(rng.normal(size=(n, side, side, 3)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(n, side, side, 3)), jnp.float32)
    kernel_fn = jax.jit(conv_net(stax, head)[2], static_argnames="get")
    t = common.time_call(kernel_fn, x1, x2, get="ntk", repeats=repeats)
    results[head] = {"n": n, "seconds": t, "entries_per_s": n * n / t}
  return results


def run_peer(python, which, sizes, repeats):
  """Runs `measure` with neural_tangents.stax in the interpreter `python`; None on failure."""
  cmd = [
    python,
    "-m",
    "benchmarks.kernels",
    "--peer_mode",
    f"--repeats={repeats}",
    "--only=" + ",".join(which),
  ]
  cmd += [f"--{key}={value}" for key, value in sizes.items()]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
  if out.returncode != 0:
    print(f"peer failed:\n{out.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  which = _ONLY.value
  sizes = {"fc_n": _FC_N.value, "flatten_n": _FLATTEN_N.value, "gap_n": _GAP_N.value}
  repeats = _REPEATS.value

  if _PEER_MODE.value:
    from neural_tangents import stax as nt_stax  # only in the peer's own venv

    print(json.dumps(measure(nt_stax, which, sizes, repeats)))
    return

  from kdjax.kernels import stax as kd_stax  # the peer's old jax cannot import kdjax

  print(f"{common.describe_devices()}; float32; median of {repeats}")
  ours = measure(kd_stax, which, sizes, repeats)
  peer = run_peer(_PEER_PYTHON.value, which, sizes, repeats) if _PEER_PYTHON.value else None

  def row(name, value, fmt):
    theirs = "" if peer is None or name not in peer else fmt(peer[name])
    return f"| {name} | {fmt(value)} | {theirs} |"

  print("| benchmark | kdjax | neural-tangents 0.6.5 |")
  print("|---|---|---|")
  if "fc3" in ours:
    r = ours["fc3"]
    print(
      row(
        "fc3",
        r,
        lambda v: (
          f"{v['ratio']:.2f}x one matmul "
          f"({v['kernel_s'] * 1e3:.0f} ms vs {v['matmul_s'] * 1e3:.0f} ms, "
          f"n={v['n']})"
        ),
      )
    )
  for head in ("flatten", "gap"):
    if head in ours:
      print(
        row(
          head,
          ours[head],
          lambda v: (
            f"{v['entries_per_s']:,.0f} entries/s ({v['n']}x{v['n']} in {v['seconds']:.2f} s)"
          ),
        )
      )


if __name__ == "__main__":
  app.run(main)
