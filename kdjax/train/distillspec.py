r"""``run(config, workdir)``: DistillSpec drafts for speculative decoding (``job='distillspec'``).

Zhou et al. (2024), "DistillSpec: Improving Speculative Decoding via Knowledge
Distillation": a small draft is distilled for *acceptance* (how often the target keeps its
tokens) rather than for perplexity; which divergence and which data (fixed data, target
samples, draft samples) work best depends on the decoding (greedy or sampling).

The target is the lm job's teacher; every draft is an lm job student of the same
architecture, steps and data order, trained in its own lm run (``WORKDIR/<draft>``; the
first, ``ce``, also trains the target, which the others load read-only, unless
``config.teacher_workdir`` names a finished lm run whose teacher every draft then uses).
Each entry of ``config.drafts`` is ``{'mode', 'divergence', 'lam', 'beta'}`` (lm job keys):

* ``ce``: cross-entropy on the data;
* ``fkl``, ``rkl``, ``jsd``, ``tvd``: token KD on the data under KL(target || draft),
  KL(draft || target), JSD(0.5) and total variation (``token_kd``);
* ``onpolicy_jsd``: GKD with draft samples only (``gkd``, ``lam`` = 1, JSD(0.5)), and
  ``seqkd``: cross-entropy on target samples (``seq_kd``), the two on-policy data sources;
* ``adaspec``: AdaSPEC (Hu et al. 2025): forward KL on the ``distill.adaspec_fraction`` of
  tokens where the draft's loss most exceeds that of a reference draft
  (``distill.adaspec_reference``, token KD, trained first in the same lm run for the same
  steps: the AdaSPEC draft costs two drafts' training).

Then each draft drafts for the target (:func:`kdjax.models.sampling.speculative_generate`)
on ``speculative.num_prompts`` validation prompts of ``distill.prompt_len`` bytes,
``speculative.max_new_tokens`` new tokens each:

* ``acceptance_greedy`` / ``acceptance_sampled``: the per-token acceptance rate
  ``accepted / (accepted + rejected)`` over all prompts (one batched call, ``k =
  speculative.acceptance_draft_tokens``), greedy and at T = 1;
* ``speedup_greedy`` / ``speedup_sampled``: wall time of plain KV-cache decoding of the
  target (:func:`~kdjax.models.sampling.generate`) over that of speculative decoding, one
  prompt at a time (batch 1, compiled beforehand), at the best ``k`` of
  ``speculative.draft_tokens`` (reported as ``best_k_*``): over ``timing_prompts``
  prompts, the sum of the fastest of ``timing_repeats`` runs of each, the two decoders
  alternating so that a change of machine load hits both;
* ``eval_bits_per_byte``: the draft's validation bits per byte (its lm run's summary).

``WORKDIR/summary.json`` is flat (``"<draft>/<figure>"``, grouped by
:func:`kdjax.train.lm_job.by_model`): each draft's figures above (and
``speedup_<greedy|sampled>_k<k>`` for every ``k`` tried), ``target/eval_bits_per_byte``,
and ``timing/target_ms_per_token``, ``timing/draft_ms_per_token`` (plain decoding, batch 1)
and their ratio ``timing/draft_target_cost_ratio``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from kdjax import mesh as mesh_lib, models
from kdjax.data import text as text_lib
from kdjax.jobs import (
  config as config_lib,
  loop as jobs_loop,
  workdir as workdir_lib,
)
from kdjax.jobs.checkpoint import Checkpointer
from kdjax.models import sampling
from kdjax.train import lm_job, state as state_lib

DRAFT_MODES = ("ce", "token_kd", "seq_kd", "gkd", "adaspec")


def _draft_config(config, name: str, spec) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for key in ("drafts", "speculative"):
    del c[key]
  c.job = "lm"
  c.methods = str(spec["mode"])
  if c.methods == "adaspec":  # its reference student trains first, in the same run
    c.methods = f"{c.distill.adaspec_reference},adaspec"
  if "divergence" in spec:
    c.distill.divergence = str(spec["divergence"])
  for key in ("lam", "beta"):
    if key in spec:
      c.distill[key] = float(spec[key])
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the drafts, the speculative-decoding keys and every lm key of every draft's run;
  raises ValueError naming the key."""
  drafts = config.drafts.to_dict() if hasattr(config.drafts, "to_dict") else dict(config.drafts)
  if "ce" not in drafts:
    raise ValueError(f"config.drafts must include a 'ce' draft, got {sorted(drafts)}")
  for name, spec in drafts.items():
    if spec.get("mode") not in DRAFT_MODES:
      raise ValueError(
        f"config.drafts.{name}.mode must be one of {DRAFT_MODES}, got {spec.get('mode')!r}"
      )
    for key in ("lam", "beta"):
      if key in spec:
        config_lib.check_number(spec[key], f"config.drafts.{name}.{key}", minimum=0, maximum=1)
  if drafts["ce"]["mode"] != "ce":
    raise ValueError("config.drafts.ce.mode must be 'ce'")
  s = config.speculative
  grid = str(s.draft_tokens).split(",")
  if not all(k.strip().isdigit() and int(k) >= 1 for k in grid):
    raise ValueError(f"config.speculative.draft_tokens must list ints >= 1, got {s.draft_tokens!r}")
  config_lib.check_int(s.acceptance_draft_tokens, "config.speculative.acceptance_draft_tokens")
  for key in ("num_prompts", "timing_prompts", "timing_repeats", "max_new_tokens"):
    config_lib.check_int(s[key], f"config.speculative.{key}")
  if int(s.timing_prompts) > int(s.num_prompts):
    raise ValueError(
      f"config.speculative.timing_prompts={s.timing_prompts} exceeds num_prompts={s.num_prompts}"
    )
  for name in drafts:
    lm_job.validate(_draft_config(config, name, drafts[name]))
  need = int(config.distill.prompt_len) + int(s.max_new_tokens) - 1
  for role in ("teacher", "student"):
    if need > int(config[role].model.max_len):
      raise ValueError(
        f"distill.prompt_len + config.speculative.max_new_tokens - 1 = {need} exceeds "
        f"config.{role}.model.max_len={config[role].model.max_len}"
      )


