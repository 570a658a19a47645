r"""LM distillation benchmark: the table of modes, the KD step cost, KV-cache sampling speed.

  .venv/bin/python -m benchmarks.lm_kd --workdir=runs/lm_kd_bench        # everything
  .venv/bin/python -m benchmarks.lm_kd --table_arg=runlocal --workdir=/tmp/lm_bench
  .venv/bin/python -m benchmarks.lm_kd --notable                        # timings only
  .venv/bin/python -m benchmarks.lm_kd --notable --nosampling           # KD step cost only

1. **Modes** on the embedded corpus: runs (or resumes, or reads) the ``lm`` job of
   ``experiments/lm_kd_pystdlib.py[:table_arg]`` in ``--workdir`` and prints validation
   bits per byte, the fraction of the teacher-student gap closed vs the CE-only student,
   the teacher's NLL per token of each model's own samples, and wall time.
2. **KD step cost**: the time of one teacher-forced KD loss+gradient of the student
   (teacher forward inside) divided by the time of its parts, the teacher forward plus the
   student's loss+gradient with the same KD loss against the precomputed teacher outputs
   (goal <= 1.05), and divided by a teacher forward plus a student CE loss+gradient (which
   leaves out the KD loss's own work over the vocabulary); dense logits and chunked.
3. **Sampling**: tokens/s of :func:`kdjax.models.sampling.generate` (KV cache) against
   greedy decoding that recomputes the whole prefix for every new token (goal >= 5x at
   256 new tokens).
"""

from __future__ import annotations

import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from experiments import lm_kd_pystdlib
from kdjax import models
from kdjax.models import sampling
from kdjax.train import lm, lm_job

_TABLE = flags.DEFINE_bool("table", True, "Run (or read) the comparison of modes.")
_TABLE_ARG = flags.DEFINE_string("table_arg", "", "Arg of experiments/lm_kd_pystdlib.py.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lm_kd_bench", "Workdir of the comparison.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per KD step and per sampling batch.")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence of the KD step.")
_VOCAB = flags.DEFINE_integer("vocab", 8192, "Vocabulary of the KD-step models.")
_CHUNK = flags.DEFINE_integer("chunk_size", 256, "Tokens per chunk of the chunked loss.")
_NEW = flags.DEFINE_integer("new_tokens", 256, "New tokens per sequence when sampling.")
_PROMPT = flags.DEFINE_integer("prompt_len", 16, "Prompt tokens when sampling.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median).")
_SAMPLING = flags.DEFINE_bool("sampling", True, "Time KV-cache sampling vs recomputation.")


def table(arg: str, workdir: str) -> dict:
  """Prints the comparison of modes and returns the job's summary by model."""
  summary = lm_job.by_model(lm_job.run(lm_kd_pystdlib.get_config(arg or None), workdir))
  print(f"\nModes on pystdlib ({workdir}):")
  print("| model | val bits/byte | gap closed vs CE | teacher NLL of own samples | wall s |")
  print("|---|---|---|---|---|")
  for name, s in summary.items():
    gap = f"{s['gap_closed']:.2f}" if "gap_closed" in s else "-"
    nll = f"{s['teacher_nll_of_samples']:.3f}" if "teacher_nll_of_samples" in s else "-"
    print(f"| {name} | {s['eval_bits_per_byte']:.3f} | {gap} | {nll} | {s['wall_time_s']:.0f} |")
  if {"ce", "token_kd"} <= set(summary):
    print(
      f"token KD beats CE-only: "
      f"{summary['token_kd']['eval_bits_per_byte'] < summary['ce']['eval_bits_per_byte']}"
    )
  if {"gkd", "token_kd"} <= set(summary):
    gkd, kd = (summary[m]["teacher_nll_of_samples"] for m in ("gkd", "token_kd"))
    print(f"GKD's own samples get a lower teacher NLL than token KD's: {gkd < kd}")
  return summary


def kd_step_cost(batch: int, seq_len: int, vocab: int, chunk_size: int, repeats: int) -> None:
  """Prints the KD loss+grad time against its parts, dense logits and chunked.

  The KD step (one jit: teacher forward + student forward/backward with the KD loss) is
  compared with two sums of separately jitted parts:

  * ``parts``: the teacher's forward pass (its logits, or its hidden states and output
    kernel for the chunked loss) + the student's forward/backward with the same KD loss
    against those precomputed teacher outputs (``lm.make_kd_parts``). A ratio above 1 is
    what running them together costs (goal <= 1.05); as in ``benchmarks/train_step.py``,
    the student part carries the step's own loss.
  * ``CE parts``: the teacher's forward pass + a student CE forward/backward. The ratio
    also counts the KD loss's own work over the vocabulary (a second softmax and the KL
    and its gradient over ``[B L, V]``, against CE's one log-softmax and one gathered
    target): not an overhead of distillation, the price of its loss at this vocabulary.
  """
  student = models.TransformerLM(
    vocab_size=vocab, max_len=seq_len, embed_dim=128, num_layers=2, num_heads=4, mlp_dim=512
  )
  teacher = models.TransformerLM(
    vocab_size=vocab, max_len=seq_len, embed_dim=256, num_layers=4, num_heads=4, mlp_dim=1024
  )
  rs = np.random.RandomState(0)
  data = {
    "inputs": jnp.asarray(rs.randint(0, vocab, (batch, seq_len)), jnp.int32),
    "targets": jnp.asarray(rs.randint(0, vocab, (batch, seq_len)), jnp.int32),
    "mask": jnp.ones((batch, seq_len), bool),
  }
  x = data["inputs"]
  s_params = student.init(jax.random.PRNGKey(0), x)["params"]
  t_params = teacher.init(jax.random.PRNGKey(1), x)["params"]
  key = jax.random.PRNGKey(2)

  def grad_of(objective):
    return jax.jit(lambda p, t: jax.grad(lambda q: objective(q, t, data, key)[0])(p))

  ce = grad_of(lm.make_objective("ce", student))
  print(
    f"\nKD loss+grad (batch {batch} x {seq_len} tokens, vocab {vocab}, student 2x128, "
    f"teacher 4x256); medians of {repeats} interleaved rounds"
  )
  print(
    "| loss | KD step ms | teacher fwd ms | student KD fwd+bwd ms | student CE fwd+bwd ms "
    "| / parts | / CE parts |"
  )
  print("|---|---|---|---|---|---|---|")
  for chunked in (False, True):
    arguments = dict(divergence="kl", temperature=1.0, chunked=chunked, chunk_size=chunk_size)
    teacher_outputs, student_kd = lm.make_kd_parts(student, teacher, **arguments)
    forward = jax.jit(teacher_outputs)
    outputs = forward(t_params, x)
    calls = {
      "kd": (grad_of(lm.make_objective("kd", student, teacher, **arguments)), (s_params, t_params)),
      "teacher": (forward, (t_params, x)),
      "student": (
        jax.jit(jax.grad(lambda q, o, f=student_kd: f(q, o, data, key)[0])),
        (s_params, outputs),
      ),
      "ce": (ce, (s_params, t_params)),
    }
    t = _interleaved(calls, repeats)
    work = {n: _work(fn, args) for n, (fn, args) in calls.items()}
    name = f"chunked (chunk {chunk_size})" if chunked else "dense logits"
    parts = [k / (f + s) for k, f, s in zip(t["kd"], t["teacher"], t["student"])]
    ce_parts = [k / (f + c) for k, f, c in zip(t["kd"], t["teacher"], t["ce"])]
    ms = {n: 1e3 * statistics.median(v) for n, v in t.items()}
    print(
      f"| {name} | {ms['kd']:.1f} | {ms['teacher']:.1f} | {ms['student']:.1f} | {ms['ce']:.1f} "
      f"| {statistics.median(parts):.2f}x | {statistics.median(ce_parts):.2f}x |"
    )
    same = {k: work["kd"][k] / (work["teacher"][k] + work["student"][k]) for k in work["kd"]}
    print(
      "  XLA cost analysis, KD step / parts: "
      + ", ".join(f"{k} {v:.3f}" for k, v in same.items())
      + "; student KD part / student CE: "
      + ", ".join(f"{k} {work['student'][k] / work['ce'][k]:.2f}" for k in work["kd"])
    )


def _work(fn, args) -> dict[str, float]:
  """XLA's cost analysis of the compiled ``fn(*args)``: flops, transcendentals, bytes."""
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {k: float(cost.get(k, 0.0)) for k in ("flops", "transcendentals", "bytes accessed")}


def _interleaved(calls: dict, rounds: int) -> dict[str, list[float]]:
  """Seconds of each ``name: (fn, args)`` call per round, the calls taking turns (after one
  untimed call each), so that a change of the machine's load hits every part alike."""
  for fn, args in calls.values():
    common.time_call(fn, *args, warmup=1, repeats=1)
  times = {name: [] for name in calls}
  for _ in range(rounds):
    for name, (fn, args) in calls.items():
      times[name].append(common.time_call(fn, *args, warmup=0, repeats=1))
  return times


def sampling_speed(batch: int, prompt_len: int, new_tokens: int, repeats: int) -> None:
  """Prints tokens/s of KV-cache sampling and of recomputing the prefix for each token."""
  model = models.TransformerLM(
    vocab_size=259,
    max_len=prompt_len + new_tokens,
    embed_dim=128,
    num_layers=4,
    num_heads=4,
    mlp_dim=512,
  )
  prompts = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, prompt_len)), jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), prompts)
  key = jax.random.PRNGKey(1)
  cached = functools.partial(
    sampling.generate, model, variables, prompts, rng=key, max_new_tokens=new_tokens, greedy=True
  )

  @jax.jit
  def recompute(variables, prompts):
    buffer = jnp.zeros((batch, prompt_len + new_tokens), jnp.int32).at[:, :prompt_len].set(prompts)

    def body(i, buffer):
      logits = model.apply(variables, buffer)  # the whole prefix again (causal: padding unseen)
      token = jnp.argmax(logits[:, prompt_len + i - 1], axis=-1).astype(jnp.int32)
      return buffer.at[:, prompt_len + i].set(token)

    return jax.lax.fori_loop(0, new_tokens, body, buffer)

  t_cache = common.time_call(lambda: cached()["tokens"], repeats=repeats)
  t_full = common.time_call(recompute, variables, prompts, repeats=repeats)
  same = np.array_equal(
    np.asarray(cached()["tokens"]), np.asarray(recompute(variables, prompts))[:, prompt_len:]
  )
  n = batch * new_tokens
  print(f"\nGreedy sampling, {batch} x {new_tokens} new tokens after {prompt_len} (4x128 model):")
  print(f"  KV cache:  {n / t_cache:,.0f} tokens/s")
  print(f"  recompute: {n / t_full:,.0f} tokens/s")
  print(f"  speed-up {t_full / t_cache:.1f}x; same tokens: {same}")


def main(argv):
  del argv
  print(common.describe_devices())
  kd_step_cost(_BATCH.value, _SEQ.value, _VOCAB.value, _CHUNK.value, _REPEATS.value)
  if _SAMPLING.value:
    sampling_speed(_BATCH.value, _PROMPT.value, _NEW.value, _REPEATS.value)
  if _TABLE.value:
    table(_TABLE_ARG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
