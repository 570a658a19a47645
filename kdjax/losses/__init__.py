"""Pure-function knowledge-distillation losses (jax.numpy only, no flax, no state).

Conventions (as in optax losses): keyword-only hyper-parameters, an ``axis`` for the
class dimension, an optional boolean ``where`` mask, and per-example outputs with no
hidden reduction; reductions are explicit helpers. Unlike optax, whose ``where`` masks
elements, ``where`` here masks whole examples (rows): its shape is the logits shape
without the class axis.

Modules:
  logits             divergences between class distributions: Hinton KD, KL / reverse KL /
                     generalized JSD / TV / skew KL, soft-target cross-entropy.
  methods            logit-level KD methods: DKD, logit standardisation, DIST.
  taid               TAID loss, interpolated target and adaptive schedule.
  self_distillation  born-again CWTM weights and DKPP targets, ground-truth-weighted targets.
  reductions         explicit means over examples: plain, masked or weighted.
  features           feature-level KD: FitNets, attention transfer, RKD, PKT, SP, CKA.
  sequence           token-level KD over [batch, time, vocab] with padding masks and exact
                     gradient-accumulation reductions.
  chunked            memory-bounded KD over large vocabularies from hidden states and
                     projections (chunked_kd_loss per token; chunked_kd_sum_and_count).
  registry           ``get(name)``: the one lookup of a distillation loss by its config name.
"""

from kdjax.losses import (
  chunked,
  features,
  logits,
  methods,
  reductions,
  self_distillation,
  sequence,
  taid,
)
from kdjax.losses.chunked import *  # noqa: F401,F403
from kdjax.losses.features import *  # noqa: F401,F403
from kdjax.losses.logits import *  # noqa: F401,F403
from kdjax.losses.methods import *  # noqa: F401,F403
from kdjax.losses.reductions import *  # noqa: F401,F403
from kdjax.losses.registry import LOSSES, get
from kdjax.losses.self_distillation import *  # noqa: F401,F403
from kdjax.losses.sequence import *  # noqa: F401,F403
from kdjax.losses.taid import *  # noqa: F401,F403

__all__ = [
  *logits.__all__,
  *methods.__all__,
  *taid.__all__,
  *self_distillation.__all__,
  *reductions.__all__,
  *features.__all__,
  *sequence.__all__,
  *chunked.__all__,
  "LOSSES",
  "get",
]
