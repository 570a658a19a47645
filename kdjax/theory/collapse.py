r"""Bounds on the round at which Mobahi et al.'s budget self-distillation collapses.

Mobahi, Farajtabar & Bartlett (2020), "Self-Distillation Amplifies Regularization in
Hilbert Space", bound the number of meaningful rounds of
:func:`kdjax.theory.kernel_distillation.krr_self_distillation_constrained` before the iterates
collapse.
**The bounds below are kdjax's own derivation in that setting; the paper's exact statement
(its round counts, constants and round-counting convention) could not be obtained offline
and has not been compared with them.**

Setting. Round t fits ``y_{t-1}`` (``y_0 = y``) within the budget ``(1/n) ||f(X) -
y_{t-1}||^2 <= eps``. With ``s = sqrt(n eps)`` and ``r_t = ||y_t|| / s``: if ``r_{t-1} <=
1`` the zero function is the solution (the iterates have collapsed); otherwise the budget is
met with equality by KRR with the multiplier ``c_t > 0``, ``y_t = K (K + c_t I)^{-1}
y_{t-1}``. In K's eigenbasis the factors are ``a_k = d_k / (d_k + c_t)`` (0 on the null
space) and the residual factors ``1 - a_k = c_t / (c_t + d_k)``. Let ``d_min``, ``d_max`` be
the smallest and largest positive eigenvalues, ``kappa = d_max / d_min``, and split
``r_{t-1}^2 = rho^2 + nu^2`` into the parts in K's range (``rho``) and null space (``nu``,
nonzero only at t = 1), with ``m = sqrt(1 - nu^2)`` (the budget is feasible only if ``nu <
1``).

Round t, when active (``r_{t-1} > 1``), satisfies:

* **multiplier:** the residual norm is exactly ``s`` and every residual factor lies in
  ``[c/(c + d_max), 1]``, and in ``[c/(c + d_max), c/(c + d_min)]`` on the range, so

  .. math::

     \frac{d_{\min}\, m}{\rho - m} \;\le\; c_t \;\le\; \frac{d_{\max}}{r_{t-1} - 1}

  (for ``nu = 0``: ``d_min / (r - 1) <= c_t <= d_max / (r - 1)``; each side is attained
  when ``y_{t-1}`` lies in the ``d_min`` or ``d_max`` eigenspace);
* **norm, budget:** ``y_{t-1} = y_t + (y_{t-1} - y_t)`` with the residual of norm exactly
  ``s`` and ``<y_t, y_{t-1} - y_t> = sum_k a_k (1 - a_k) z_k^2 >= 0``, so

  .. math::

     r_{t-1} - 1 \;\le\; r_t \;\le\; \sqrt{r_{t-1}^2 - 1}

  (left: the triangle inequality, equality when ``y_{t-1}`` lies in one eigenspace; right:
  nearly attained when the labels sit on eigenvalues far apart, each ``a_k`` near 0 or 1);
* **norm, condition number:** ``r_t <= rho d_max / (d_max + c_t)`` with the lower bound on
  ``c_t``:

  .. math::

     r_t \;\le\; \varphi(\rho, m) = \frac{\kappa \rho (\rho - m)}{\kappa (\rho - m) + m},

  below ``sqrt(r^2 - 1)`` for kappa small against ``r`` (``varphi(r, 1) = r - 1`` at
  ``kappa = 1``) and near the end (``varphi(r, 1) <= 1`` once ``r <= 1 + kappa^{-1/2}``).
  The multiplier route also gives ``r_t >= rho (r - 1) / (r - 1 + kappa)`` (for ``nu = 0`` a
  drop of at most ``kappa`` per round, so at least ``(r_0 - 1) / kappa`` rounds); that is
  never above ``r - 1``, so a kappa-dependent lower bound of this kind is looser than the
  triangle one.

Collapse round ``T`` (the first round whose solution is zero, ``collapse_round`` of the
iterates: ``T - 1`` active rounds). A drop of at most 1 per round gives ``T >= ceil(r_0)``.
``u -> min(varphi(u), sqrt(u^2 - 1))`` is increasing, so ``r_t`` stays below its iterates
``u_t`` (``m`` as above at round 1, ``m = 1`` after it, the null-space part being gone):

.. math::

   \lceil r_0 \rceil \;\le\; T \;\le\; 1 + \min\{t : u_t \le 1\}
   \;\le\; \min\big(\lceil r_0^2 \rceil,\; 1 + [\nu > 0] + \lceil \kappa (r_0 - 1) \rceil\big)

(``T = 1`` when ``r_0 <= 1``; ``r^2`` drops by at least 1 and ``r`` by at least ``1 /
kappa`` per round). For ``K = c I`` both bounds equal ``ceil(r_0)``; with labels spread
evenly over eigenvalues orders of magnitude apart ``T = ceil(r_0^2)``: each bound is attained.
For smooth kernels (``kappa`` in the 1e8..1e14) the upper bound is ``ceil(r_0^2)``, kappa
playing no part.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from kdjax import checks

__all__ = ["CollapseBounds", "RoundBounds", "collapse_round_bounds", "round_bounds"]

# Past this many iterated rounds the remainder is bounded in closed form (r^2 drops by at
# least 1 and r by at least 1 / kappa per round).
_MAX_ITERATED_ROUNDS = 100_000


class CollapseBounds(NamedTuple):
  """Bounds on the collapse round ``T`` of the budget rounds.

  Attributes:
    lower: ``ceil(r_0)`` (an int >= 1).
    upper: ``1 +`` the number of iterations of ``u -> min(varphi(u), sqrt(u^2 - 1))`` from
      ``r_0`` to ``<= 1``, at most ``ceil(r_0^2)`` (a float; ``inf`` if K has no positive
      eigenvalue).
    ratio: ``r_0 = ||y|| / sqrt(n eps)``.
    condition: ``kappa = d_max / d_min`` over K's positive eigenvalues.
  """

  lower: int
  upper: float
  ratio: float
  condition: float


class RoundBounds(NamedTuple):
  """Bounds on one active budget round, given ``r = ||y_{t-1}|| / sqrt(n eps) > 1``.

  Attributes:
    reg_lower: ``d_min m / (rho - m)``.
    reg_upper: ``d_max / (r - 1)``.
    ratio_lower: ``r - 1``.
    ratio_upper_budget: ``sqrt(r^2 - 1)``.
    ratio_upper_condition: ``varphi(rho, m) = kappa rho (rho - m) / (kappa (rho - m) + m)``.
  """

  reg_lower: float
  reg_upper: float
  ratio_lower: float
  ratio_upper_budget: float
  ratio_upper_condition: float

  @property
  def ratio_upper(self) -> float:
    """The smaller of the two upper bounds on ``r_t``."""
    return min(self.ratio_upper_budget, self.ratio_upper_condition)


def round_bounds(ratio, null_ratio, d_min, d_max) -> RoundBounds:
  r"""Bounds on the multiplier ``c_t`` and on ``r_t`` of one active budget round.

  kdjax's own derivation (module docstring).

  Args:
    ratio: ``r = ||y_{t-1}|| / sqrt(n eps)``, ``> 1``.
    null_ratio: ``nu = ||(I - P) y_{t-1}|| / sqrt(n eps)`` in ``[0, 1)`` with ``P`` the
      projection on K's range (0 after round 1).
    d_min: smallest positive eigenvalue of K.
    d_max: largest eigenvalue of K, ``>= d_min``.

  Returns:
    A :class:`RoundBounds`.

  Raises:
    ValueError: ``ratio <= 1`` (the round is not active), ``null_ratio`` outside ``[0, 1)``,
      or not ``0 < d_min <= d_max < inf``.
  """
  r, nu, d_min, d_max = float(ratio), float(null_ratio), float(d_min), float(d_max)
  if not r > 1 or not math.isfinite(r):
    raise ValueError(f"ratio must be a finite number > 1 (an active round), got {ratio!r}")
  if not 0 <= nu < 1:
    raise ValueError(f"null_ratio must be in [0, 1), got {null_ratio!r}")
  if not 0 < d_min <= d_max < math.inf:
    raise ValueError(f"need 0 < d_min <= d_max < inf, got d_min={d_min!r}, d_max={d_max!r}")
  rho, m = math.sqrt(r * r - nu * nu), math.sqrt(1.0 - nu * nu)
  kappa, gap = d_max / d_min, rho - m  # gap > 0 as r > 1
  return RoundBounds(
    reg_lower=d_min * m / gap,
    reg_upper=d_max / (r - 1.0),
    ratio_lower=r - 1.0,
    ratio_upper_budget=math.sqrt(r * r - 1.0),
    ratio_upper_condition=kappa * rho * gap / (kappa * gap + m),
  )


def collapse_round_bounds(K: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, eps):
  r"""Lower and upper bounds on the collapse round of Mobahi et al.'s budget rounds.

  kdjax's own derivation (module docstring); the paper's exact statement could not be
  checked.

  Args:
    K: ``[n, n]`` symmetric PSD kernel (concrete). y: ``[n]`` labels.
    eps: the mean-squared fit budget ``> 0`` (as in ``krr_self_distillation_constrained``).

  Returns:
    A :class:`CollapseBounds`.

  Raises:
    ValueError: bad ``K`` or ``y``, ``eps <= 0``, or ``eps`` not above the part of ``y`` in
      K's null space (no fit meets the budget), as in
      :func:`~kdjax.theory.kernel_distillation.krr_self_distillation_constrained`.
  """
  K = checks.check_kernel("K", K)
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
  scale = math.sqrt(n * eps)
  ratio = float(np.linalg.norm(y) / scale)
  if not positive.any():
    return CollapseBounds(1, 1.0 if ratio <= 1 else math.inf, ratio, math.inf)
  d_min, d_max = float(values[positive].min()), float(values[positive].max())
  condition = d_max / d_min
  if ratio <= 1:
    return CollapseBounds(1, 1.0, ratio, condition)
  null_ratio = float(np.linalg.norm((vectors.T @ y)[~positive]) / scale)
  if null_ratio >= 1:
    raise ValueError(
      f"eps = {eps!r} is not above the smallest achievable fit error "
      f"{null_ratio**2 * eps:.6g} (the part of y in the null space of K)"
    )
  u, rounds = ratio, 0
  while u > 1 and rounds < _MAX_ITERATED_ROUNDS:
    u = round_bounds(u, null_ratio, d_min, d_max).ratio_upper
    null_ratio, rounds = 0.0, rounds + 1
  if u > 1:
    rounds += min(math.ceil(u * u - 1), math.ceil(condition * (u - 1)))
  return CollapseBounds(max(1, math.ceil(ratio)), float(1 + rounds), ratio, condition)
