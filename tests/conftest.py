"""Test-wide setup: 8 fake CPU devices so sharding is tested for real on one machine."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
# Tests compile hundreds of small programs: XLA's cheapest compile settings cut the default
# run's wall time by about a fifth on 2 cores. Every assertion is unchanged; subprocesses and
# notebook kernels inherit the setting. `JAX_DISABLE_MOST_OPTIMIZATIONS=0` turns it off.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