def _restore(config, role: str, phase_dir: str) -> Any:
  """The final parameters of ``role``'s model trained in ``phase_dir`` (host NumPy)."""
  model = models.from_config(config[role].model)
  block = config_lib.Optimizer.from_config(config[role].optimizer, f"config.{role}.optimizer")
  tx = block.make(int(config[role].num_steps))
  sample = np.zeros((int(config.batch_size), int(config.dataset.seq_len)), np.int32)
  state, shardings = state_lib.create_state(
    model, tx, sample, int(config.seed), mesh_lib.make_mesh()
  )
  checkpointer = Checkpointer(os.path.join(phase_dir, "checkpoints"), keep=1)
  try:
    step, state = checkpointer.restore_latest(jax.eval_shape(lambda: state), shardings)
  finally:
    checkpointer.close()
  if step != int(config[role].num_steps):
    raise ValueError(f"{phase_dir} holds no finished model (last checkpoint {step})")
  return model, jax.device_get(state.params)


def _prompts(config, data: text_lib.TextData) -> np.ndarray:
  s = config.speculative
  tok = data.tokenizer
  windows = text_lib.pack(
    data.validation,
    int(config.dataset.seq_len),
    pad_id=tok.pad_id,
    bos_id=tok.bos_id,
    max_sequences=int(s.num_prompts),
  )["inputs"]
  return windows[:, : int(config.distill.prompt_len)]


def _timed(fn) -> float:
  began = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - began


