"""A scripted SIGTERM for the kill-and-resume tests (shared by tests/jobs and tests/distill).

Import as ``from tests._preemption import StopAt``.
"""

from __future__ import annotations

from kdjax.jobs import checkpoint


class StopAt(checkpoint.PreemptionFlag):
  """A SIGTERM during step ``at`` (the loop asks once per step, after it)."""

  def __init__(self, at: int):
    super().__init__()
    self.at, self.calls = at, 0

  def is_set(self):
    self.calls += 1
    return self.calls >= self.at
