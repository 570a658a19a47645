"""The parts every benchmark shares: one timing helper and one flags library.

Conventions for a script ``benchmarks/NAME.py``:

* It runs as a module from the repository root, on whatever devices JAX finds::

    .venv/bin/python -m benchmarks.NAME --flag=value ...

* Sizes and options are absl flags (``from absl import app, flags``; ``flags.DEFINE_*`` at
  module level, ``app.run(main)`` at the bottom), with defaults that run on a laptop CPU in
  seconds to minutes; larger accelerator sizes are passed as flags, never hard-coded per device.
* Wall times come from :func:`time_call` (median seconds of a call, compilation excluded),
  and the output starts with :func:`describe_devices` so a pasted table says where it ran.

Example::

  from absl import app, flags
  from benchmarks import common

  _N = flags.DEFINE_integer("n", 1024, "Rows of the matrix.")

  def main(argv):
    del argv
    x = jnp.ones((_N.value, _N.value))
    print(common.describe_devices())
    print(f"matmul: {1e3 * common.time_call(jax.jit(jnp.matmul), x, x):.2f} ms")

  if __name__ == "__main__":
    app.run(main)
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def time_call(
  fn: Callable[..., Any], *args: Any, warmup: int = 1, repeats: int = 5, **kwargs: Any
) -> float:
  """Median wall-clock seconds of one call ``fn(*args, **kwargs)``.

  The ``warmup`` calls come first and are not timed (they include compilation when ``fn``
  is jitted). Every call is followed by ``jax.block_until_ready`` on its result, so the
  time covers the device work and not only the asynchronous dispatch. The median of
  ``repeats`` timed calls is robust to a single slow call on a busy machine.

  To time a step that carries state (e.g. a donated train state), pass a closure that
  runs ``k`` steps and returns the last output, and divide the result by ``k``.

  Args:
    fn: the function to time (typically already ``jax.jit``-ed).
    *args: positional arguments passed to every call.
    warmup: untimed calls before the timed ones (>= 0).
    repeats: timed calls (>= 1).
    **kwargs: keyword arguments passed to every call.

  Returns:
    The median of the ``repeats`` call times, in seconds.

  Raises:
    ValueError: if ``warmup`` < 0 or ``repeats`` < 1.
  """
  if warmup < 0:
    raise ValueError(f"warmup must be >= 0, got {warmup}")
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args, **kwargs))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def describe_devices() -> str:
  """One line naming the JAX version, backend, device count and kind, and CPU cores."""
  devices = jax.devices()
  return (
    f"jax {jax.__version__}, backend {jax.default_backend()}, {len(devices)} x "
    f"{devices[0].device_kind}, {os.cpu_count()} CPU core(s)"
  )
