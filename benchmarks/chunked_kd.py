"""Memory and time of `kdjax.losses.chunked_kd_loss` against the naive [N, V]-logits loss.

Both functions compute the per-token KD loss from hidden states and output projections,
sum it, and return the gradients for the student's hidden states and kernel (the work of
a training step's loss head):

  naive:          divergence(hs @ Ws, ht @ Wt) on the full [N, V] logits (float32 stats)
  chunked:        sum of chunked_kd_loss(hs, Ws, ht, Wt, chunk_size=...)   (per-token)
  chunked_fused:  chunked_kd_sum_and_count(...)[0]    (gradients fused into the forward)

Memory comes from XLA's compiled memory analysis of the jitted loss+gradient
(`jax.jit(f).lower(...).compile().memory_analysis()`), with `jax.ShapeDtypeStruct`
inputs: nothing is allocated, so the full LLM sizes work on a laptop CPU. Peak is
arguments + outputs + temporaries - aliased bytes; the temporaries alone are printed too.

Time runs the compiled functions for real, so on CPU use small `--time_*` sizes; on a
GPU pass the full sizes (`--time_n 8192 --time_hidden 4096 --time_vocab 128256`).

  .venv/bin/python -m benchmarks.chunked_kd            # memory at N=8192,H=4096,V=128256
                                                       # + time at the small CPU sizes
  .venv/bin/python -m benchmarks.chunked_kd --n=64 --hidden=32 --vocab=512 --time_n=64 \
      --time_hidden=32 --time_vocab=512 --chunk_sizes=16            # a seconds-long smoke run
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from kdjax.losses import chunked_kd_loss, chunked_kd_sum_and_count
from kdjax.losses.sequence import get_divergence


def naive_kd_loss(
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  *,
  divergence="kl",
  temperature=1.0,
):
  """The reference: full [N, V] logits in float32, then the divergence per token."""
  fn = get_divergence(divergence, temperature=temperature)
  student = jnp.matmul(student_hidden, student_kernel, preferred_element_type=jnp.float32)
  teacher = jnp.matmul(teacher_hidden, teacher_kernel, preferred_element_type=jnp.float32)
  return fn(student, jax.lax.stop_gradient(teacher))


def fused_sum(student_hidden, student_kernel, teacher_hidden, teacher_kernel, **kwargs):
  """The sum of the token losses with the gradients fused into the forward scan."""
  return chunked_kd_sum_and_count(
    student_hidden, student_kernel, teacher_hidden, teacher_kernel, **kwargs
  )[0]


VARIANTS = {"chunked": chunked_kd_loss, "chunked_fused": fused_sum}


def loss_and_grads(loss_fn, **kwargs):
  """``(hs, Ws, ht, Wt) -> (sum of token losses, (d hs, d Ws))``."""

  def total(hs, ws, ht, wt):
    return jnp.sum(loss_fn(hs, ws, ht, wt, **kwargs))

  return jax.value_and_grad(total, argnums=(0, 1))


def shapes(n, hidden, vocab, dtype):
  return (
    jax.ShapeDtypeStruct((n, hidden), dtype),
    jax.ShapeDtypeStruct((hidden, vocab), dtype),
    jax.ShapeDtypeStruct((n, hidden), dtype),
    jax.ShapeDtypeStruct((hidden, vocab), dtype),
  )


def compiled_memory(fn, args):
  """Returns (peak bytes, temporary bytes) from XLA's memory analysis."""
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  peak = (
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    + stats.temp_size_in_bytes
    - stats.alias_size_in_bytes
  )
  return peak, stats.temp_size_in_bytes


def gib(x):
  return f"{x / 2**30:8.2f} GiB"


_N = flags.DEFINE_integer("n", 8192, "Tokens N (memory analysis).")
_HIDDEN = flags.DEFINE_integer("hidden", 4096, "Hidden width H (memory analysis).")
_VOCAB = flags.DEFINE_integer("vocab", 128256, "Vocabulary size V (memory analysis).")
_CHUNK_SIZES = flags.DEFINE_list(
  "chunk_sizes", ["1024", "512", "256"], "Chunk sizes for the memory analysis."
)
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "dtype of hidden states and kernels.")
_DIVERGENCE = flags.DEFINE_string("divergence", "kl", "Divergence name of kdjax.losses.")
_TIME_N = flags.DEFINE_integer("time_n", 1024, "Tokens for the timing.")
_TIME_HIDDEN = flags.DEFINE_integer("time_hidden", 256, "Hidden width for the timing.")
_TIME_VOCAB = flags.DEFINE_integer("time_vocab", 16384, "Vocabulary size for the timing.")
_TIME_CHUNK_SIZE = flags.DEFINE_integer("time_chunk_size", 256, "Chunk size for the timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (the median is printed).")
_SKIP_TIME = flags.DEFINE_bool("skip_time", False, "Only the memory analysis.")


def main(argv):
  del argv
  dtype = jnp.dtype(_DTYPE.value)
  divergence = _DIVERGENCE.value
  structs = shapes(_N.value, _HIDDEN.value, _VOCAB.value, dtype)

  print(common.describe_devices())
  print(f"divergence={divergence} dtype={dtype.name}")
  print(
    f"memory (XLA compiled memory analysis of loss + gradient): N={_N.value} "
    f"H={_HIDDEN.value} V={_VOCAB.value}"
  )
  naive = loss_and_grads(naive_kd_loss, divergence=divergence)
  naive_peak, naive_temp = compiled_memory(naive, structs)
  floor = (sum(s.size for s in structs) + structs[0].size + structs[1].size) * dtype.itemsize
  print(f"  inputs + gradient outputs (needed by any implementation): {gib(floor)}")
  print(f"  naive              peak {gib(naive_peak)}   temporaries {gib(naive_temp)}")
  for chunk_size in (int(c) for c in _CHUNK_SIZES.value):
    for name, loss_fn in VARIANTS.items():
      fn = loss_and_grads(loss_fn, divergence=divergence, chunk_size=chunk_size)
      peak, temp = compiled_memory(fn, structs)
      print(
        f"  {name:<13}{chunk_size:>6} peak {gib(peak)}   temporaries {gib(temp)}   "
        f"peak ratio {peak / naive_peak:.3f} (1/{naive_peak / peak:.1f})   "
        f"temporaries ratio {temp / naive_temp:.3f} (1/{naive_temp / temp:.1f})"
      )

  if _SKIP_TIME.value:
    return
  rng = np.random.default_rng(0)
  n, h, v = _TIME_N.value, _TIME_HIDDEN.value, _TIME_VOCAB.value
  arrays = [
    jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[0] if i % 2 else 1), dtype)
    for i, s in enumerate(shapes(n, h, v, dtype))
  ]
  print(
    f"time (loss + gradient, median of {_REPEATS.value}): N={n} H={h} V={v} "
    f"chunk_size={_TIME_CHUNK_SIZE.value}"
  )
  naive_seconds = common.time_call(jax.jit(naive), *arrays, repeats=_REPEATS.value)
  print(f"  naive         {naive_seconds * 1e3:9.1f} ms")
  for name, loss_fn in VARIANTS.items():
    fn = loss_and_grads(loss_fn, divergence=divergence, chunk_size=_TIME_CHUNK_SIZE.value)
    seconds = common.time_call(jax.jit(fn), *arrays, repeats=_REPEATS.value)
    print(f"  {name:<13} {seconds * 1e3:9.1f} ms   time ratio {seconds / naive_seconds:.3f}")


if __name__ == "__main__":
  app.run(main)
