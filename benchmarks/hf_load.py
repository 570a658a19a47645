"""Load time and peak host memory of `kdjax.models.hf.from_pretrained` on a random Llama checkpoint.

A random Llama-style checkpoint of about `--size_gb` (vocab 32000, hidden 1024, 16 query /
4 key-value heads, SwiGLU 2816, untied head; as many layers as the size allows) is written
tensor by tensor into a temporary directory (split into `--shard_gb` files with an index),
then a fresh subprocess imports jax, records its resident set (VmRSS), calls
`from_pretrained` (and waits for every array) and reads its peak resident set (VmHWM, i.e.
`ru_maxrss`). The figure is

  peak ratio = (VmHWM after loading - VmRSS before loading) / checkpoint bytes

(goal <= 1.3: the loaded parameters themselves are 1.0; the rest is what loading holds on top).

  .venv/bin/python -m benchmarks.hf_load                       # ~1 GB float32, one device
  .venv/bin/python -m benchmarks.hf_load --devices=8 --model_axis=2   # into a data x model mesh
  .venv/bin/python -m benchmarks.hf_load --size_gb=0.005 --vocab=1000 --width=128   # smoke run
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from kdjax.models import hf, safetensors

SIZE = flags.DEFINE_float("size_gb", 1.0, "approximate checkpoint size (GB = 1e9 bytes)")
SHARD = flags.DEFINE_float("shard_gb", 0.25, "max_shard_size of the written files")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "stored dtype")
DEVICES = flags.DEFINE_integer("devices", 1, "fake CPU devices of the loading process")
MODEL_AXIS = flags.DEFINE_integer("model_axis", 1, "tensor-parallel axis size (needs devices>1)")
REPEATS = flags.DEFINE_integer("repeats", 1, "load subprocesses (the best time is kept)")
VOCAB_FLAG = flags.DEFINE_integer("vocab", 32000, "vocabulary size")
WIDTH_FLAG = flags.DEFINE_integer("width", 1024, "hidden size (16 query / 4 kv heads, MLP 2.75x)")


def llama_config(size_bytes: float, itemsize: int) -> dict:
  VOCAB, WIDTH, HEADS, KV_HEADS = VOCAB_FLAG.value, WIDTH_FLAG.value, 16, 4  # noqa: N806
  MLP = WIDTH * 11 // 4  # noqa: N806
  head_dim = WIDTH // HEADS
  per_layer = (
    2 * WIDTH * HEADS * head_dim + 2 * WIDTH * KV_HEADS * head_dim + 3 * WIDTH * MLP + 2 * WIDTH
  )
  fixed = 2 * VOCAB * WIDTH + WIDTH
  layers = max(1, round((size_bytes / itemsize - fixed) / per_layer))
  return {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": VOCAB,
    "hidden_size": WIDTH,
    "intermediate_size": MLP,
    "num_hidden_layers": layers,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
  }


def write_checkpoint(directory: pathlib.Path, size_bytes: float, dtype: str) -> int:
  """Writes a random checkpoint tensor by tensor (never the whole model in memory)."""
  np_dtype = np.dtype(safetensors._DTYPES["BF16" if dtype == "bfloat16" else "F32"])
  config = llama_config(size_bytes, np_dtype.itemsize)
  model = hf.config_to_model(config)
  abstract = hf._abstract_params(model)
  tensors = []
  for index, (path, leaf) in enumerate(hf._paths(abstract)):
    name, transposed = hf._hf_name(model, path)
    shape = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)

    def get(shape=shape, index=index):
      rng = np.random.default_rng(index)
      return (0.02 * rng.standard_normal(shape, np.float32)).astype(np_dtype)

    tensors.append((name, shape, np_dtype, get))
  limit = int(SHARD.value * 1e9)
  groups, size = [[]], 0
  for tensor in tensors:
    nbytes = math.prod(tensor[1]) * np_dtype.itemsize
    if groups[-1] and size + nbytes > limit:
      groups.append([])
      size = 0
    groups[-1].append(tensor)
    size += nbytes
  weight_map, total = {}, 0
  for k, group in enumerate(groups, 1):
    file = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
    safetensors.write_safetensors(directory / file, group)
    for name, shape, _, _ in group:
      weight_map[name] = file
      total += math.prod(shape) * np_dtype.itemsize
  (directory / hf.INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))
  (directory / hf.CONFIG_NAME).write_text(json.dumps(config))
  return total


_CHILD = r"""
import json, os, sys, time
import jax

def status(key):
  for line in open("/proc/self/status"):
    if line.startswith(key):
      return int(line.split()[1]) * 1024

from kdjax.models import hf, partitioning
mesh = None
if {devices} > 1:
  mesh = partitioning.make_mesh(model={model_axis})
jax.numpy.zeros(1).block_until_ready()
before = status("VmRSS")
start = time.perf_counter()
model, params = hf.from_pretrained(sys.argv[1], mesh=mesh)
jax.block_until_ready(params)
seconds = time.perf_counter() - start
nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
print(json.dumps({{"seconds": seconds, "before": before, "peak": status("VmHWM"),
                  "after": status("VmRSS"), "param_bytes": nbytes,
                  "layers": model.num_layers}}))
"""


def measure(directory: pathlib.Path) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES.value}"
  )
  code = _CHILD.format(devices=DEVICES.value, model_axis=MODEL_AXIS.value)
  root = pathlib.Path(__file__).resolve().parent.parent
  result = subprocess.run(
    [sys.executable, "-c", code, str(directory)],
    capture_output=True,
    text=True,
    env=env,
    cwd=root,
    check=False,
  )
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(prefix="hf_load_") as tmp:
    directory = pathlib.Path(tmp)
    total = write_checkpoint(directory, SIZE.value * 1e9, DTYPE.value)
    runs = [measure(directory) for _ in range(REPEATS.value)]
  best = min(runs, key=lambda r: r["seconds"])
  ratio = max((r["peak"] - r["before"]) / total for r in runs)
  print(
    f"checkpoint: llama, {best['layers']} layers, {DTYPE.value}, {total / 1e9:.3f} GB "
    f"in {math.ceil(total / (SHARD.value * 1e9))} file(s); devices={DEVICES.value} "
    f"model_axis={MODEL_AXIS.value}"
  )
  print(
    f"| from_pretrained | {best['seconds']:.2f} s | {total / 1e9 / best['seconds']:.2f} GB/s | "
    f"peak host memory {ratio:.3f}x the checkpoint (goal <= 1.3) |"
  )


if __name__ == "__main__":
  app.run(main)
