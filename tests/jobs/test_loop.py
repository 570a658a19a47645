"""Tests of kdjax.jobs.loop: when the one step loop logs, evaluates, saves and stops."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.jobs import checkpoint, loop, metrics as metrics_lib, workdir as workdir_lib


def test_itstime_is_every_multiple_and_the_last_step():
  for every in (1, 2, 3, 7, 10):
    for total in (1, 5, 10, 21):
      expected = {s for s in range(1, total + 1) if s % every == 0} | {total}
      assert {s for s in range(1, total + 1) if loop.itstime(s, every, total)} == expected
  with pytest.raises(ValueError, match="every must be a positive"):
    loop.itstime(3, 0, 10)


def _toy(rate=0.5):
  """A running mean of step-dependent numbers (the reference below is a plain loop)."""

  def step_fn(state, step):
    x = jnp.float32(np.sin(step))  # the "batch" of step `step`
    loss = (state["w"] - x) ** 2
    w = state["w"] - rate * (state["w"] - x)
    return {"w": w, "loss_sum": state["loss_sum"] + loss}, {"loss": loss}

  def on_log(state, step, metrics):
    return {**state, "loss_sum": state["loss_sum"] * 0}, {"train_loss": state["loss_sum"]}

  return step_fn, on_log


def _run(workdir, total, every, preemption=None, rate=0.5):
  step_fn, on_log = _toy(rate)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=100)
  try:
    start, state = loop.resume(ckpt, {"w": jnp.float32(1), "loss_sum": jnp.float32(0)}, "toy")
    log = metrics_lib.MetricsWriter(workdir, resume_step=start, total_steps=total, name="toy")
    try:
      state = loop.run_steps(
        state,
        step_fn,
        start=start,
        total=total,
        every=every,
        name="toy",
        checkpointer=ckpt,
        metrics=log,
        on_log=on_log,
        on_eval=lambda state, step: {"w": float(state["w"])},
        preemption=preemption,
      )
    finally:
      log.close()
  finally:
    ckpt.close()
  return state


def _reference(total, every_log, rate=0.5):
  """float64 plain-Python loop: the records the loop must write and the final w."""
  w, loss_sum, records = 1.0, 0.0, []
  for step in range(total):
    x = float(np.float32(np.sin(step)))
    loss_sum += (w - x) ** 2
    w = w - rate * (w - x)
    if (step + 1) % every_log == 0 or step + 1 == total:
      records.append((step + 1, loss_sum))
      loss_sum = 0.0
  return records, w


class _StopAt(checkpoint.PreemptionFlag):
  """SIGTERM during step ``at`` (the loop asks once per step, after it)."""

  def __init__(self, at):
    super().__init__()
    self.at, self.calls = at, 0

  def is_set(self):
    self.calls += 1
    return self.calls >= self.at


def test_records_checkpoints_and_state(tmp_path):
  state = _run(str(tmp_path), 11, loop.Every(log=3, eval=4, checkpoint=5))
  records = workdir_lib.read_metrics(str(tmp_path))
  expected, w = _reference(11, 3)
  # a record at every log step (3, 6, 9, 11) and every eval step (4, 8, 11)
  assert [r["step"] for r in records] == [3, 4, 6, 8, 9, 11]
  logged = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
  assert [s for s, _ in logged] == [s for s, _ in expected]
  np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-5)
  assert [r["step"] for r in records if "w" in r] == [4, 8, 11]
  assert float(state["w"]) == pytest.approx(w, rel=1e-5)
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [5, 10, 11]


def test_preempted_run_saves_exits_and_resumes_to_the_same_result(tmp_path):
  every = loop.Every(log=2, eval=3, checkpoint=4)
  straight = _run(str(tmp_path / "a"), 9, every)
  with pytest.raises(loop.Preempted) as raised:
    _run(str(tmp_path / "b"), 9, every, preemption=_StopAt(5))
  assert raised.value.code == 0  # a clean exit
  assert checkpoint.load_arrays(str(tmp_path / "b" / "checkpoints"))[0] == 5
  resumed = _run(str(tmp_path / "b"), 9, every)
  assert float(resumed["w"]) == float(straight["w"])  # bit for bit
  logs = [workdir_lib.read_metrics(str(tmp_path / d)) for d in "ab"]
  assert logs[1] == logs[0]  # the running sum is checkpointed: records are identical


def test_default_flag_is_sigterm_during_the_loop(tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "PreemptionFlag", lambda: _StopAt(2))
  with pytest.raises(loop.Preempted):
    _run(str(tmp_path), 9, loop.Every(log=2, eval=3, checkpoint=4))
  assert checkpoint.load_arrays(str(tmp_path / "checkpoints"))[0] == 2


def test_non_finite_value_is_an_error_before_it_is_logged_or_saved(tmp_path):
  with pytest.raises(FloatingPointError, match=r"\[toy\] step 2: non-finite train_loss"):
    _run(str(tmp_path), 9, loop.Every(log=2, eval=3, checkpoint=2), rate=float("inf"))
  assert workdir_lib.read_metrics(str(tmp_path)) == []
  assert not os.listdir(tmp_path / "checkpoints")


def test_write_summary_is_flat_sorted_and_null_for_missing_values(tmp_path, capsys):
  out = loop.write_summary(str(tmp_path), {"b": 1.5, "a": None, "c": "x"})
  text = (tmp_path / "summary.json").read_text()
  assert json.loads(text) == out == {"a": None, "b": 1.5, "c": "x"}
  assert text.index('"a": null') < text.index('"b"')
  assert 'summary: {"a": null' in capsys.readouterr().out
  with pytest.raises(ValueError, match=r"must be flat.*\['d'\]"):
    loop.write_summary(str(tmp_path), {"d": [1, 2]})
  assert json.loads((tmp_path / "summary.json").read_text())["b"] == 1.5  # unchanged


def test_finished_is_the_newest_checkpoint_at_the_last_step(tmp_path):
  _run(str(tmp_path / "run"), 9, loop.Every(log=3, eval=3, checkpoint=4))
  assert loop.last_checkpoint(str(tmp_path / "run")) == 9
  assert loop.finished(str(tmp_path / "run"), 9)
  assert not loop.finished(str(tmp_path / "run"), 12)  # the same run with more steps
  assert not loop.finished(str(tmp_path / "missing"), 9)
  assert not (tmp_path / "missing").exists()  # reads only
