"""Test-wide setup: 8 fake CPU devices so sharding is tested for real on one machine; and the
fixtures that several test files share."""

import atexit
import os
import shutil
import tempfile

import pytest

# `--xla_cpu_use_fusion_emitters=false`: XLA CPU's classic LLVM emitters compile our small
# programs about twice as fast as the default MLIR fusion emitters (tests/models +
# tests/distill/test_evaluation: 83.5 s -> 41.6 s of CPU); results agree to float rounding.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false"
).strip()
# Tests compile hundreds of small programs: XLA's cheapest compile settings cut the default
# run's wall time by about a fifth on 2 cores. Every assertion is unchanged; subprocesses and
# notebook kernels inherit the setting. `JAX_DISABLE_MOST_OPTIMIZATIONS=0` turns it off.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Many tests compile the same programs anew (a fresh `jax.jit` per test): JAX's persistent
# compilation cache, in a directory made for this run and removed after it, serves the repeats
# (tests/losses + models + train: 158 -> 144 s of CPU). The first process makes it; the
# pytest-xdist workers and the tests' subprocesses inherit it through the environment.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _jit_cache = tempfile.mkdtemp(prefix="kdjax-tests-jit-cache-")
  atexit.register(shutil.rmtree, _jit_cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _jit_cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def digits_regression():
  """scikit-learn's digits train split: standardised images ``[n, 8, 8, 1]``, one-hot
  regression targets ``[n, 10]`` (``kdjax.data.regression_targets``) and the labels."""
  from kdjax import data  # here, so that collecting the tests imports no kdjax

  ds = data.load("digits")
  x = data.standardize_images(ds.x_train)
  return x, data.regression_targets(ds.y_train, 10), ds.y_train
