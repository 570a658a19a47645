"""Helpers shared by several test files: float64 NumPy references, error measures, data
and subprocess plumbing. Pure NumPy/stdlib (references must not import kdjax).

Import as ``from tests._helpers import ...`` (pytest runs with ``pythonpath = ["."]``).
"""

from __future__ import annotations

import os
import socket
import subprocess

import numpy as np

# ----------------------------------------------------------------------------------------
# Float64 references for the logit losses (written from the formulas, not from kdjax).


def np_softmax(x, temperature=1.0, axis=-1):
  """softmax(x / T) along ``axis`` in float64."""
  z = np.asarray(x, np.float64) / temperature
  z = z - np.max(z, axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, temperature=1.0, axis=-1):
  """log softmax(x / T) along ``axis`` in float64 (``-inf`` for zero probabilities)."""
  z = np.asarray(x, np.float64) / temperature
  z = z - np.max(z, axis=axis, keepdims=True)
  with np.errstate(divide="ignore"):
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_kl_log(log_p, log_q, axis=-1):
  """sum p (log p - log q) from log-probabilities, with 0 log 0 = 0."""
  with np.errstate(invalid="ignore"):
    terms = np.where(np.isneginf(log_p), 0.0, np.exp(log_p) * (log_p - log_q))
  return terms.sum(axis=axis)


def np_kl(p, q, axis=-1):
  """sum p log(p / q) with 0 log 0 = 0."""
  with np.errstate(divide="ignore"):
    return np_kl_log(np.log(p), np.log(q), axis)


def random_logits(seed, shape, scale=2.0):
  """Two independent ``scale * N(0, 1)`` arrays (student and teacher logits)."""
  rng = np.random.default_rng(seed)
  return scale * rng.standard_normal(shape), scale * rng.standard_normal(shape)


# ----------------------------------------------------------------------------------------
# Error measures.


def relative_error(got, want) -> float:
  """``max |got - want| / max |want|`` (the scale of ``want``, not elementwise)."""
  want = np.asarray(want)
  scale = max(float(np.max(np.abs(want))), 1e-300)
  return float(np.max(np.abs(np.asarray(got) - want)) / scale)


# ----------------------------------------------------------------------------------------
# Several processes (jax.distributed on one machine).


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(commands, *, env=None, timeout=240) -> list[str]:
  """Starts every command at once, waits for all, returns their outputs (stdout + stderr).

  A process still running after ``timeout`` seconds is killed. Asserts that each exited
  with status 0 (the message is the end of its output).
  """
  procs = [
    subprocess.Popen(
      command,
      env=env if env is not None else dict(os.environ),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for command in commands
  ]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=timeout)[0])
    finally:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs
