r"""Bounds on the round at which Mobahi et al.'s budget self-distillation collapses.

Mobahi, Farajtabar & Bartlett (2020), "Self-Distillation Amplifies Regularization in
Hilbert Space", bound the number of rounds before the iterates of
:func:`kdjax.theory.krr.krr_self_distillation_constrained` collapse to zero by the ratio of
the label norm to the budget and the condition number of the kernel. The argument, as
derived here for the collapse round ``T`` (the first round whose solution is zero, the
``collapse_round`` of that function), with ``r_t = ||y_t|| / sqrt(n eps)`` and
``kappa = d_max / d_min`` over the positive eigenvalues of ``K``:

* every active round fits its targets with error exactly ``sqrt(n eps)``, so by the triangle
  inequality ``r_t >= r_{t-1} - 1``;
* in the eigenbasis ``y_t = diag(a) z`` and the residual is ``diag(1 - a) z`` with
  ``a_k = d_k / (d_k + c_t)``, so ``||y_t|| <= a_max ||z||`` and ``sqrt(n eps) <= (1 -
  a_min) ||z||``, hence ``r_t <= r_{t-1} - (1 - a_max) / (1 - a_min) <= r_{t-1} - 1 /
  kappa`` (``(d_min + c)/(d_max + c) >= 1/kappa``). Round 1 removes the part of ``y`` in
  the null space of K (``a = 0`` there), after which the bound holds for every round.

The iterates collapse at the first ``T`` with ``r_{T-1} <= 1``, so

.. math::

   \lceil r_0 \rceil \;\le\; T \;\le\; 1 + s + \lceil \kappa (r_0 - 1) \rceil,

with ``s = 1`` if ``y`` has a component in the null space of ``K`` and 0 otherwise (and
``T = 1`` when ``r_0 <= 1``). For ``K = c I`` (``kappa = 1``) both bounds are ``ceil(r_0)``
and tight; for smooth kernels ``kappa`` is huge and the upper bound is loose by orders of
magnitude, while the lower bound stays within a few rounds of the truth.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from kdjax.theory import krr

__all__ = ["CollapseBounds", "collapse_round_bounds"]


class CollapseBounds(NamedTuple):
  """Bounds on the collapse round ``T`` of the budget rounds.

  Attributes:
    lower: ``ceil(r_0)`` (an int >= 1).
    upper: ``1 + s + ceil(kappa (r_0 - 1))`` (a float; ``inf`` if K has no positive
      eigenvalue).
    ratio: ``r_0 = ||y|| / sqrt(n eps)``.
    condition: ``kappa = d_max / d_min`` over K's positive eigenvalues.
  """

  lower: int
  upper: float
  ratio: float
  condition: float


def collapse_round_bounds(K, y, *, eps) -> CollapseBounds:
  r"""Lower and upper bounds on the collapse round of Mobahi et al.'s budget rounds.

  See the module docstring for the derivation.

  Args:
    K: ``[n, n]`` symmetric PSD kernel (concrete). y: ``[n]`` labels.
    eps: the mean-squared fit budget ``> 0`` (as in ``krr_self_distillation_constrained``).

  Returns:
    A :class:`CollapseBounds`.
  """
  K = krr.check_kernel(K)
  k = np.asarray(K, dtype=np.float64)
  n = k.shape[0]
  y = np.asarray(y, dtype=np.float64)
  if y.shape != (n,):
    raise ValueError(f"y must have shape [n] = [{n}], got {y.shape}")
  eps = float(eps)
  if not eps > 0 or not math.isfinite(eps):
    raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
  values, vectors = np.linalg.eigh((k + k.T) / 2)
  positive = values > n * np.finfo(np.float64).eps * max(np.max(np.abs(values)), 0.0)
  ratio = float(np.linalg.norm(y) / math.sqrt(n * eps))
  if not positive.any():
    return CollapseBounds(1, 1.0 if ratio <= 1 else math.inf, ratio, math.inf)
  condition = float(values[positive].max() / values[positive].min())
  if ratio <= 1:
    return CollapseBounds(1, 1.0, ratio, condition)
  z = vectors.T @ y
  null_part = np.linalg.norm(z[~positive]) > 1e-12 * np.linalg.norm(z)
  upper = 1 + int(null_part) + math.ceil(condition * (ratio - 1))
  return CollapseBounds(max(1, math.ceil(ratio)), float(upper), ratio, condition)