def evaluate_draft(
  target, target_params, draft, draft_params, prompts: np.ndarray, spec, *, eos_id: int
) -> dict:
  """Acceptance rates (batched) and tuned wall-time speedups (batch 1) of one draft."""
  t_vars, d_vars = {"params": target_params}, {"params": draft_params}
  new = int(spec.max_new_tokens)
  out = {}
  for label, greedy in (("greedy", True), ("sampled", False)):
    common = dict(rng=jax.random.PRNGKey(0), max_new_tokens=new, greedy=greedy, eos_id=eos_id)
    res = sampling.speculative_generate(
      target,
      t_vars,
      draft,
      d_vars,
      prompts,
      num_draft_tokens=int(spec.acceptance_draft_tokens),
      **common,
    )
    accepted, rejected = int(np.sum(res["num_accepted"])), int(np.sum(res["num_rejected"]))
    out[f"acceptance_{label}"] = accepted / max(accepted + rejected, 1)
    out[f"tokens_per_call_{label}"] = float(
      np.sum(res["lengths"]) / max(int(np.sum(res["num_target_calls"])), 1)
    )
    # Wall time, batch 1: plain target decoding and speculative decoding, alternating.
    best = (0.0, 0)
    for k in [int(v) for v in str(spec.draft_tokens).split(",") if v]:

      def spec_call(p, k=k):
        return sampling.speculative_generate(
          target, t_vars, draft, d_vars, p, num_draft_tokens=k, **common
        )

      def plain_call(p):
        return sampling.generate(target, t_vars, p, **common)

      first = prompts[:1]
      _timed(lambda: spec_call(first))  # compile
      _timed(lambda: plain_call(first))
      plain = spec_time = 0.0
      for i in range(int(spec.timing_prompts)):
        p = prompts[i : i + 1]
        # The fastest of a few alternating repeats: a busy machine only ever adds time.
        plain_times, spec_times = [], []
        for _ in range(int(spec.timing_repeats)):
          plain_times.append(_timed(lambda: plain_call(p)))
          spec_times.append(_timed(lambda: spec_call(p)))
        plain += min(plain_times)
        spec_time += min(spec_times)
      speedup = plain / spec_time
      out[f"speedup_{label}_k{k}"] = speedup
      if speedup > best[0]:
        best = (speedup, k)
    out[f"speedup_{label}"], out[f"best_k_{label}"] = best
  return out


def _cost(model, variables, prompts: np.ndarray, new: int, repeats: int) -> float:
  """Milliseconds per token of plain greedy decoding, batch 1 (after compiling; the fastest
  of ``repeats`` per prompt)."""
  call = lambda p: sampling.generate(  # noqa: E731
    model, variables, p, rng=jax.random.PRNGKey(0), max_new_tokens=new, greedy=True
  )
  _timed(lambda: call(prompts[:1]))
  total = sum(
    min(_timed(lambda i=i: call(prompts[i : i + 1])) for _ in range(repeats))
    for i in range(len(prompts))
  )
  return 1000 * total / (len(prompts) * new)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the target and the drafts (lm runs), then evaluates speculative decoding."""
  validate(config)
  drafts = config.drafts.to_dict()
  order = ["ce"] + [n for n in drafts if n != "ce"]
  os.makedirs(workdir, exist_ok=True)
  summaries = {}
  # The target: config.teacher_workdir's finished lm run, else trained in the ce run.
  target_run = str(config.teacher_workdir) or os.path.join(workdir, "ce")
  for name in order:
    c = _draft_config(config, name, drafts[name])
    c.teacher_workdir = "" if name == "ce" and not config.teacher_workdir else target_run
    summaries[name] = lm_job.run(c, os.path.join(workdir, name))
  with workdir_lib.open_workdir(os.path.join(workdir, "speculative"), config) as wd:
    data = lm_job._load_data(config)
    prompts = _prompts(config, data)
    target_config = ml_collections.ConfigDict(config.to_dict())
    if config.teacher_workdir:
      target_config.teacher = lm_job._load_teacher_config(target_run).teacher
    target, target_params = _restore(target_config, "teacher", os.path.join(target_run, "teacher"))
    spec = config.speculative
    flat = {"target/eval_bits_per_byte": summaries["ce"]["teacher/eval_bits_per_byte"]}
    for name in order:
      mode = str(drafts[name]["mode"])
      draft, params = _restore(config, "student", os.path.join(workdir, name, mode))
      figures = evaluate_draft(
        target, target_params, draft, params, prompts, spec, eos_id=data.tokenizer.eos_id
      )
      figures["eval_bits_per_byte"] = summaries[name][f"{mode}/eval_bits_per_byte"]
      flat.update({f"{name}/{k}": v for k, v in figures.items()})
      jobs_loop.say(f"[distillspec] {name}: " + json.dumps(figures))
    timing = prompts[: int(spec.timing_prompts)]
    args = (timing, int(spec.max_new_tokens), int(spec.timing_repeats))
    target_ms = _cost(target, {"params": target_params}, *args)
    draft_ms = _cost(draft, {"params": params}, *args)
    flat["timing/target_ms_per_token"] = target_ms
    flat["timing/draft_ms_per_token"] = draft_ms
    flat["timing/draft_target_cost_ratio"] = draft_ms / target_ms
    del wd
  return jobs_loop.write_summary(workdir, flat)
