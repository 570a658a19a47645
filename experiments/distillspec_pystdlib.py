r"""DistillSpec on the embedded corpus: drafts for speculative decoding of a byte-level target.

The target is a byte-level TransformerLM (128 wide, 4 layers) trained on the Python
standard library's sources; every draft is 32 wide with 1 layer (its cost per token is a
fraction of the target's), trained for the same steps on the same windows:

* ``ce`` (data, cross-entropy), ``fkl`` / ``rkl`` / ``jsd`` / ``tvd`` (token KD on the
  data under forward KL, reverse KL, JSD(0.5), total variation),
* ``onpolicy_jsd`` (GKD on draft samples only, JSD(0.5)), ``seqkd`` (target samples, CE),
* ``adaspec`` (AdaSPEC, Hu et al. 2025: forward KL on the 40% of tokens where the draft
  trails a token-KD reference draft most; the reference trains first, in the same run).

``WORKDIR/summary.json``: ``{'target': ..., 'drafts': {name: {'acceptance_greedy',
'acceptance_sampled', 'speedup_greedy', 'speedup_sampled', 'eval_bits_per_byte', ...}},
'timing': {'target_ms_per_token', 'draft_ms_per_token', 'draft_target_cost_ratio'}}``
(:mod:`kdjax.train.distillspec`).

  python -m launch.main --config=experiments/distillspec_pystdlib.py --workdir=runs/distillspec
  python -m launch.main --config=experiments/distillspec_pystdlib.py:runlocal --workdir=/tmp/ds

Arg (comma-separated): ``runlocal`` (a smoke run), ``seed=N``, ``drafts=ce+fkl`` (a subset
of the drafts, ``+``-separated; ``ce`` is always trained).
"""

import ml_collections

from experiments import common

DRAFTS = {
  "ce": {"mode": "ce"},
  "fkl": {"mode": "token_kd", "divergence": "kl"},
  "rkl": {"mode": "token_kd", "divergence": "reverse_kl"},
  "jsd": {"mode": "token_kd", "divergence": "jsd", "beta": 0.5},
  "tvd": {"mode": "token_kd", "divergence": "tv"},
  "onpolicy_jsd": {"mode": "gkd", "lam": 1.0, "beta": 0.5},
  "seqkd": {"mode": "seq_kd"},
  "adaspec": {"mode": "adaspec", "divergence": "kl"},  # reference: distill.adaspec_reference
}


def base_config(*, seed: int = 0, drafts: str = ",".join(DRAFTS)) -> ml_collections.ConfigDict:
  c = common.lm_base(seed=seed, methods="ce")
  c.job = "distillspec"
  c.teacher.model.update(embed_dim=128, num_layers=4, num_heads=4, mlp_dim=512)
  c.student.model.update(embed_dim=32, num_layers=1, num_heads=2, mlp_dim=128)
  c.teacher.num_steps, c.student.num_steps = 600, 300
  c.log_every, c.eval_every, c.checkpoint_every = 50, 150, 150
  names = ["ce"] + [n for n in drafts.split(",") if n and n != "ce"]
  c.drafts = {name: DRAFTS[name] for name in names}
  c.speculative = {
    "num_prompts": 64,  # validation windows: the first distill.prompt_len bytes are the prompt
    "max_new_tokens": 48,
    "acceptance_draft_tokens": 4,
    "draft_tokens": "1,2,3,4,6",  # k tried for the wall-time speedup (the best is kept)
    "timing_prompts": 8,  # batch-1 prompts timed per k
    "timing_repeats": 3,  # the fastest of these alternating runs counts
  }
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks ``c`` in place to a smoke run."""
  common.lm_runlocal(c)
  c.student.model.update(embed_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
  c.teacher.num_steps, c.student.num_steps = 20, 10
  c.speculative.update(
    num_prompts=8, max_new_tokens=12, draft_tokens="2", timing_prompts=2, timing_repeats=1
  )
  return c


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, seed=0, drafts="+".join(DRAFTS))
  c = base_config(seed=a.seed, drafts=a.drafts.replace("+", ","))
  return runlocal(c) if a.runlocal else c
