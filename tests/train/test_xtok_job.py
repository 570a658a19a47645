"""Cross-tokenizer modes of the lm job (kdjax.train.xtok): the objectives against a NumPy
computation on a hand-made batch, config errors; the runlocal experiment is slow."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from experiments import xtok_pystdlib
from kdjax import models
from kdjax.data import text as text_lib, xtok as xtok_data
from kdjax.train import lm_job, xtok


class ToyTokenizer:
  pieces = [b"", b"", b"", b"de", b"f", b" foo", b"()", b":"]
  vocab_size, pad_id, eos_id, bos_id = 8, 0, 1, 2

  def token_byte_strings(self):
    return self.pieces


def test_uld_and_alm_objectives_equal_a_numpy_computation_on_a_hand_made_batch():
  stream = np.array([2, 3, 4, 5, 6, 7, 1, 2, 5, 3, 4, 7, 1])
  packed = text_lib.pack(stream, 6, pad_id=0, bos_id=2)
  batch = xtok_data.CrossTokenBatches(
    packed,
    student_tokenizer=ToyTokenizer(),
    teacher_tokenizer=text_lib.ByteTokenizer(),
    teacher_len=12,
    batch_size=2,
    seed=0,
  ).view([0, 1])
  student = models.TransformerLM(vocab_size=8, max_len=6, embed_dim=8, num_layers=1, num_heads=2)
  teacher = models.TransformerLM(vocab_size=259, max_len=12, embed_dim=8, num_layers=1, num_heads=2)
  s_params = jax.jit(student.init)(jax.random.PRNGKey(0), batch["inputs"])["params"]
  t_params = jax.jit(teacher.init)(jax.random.PRNGKey(1), batch["teacher_inputs"])["params"]
  weights = dict(ce_weight=0.5, uld_weight=2.0, uld_temperature=1.0, alm_weight=3.0)
  objectives = {
    mode: xtok.make_objective(
      mode, student, teacher, **weights, alm_temperature=2.0, alm_divergence="kl"
    )
    for mode in ("uld", "alm")
  }

  @jax.jit
  def forward(s_params, t_params, batch):
    s_logits = student.apply({"params": s_params}, batch["inputs"])
    t_logits = teacher.apply({"params": t_params}, batch["teacher_inputs"])
    key = jax.random.PRNGKey(0)
    totals = {m: f(s_params, t_params, batch, key) for m, f in objectives.items()}
    return s_logits, t_logits, totals

  s_logits, t_logits, totals = forward(s_params, t_params, batch)
  s_logits, t_logits = np.asarray(s_logits, np.float64), np.asarray(t_logits, np.float64)
  log_q, log_p = log_softmax(s_logits, -1), log_softmax(t_logits, -1)
  tok_q = np.take_along_axis(log_q, batch["targets"][..., None], -1)[..., 0]
  tok_p = np.take_along_axis(log_p, batch["teacher_targets"][..., None], -1)[..., 0]
  ce = -np.sum(tok_q[batch["mask"]])
  uld = alm = 0.0
  for b in range(2):
    for c in np.flatnonzero(batch["chunk_mask"][b]):
      # ULD where both predict chunk c's first token.
      q = np.sort(softmax(s_logits[b, batch["student_starts"][b, c]]))[::-1]
      p = np.sort(softmax(t_logits[b, batch["teacher_starts"][b, c]]))[::-1]
      uld += np.abs(p - np.pad(q, (0, 259 - 8))).sum()
      # ALM: binary KL of the chunk likelihoods at tau = 2 (epsilon 1e-6).
      ls = tok_q[b][batch["student_chunks"][b] == c].sum() / 2 - 1e-6
      lt = tok_p[b][batch["teacher_chunks"][b] == c].sum() / 2 - 1e-6
      ps, pt = np.exp(ls), np.exp(lt)
      alm += pt * (lt - ls) + (1 - pt) * (np.log1p(-pt) - np.log1p(-ps))
  assert batch["chunk_mask"].sum() == 9  # "de" "f" " foo" "()" ":" | " foo" "de" "f" ":"
  for mode, extra in (("uld", 2.0 * uld), ("alm", 3.0 * alm)):
    total, count = totals[mode]
    assert int(count) == batch["mask"].sum()
    np.testing.assert_allclose(float(total), 0.5 * ce + extra, rtol=2e-5)


def _runlocal(**overrides):
  c = xtok_pystdlib.get_config("runlocal")
  for key, value in overrides.items():
    first, _, last = key.rpartition(".")
    (c[first] if first else c)[last] = value
  return c


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"xtok.student_tokenizer": ""}, "need a second tokenizer"),
    ({"methods": "ce,token_kd"}, "config.methods must be distinct names from"),
    ({"xtok.alm_temperature": 0.0}, "config.xtok.alm_temperature must be"),
    ({"xtok.alm_divergence": "tv"}, "config.xtok.alm_divergence must be one of"),
    ({"student.model.vocab_size": 500}, "student.model.vocab_size=500 but the student tokenizer"),
    ({"xtok.student_seq_len": 64}, "student_seq_len=64 must be in"),
  ],
)
def test_bad_cross_tokenizer_configs_raise_value_errors(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    lm_job.run(_runlocal(**overrides), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_cross_tokenizer_modes_without_a_second_tokenizer_are_refused(tmp_path):
  c = _runlocal()
  del c["xtok"]
  c.methods = "ce,alm"
  with pytest.raises(ValueError, match="need a second tokenizer"):
    lm_job.run(c, str(tmp_path / "run"))


@pytest.mark.slow
def test_xtok_runlocal_through_the_launcher(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.main",
      "--config=experiments/xtok_pystdlib.py:runlocal",
      f"--workdir={tmp_path}",
    ],
    check=True,
    cwd=root,
  )
  with open(tmp_path / "summary.json") as f:
    summary = lm_job.by_model(json.load(f))
  assert {"teacher", "ce", "uld", "alm", "student_tokenizer"} <= set(summary)
  for name in ("ce", "uld", "alm"):
    assert np.isfinite(summary[name]["eval_bits_per_byte"]) and "gap_closed" in summary[name]
