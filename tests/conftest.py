"""Test-wide setup: 8 fake CPU devices so sharding is tested for real on one machine."""

import os

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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
