"""The one loss registry: ``kdjax.losses.get(name)``.

Every job that names a distillation loss in its config looks it up here: the train job's
``kd.loss`` (e.g. ``'kd_loss'``, ``'dkd_loss'``) and the LM job's ``distill.divergence``
(``kdjax.losses.sequence.get_divergence``: ``'kl'``, ``'jsd'``, ...). Names are the public
functions of :mod:`kdjax.losses` that compare student and teacher logits (first arguments
``student_logits, teacher_logits``), plus the short divergence names of
:data:`kdjax.losses.sequence.DIVERGENCES` (``'kl'`` = ``kl_divergence``, ``'kd'`` =
``kd_loss``, ``'jsd'`` = ``generalized_jsd``, ``'tv'`` = ``total_variation``, ...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from kdjax.losses import logits, methods, sequence, taid

__all__ = ["LOSSES", "get"]


def _logit_pair_losses() -> dict[str, Callable]:
  found = {}
  for module in (logits, methods, taid):
    for name in module.__all__:
      fn = getattr(module, name)
      if callable(fn) and not inspect.isclass(fn):
        try:
          params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
          continue
        if params[:2] == ["student_logits", "teacher_logits"] and not name.endswith("_log_probs"):
          found[name] = fn
  return found


LOSSES: dict[str, Callable] = {**_logit_pair_losses(), **sequence.DIVERGENCES}
"""Loss name -> per-example function of ``(student_logits, teacher_logits, ...)``."""


def get(name: str) -> Callable:
  """The distillation loss called ``name`` (a key of :data:`LOSSES`).

  Raises:
    ValueError: an unknown name; the message lists the valid ones.
  """
  if name not in LOSSES:
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
  return LOSSES[name]
