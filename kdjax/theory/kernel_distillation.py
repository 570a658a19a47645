r"""Closed forms for repeated self-distillation in kernel ridge regression (KRR).

One round of KRR with kernel matrix ``K`` (``[n, n]``, PSD) and plain regulariser
``reg`` (no trace scaling) maps targets ``b`` to training predictions ``A b`` and to
test predictions ``K_* (K + reg I)^{-1} b`` with

.. math::

   A = K (K + \mathrm{reg}\, I)^{-1}.

Self-distillation feeds a round's predictions back as the next round's targets:

* Mobahi, Farajtabar & Bartlett (2020), "Self-Distillation Amplifies Regularization in
  Hilbert Space": round 1 fits ``y``, round t fits the predictions of round t-1, so
  ``p_t = A^t y``.
* Borup & Andersen (2021), "Even your Teacher Needs Guidance: Ground-Truth Targets Dampen
  Regularization Imposed by Self-Distillation": round t >= 2 fits a mixture of labels and
  teacher, ``b_t = alpha y + (1 - alpha) p_{t-1}``.

**Convention for ``alpha``.** Here ``alpha`` is the weight of the ground-truth labels,
so ``alpha = 0`` (the default) is Mobahi's pure self-distillation and ``alpha = 1`` is
plain KRR repeated (no distillation). For a mixture written with the weight ``beta`` on
the teacher, ``b_t = (1 - beta) y + beta p_{t-1}``, pass ``alpha = 1 - beta``.

Everything is computed in the eigenbasis ``K = V diag(d) V^T``, where one round is a
diagonal map with factor ``a_k = d_k / (d_k + reg)`` per eigen-direction, so ``t`` rounds
cost one ``eigh`` and no iteration. Eigenvalues below ``n * eps * max(d)`` are treated as
exact zeros, and ``reg = 0`` means the pseudo-inverse (``a_k = 0`` where ``d_k = 0``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.theory.arguments import (
  check_alpha,
  check_nonnegative,
  check_steps,
  check_targets,
  check_test_kernel,
)

__all__ = [
  "KernelEigensystem",
  "kernel_eigensystem",
  "krr_self_distillation",
  "krr_self_distillation_limit",
  "ConstrainedSelfDistillation",
  "krr_self_distillation_constrained",
  "optimal_alpha",
  "stepwise_optimal_alphas",
  "krr_self_distillation_schedule",
]


# ----------------------------------------------------------------------------------------
# Eigenbasis.


class KernelEigensystem(NamedTuple):
  """``K = vectors @ diag(values) @ vectors.T``; ``values`` [n] (>= 0), ``vectors`` [n, n]."""

  values: jax.Array
  vectors: jax.Array


def kernel_eigensystem(K) -> KernelEigensystem:
  """Eigen-decomposition of a PSD kernel with round-off eigenvalues set to exactly 0.

  Args:
    K: ``[n, n]`` symmetric PSD kernel matrix.

  Returns:
    ``KernelEigensystem(values [n], vectors [n, n])``; eigenvalues below
    ``n * eps * max(d)`` (including slightly negative round-off) become 0, and (traced ``K``
    only: a concrete one raises in :func:`kdjax.checks.check_kernel`) eigenvalues below
    ``-psd_tolerance * max |d|`` become NaN.
  """
  K = checks.check_kernel("K", K)
  values, vectors = jnp.linalg.eigh(K)
  largest = jnp.max(jnp.abs(values))
  cutoff = K.shape[0] * jnp.finfo(values.dtype).eps * largest
  negative = values < -checks.psd_tolerance(values.dtype) * largest
  values = jnp.where(negative, jnp.nan, jnp.where(values > cutoff, values, 0.0))
  return KernelEigensystem(values, vectors)


def shrinkage_factors(values, reg):
  """Per-direction KRR factors ``a = d / (d + reg)`` and ``1 / (d + reg)`` (pinv at 0)."""
  positive = (values > 0) | (reg > 0)
  denom = jnp.where(positive, values + reg, 1.0)
  inverse = jnp.where(positive, 1.0 / denom, 0.0)
  return values * inverse, inverse


def _target_factors(values, *, reg, steps, alpha):
  r"""Per-direction factor ``h_t`` of round t's targets, ``b_t = V diag(h_t) V^T y``.

  With ``r = (1 - alpha) a``: ``h_1 = 1`` and ``h_t = alpha + (1 - alpha) a h_{t-1}``,
  a geometric series, so

  .. math:: h_t = \alpha \frac{1 - r^{t-1}}{1 - r} + r^{t-1}.

  ``1 - r = (reg + alpha d) / (d + reg)`` is formed without cancellation; where it is 0
  (``alpha = 0`` and ``a = 1``) the series is replaced by its limit ``t - 1``.
  """
  a, inverse = shrinkage_factors(values, reg)
  r = (1.0 - alpha) * a
  one_minus_r = jnp.where(inverse > 0, (reg + alpha * values) * inverse, 1.0)
  power = jnp.arange(steps, dtype=values.dtype)[:, None]  # t - 1
  r_pow = r[None, :] ** power  # 0 ** 0 = 1
  safe = one_minus_r > 0
  geometric = jnp.where(safe, (1.0 - r_pow) / jnp.where(safe, one_minus_r, 1.0), power)
  return alpha * geometric + r_pow  # [steps, n]


def apply_eigen_factors(eig: KernelEigensystem, factors, y2d, k_test=None):
  """``V diag(f) V^T y`` per round (train) or ``k_test V diag(f / d~) V^T y`` (test)."""
  z = eig.vectors.T @ y2d  # [n, m]
  basis = eig.vectors if k_test is None else k_test @ eig.vectors  # [n*, n]
  return jnp.einsum("ik,sk,km->sim", basis, factors, z)


def krr_self_distillation(K, y, *, reg, steps, alpha=0.0, k_test=None) -> jax.Array:
  r"""Predictions of rounds 1..steps of KRR self-distillation, in closed form.

  Round 1 fits ``y``; round ``t >= 2`` fits ``b_t = alpha y + (1 - alpha) p_{t-1}``
  where ``p_{t-1}`` are round t-1's training predictions (``alpha = 0``: Mobahi et al.
  2020; ``alpha > 0``: Borup & Andersen 2021, with ``alpha`` the label weight). With
  ``K = V diag(d) V^T``, ``a = d / (d + reg)`` and ``r = (1 - alpha) a``:

  .. math::

     p_t = V \operatorname{diag}(a \odot h_t) V^\top y, \qquad
     f_t(X_*) = K_* V \operatorname{diag}\!\Big(\frac{h_t}{d + \mathrm{reg}}\Big) V^\top y,
     \qquad h_t = \alpha \frac{1 - r^{t-1}}{1 - r} + r^{t-1}.

  For ``alpha = 0`` this is ``p_t = A^t y``: every eigen-direction shrinks by
  ``(d / (d + reg))^t``, so small-eigenvalue directions die first (sparsification).

  Args:
    K: ``[n, n]`` symmetric PSD training kernel.
    y: ``[n]`` targets, or ``[n, m]`` (m target columns distilled independently).
    reg: ridge ``>= 0`` (plain, not scaled by the trace; 0 means pseudo-inverse).
    steps: number of rounds ``>= 1``.
    alpha: weight of the ground-truth labels in rounds ``>= 2``, in ``[0, 1]``.
    k_test: optional ``[n_test, n]`` test-train kernel; if given, the predictions of
      each round's function at the test points are returned instead.

  Returns:
    ``[steps, n]`` (or ``[steps, n_test]``) predictions, ``[steps, n(_test), m]`` for
    ``y: [n, m]``; row ``t - 1`` is round t.

  Raises:
    ValueError: ``K`` not square/symmetric, ``y`` or ``k_test`` of the wrong shape,
      ``reg < 0``, ``alpha`` outside ``[0, 1]``, ``steps < 1``.
  """
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y2d, vector = check_targets(y, n)
  reg = check_nonnegative(reg, "reg")
  steps = check_steps(steps)
  alpha = check_alpha(alpha)
  if k_test is not None:
    k_test = check_test_kernel(k_test, n)
  out = _rounds(K, y2d, reg, alpha, k_test, steps=steps)
  return out[..., 0] if vector else out


@functools.partial(jax.jit, static_argnames=("steps",))
def _rounds(K, y2d, reg, alpha, k_test, *, steps):
  eig = kernel_eigensystem(K)
  h = _target_factors(eig.values, reg=reg, steps=steps, alpha=alpha)
  a, inverse = shrinkage_factors(eig.values, reg)
  return apply_eigen_factors(eig, a * h if k_test is None else h * inverse, y2d, k_test)


def krr_self_distillation_limit(K, y, *, reg, alpha, k_test=None) -> jax.Array:
  r"""The infinite-round limit of :func:`krr_self_distillation`.

  Per eigen-direction ``h_t -> alpha / (1 - r)`` when ``r = (1 - alpha) a < 1``, so

  .. math::

     p_\infty = V \operatorname{diag}\Big(\frac{\alpha a}{1 - (1 - \alpha) a}\Big)
     V^\top y = V \operatorname{diag}\Big(\frac{d}{d + \mathrm{reg}/\alpha}\Big) V^\top y
     = K (K + \tfrac{\mathrm{reg}}{\alpha} I)^{-1} y,

  i.e. plain KRR with the regulariser amplified from ``reg`` to ``reg / alpha`` (Borup &
  Andersen 2021; ``reg / (1 - beta)`` for the teacher weight ``beta = 1 - alpha``), at test points
  ``K_* (K + reg/alpha I)^{-1} y``. Without labels (``alpha = 0``, Mobahi et al. 2020)
  ``p_t = A^t y`` with ``0 <= a < 1`` for every direction when ``reg > 0``: the limit is
  the zero function. With ``reg = 0`` every round interpolates, ``a = 1`` on the range
  of K and 0 on its null space, so the limit (and every round) is the minimum-norm
  interpolant ``K K^+ y`` (``K_* K^+ y`` at test points), for any alpha.

  Args:
    K: ``[n, n]`` symmetric PSD kernel.
    y: ``[n]`` or ``[n, m]`` targets.
    reg: ridge ``>= 0``.
    alpha: label weight in ``[0, 1]``.
    k_test: optional ``[n_test, n]`` test-train kernel.

  Returns:
    ``[n]`` / ``[n_test]`` (``[.., m]`` for matrix ``y``) limit predictions.
  """
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y2d, vector = check_targets(y, n)
  reg = check_nonnegative(reg, "reg")
  alpha = check_alpha(alpha)
  if k_test is not None:
    k_test = check_test_kernel(k_test, n)
  if reg > 0 and alpha == 0:
    rows = n if k_test is None else k_test.shape[0]
    out = jnp.zeros((rows, y2d.shape[1]), jnp.result_type(K, y2d))
  else:
    eig = kernel_eigensystem(K)
    a, inverse = shrinkage_factors(eig.values, reg / alpha if reg > 0 else 0.0)
    out = apply_eigen_factors(eig, (a if k_test is None else inverse)[None], y2d, k_test)[0]
  return out[:, 0] if vector else out


# ----------------------------------------------------------------------------------------
# Mobahi's constrained rounds: the regulariser is set so the fit error equals a budget.


class ConstrainedSelfDistillation(NamedTuple):
  """Result of :func:`krr_self_distillation_constrained`.

  Attributes:
    predictions: ``[steps, n]`` training predictions ``y_t`` of rounds 1..steps (zero
      from the collapse round on).
    regs: ``[steps]`` the regulariser ``c_t`` of each round (``inf`` once collapsed).
    collapse_round: the first round t (1-based) whose solution is the zero function,
      i.e. the first t with ``||y_{t-1}||^2 / n <= eps``; None if no round within
      ``steps`` collapses.
    eigvals: ``[n]`` eigenvalues ``d`` of K (for the diagonal ``B_t`` of the paper:
      ``prod_s d / (d + c_s)``).
    test_predictions: ``[steps, n_test]`` each round's function at the test points
      (``k_test`` given), else None.
  """

  predictions: jax.Array
  regs: jax.Array
  collapse_round: int | None
  eigvals: jax.Array
  test_predictions: jax.Array | None = None


def _budget_regulariser(values, z2, budget):
  r"""Root ``c > 0`` of ``(1/n) sum_k z_k^2 (c / (c + d_k))^2 = budget`` (bisection on log c).

  The left side increases with c from the null-space residual ``N`` (c -> 0) to
  ``(1/n) ||z||^2`` (c -> inf). The bracket ``[d_min+ sqrt((budget - N) / (T - N)) / 2,
  2 d_max s / (1 - s)]`` with ``s = sqrt(budget / T)`` encloses the root.
  """
  n = values.shape[0]
  total = jnp.sum(z2) / n
  null = jnp.sum(jnp.where(values > 0, 0.0, z2)) / n
  d_max = jnp.max(values)
  d_min = jnp.min(jnp.where(values > 0, values, d_max))
  s = jnp.sqrt(budget / total)
  lo = jnp.log(0.5 * d_min * jnp.sqrt((budget - null) / (total - null)))
  hi = jnp.log(2.0 * d_max * s / (1.0 - s))

  def excess(log_c):
    c = jnp.exp(log_c)
    return jnp.sum(z2 * (c / (c + values)) ** 2) / n - budget

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = excess(mid) > 0
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

  lo, hi = jax.lax.fori_loop(0, 200, bisect, (lo, hi))
  return jnp.exp(0.5 * (lo + hi))


@jax.jit
def _budget_round(eig, z, eps, test_basis):
  """One budget round in the eigenbasis: ``(c_t, test predictions or None, z_t)``."""
  c = _budget_regulariser(eig.values, z**2, eps)
  test = None if test_basis is None else test_basis @ (z / (eig.values + c))
  return c, test, eig.values / (eig.values + c) * z


def krr_self_distillation_constrained(
  K, y, *, eps, steps, k_test=None
) -> ConstrainedSelfDistillation:
  r"""Mobahi et al. (2020)'s self-distillation with a fit-error budget per round.

  Round t solves ``min_f ||f||_H^2`` subject to ``(1/n) sum_i (f(x_i) - y_{t-1,i})^2 <=
  eps`` with ``y_0 = y`` and ``y_t = f_t(X)``. If ``||y_{t-1}||^2 / n <= eps`` the zero
  function is feasible and is the solution: the iterates have **collapsed** (and stay
  zero). Otherwise the constraint is active and ``f_t`` is KRR with the Lagrange
  regulariser ``c_t > 0`` that makes the fit error exactly ``eps``: with
  ``z = V^T y_{t-1}``,

  .. math::

     \frac1n \sum_k z_k^2 \Big(\frac{c_t}{c_t + d_k}\Big)^2 = \epsilon, \qquad
     y_t = V \operatorname{diag}\Big(\frac{d}{d + c_t}\Big) z,

  a monotone 1-D root problem (solved by bisection in ``log c``). Mobahi et al. show
  ``||y_t||`` decreases and ``c_t`` increases over rounds, so the iterates collapse after
  finitely many rounds; ``B_t = prod_s diag(d / (d + c_s))`` sparsifies on the way.

  Args:
    K: ``[n, n]`` symmetric PSD kernel.
    y: ``[n]`` targets (one column; Mobahi's setting).
    eps: the mean-squared fit-error budget, ``> 0``.
    steps: number of rounds ``>= 1``.
    k_test: optional ``[n_test, n]`` test-train kernel: round t's function at the test
      points is ``K_* (K + c_t I)^{-1} y_{t-1}``.

  Returns:
    A :class:`ConstrainedSelfDistillation`.

  Raises:
    ValueError: bad ``K``/``y``/``steps``, ``eps <= 0``, or ``eps`` below the error
      of the best fit (the part of ``y`` in the null space of K), which no function meets.
  """
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y = jnp.asarray(y)
  if y.shape != (n,):
    raise ValueError(f"y must have shape [n] = [{n}], got {y.shape}")
  eps = float(eps)
  if not eps > 0 or not math.isfinite(eps):
    raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
  steps = check_steps(steps)
  if k_test is not None:
    k_test = check_test_kernel(k_test, n)
  eig = kernel_eigensystem(K)
  z = eig.vectors.T @ y
  null_residual = float(jnp.sum(jnp.where(eig.values > 0, 0.0, z**2)) / n)
  if null_residual >= eps and float(jnp.sum(z**2)) / n > eps:
    raise ValueError(
      f"eps = {eps!r} is not above the smallest achievable fit error "
      f"{null_residual:.6g} (the part of y in the null space of K)"
    )
  test_basis = None if k_test is None else k_test @ eig.vectors
  predictions, tests, regs, collapse_round = [], [], [], None
  for t in range(1, steps + 1):
    if collapse_round is None and float(jnp.sum(z**2)) / n <= eps:
      collapse_round = t
    if collapse_round is not None:
      predictions.append(jnp.zeros_like(y))
      tests.append(None if k_test is None else jnp.zeros(k_test.shape[0], y.dtype))
      regs.append(jnp.inf)
      continue
    c, test, z = _budget_round(eig, z, jnp.asarray(eps, z.dtype), test_basis)
    tests.append(test)
    predictions.append(eig.vectors @ z)
    regs.append(c)
  return ConstrainedSelfDistillation(
    jnp.stack(predictions),
    jnp.asarray(regs, dtype=eig.values.dtype),
    collapse_round,
    eig.values,
    None if k_test is None else jnp.stack(tests),
  )


# ----------------------------------------------------------------------------------------
# The optimal label weight of Borup & Andersen (2021).


def _evaluation_setup(K, y, reference, reg, k_test):
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y2d, _ = check_targets(y, n)
  reg = check_nonnegative(reg, "reg")
  eig = kernel_eigensystem(K)
  rows = n if k_test is None else check_test_kernel(k_test, n).shape[0]
  ref = jnp.asarray(reference)
  ref2d = ref[:, None] if ref.ndim == 1 else ref
  if ref2d.shape != (rows, y2d.shape[1]):
    raise ValueError(
      f"reference must have shape {(rows,) + tuple(jnp.asarray(y).shape[1:])}"
      f" (the evaluation points x target columns), got {ref.shape}"
    )
  return eig, y2d, ref2d, reg


def optimal_alpha(K, y, reference, *, reg, steps, k_test=None, grid_size=513) -> float:
  r"""The label weight ``alpha`` in [0, 1] whose round-``steps`` predictions best match
  ``reference`` (Borup & Andersen 2021), e.g. the clean function at the training points.

  Minimises :math:`L(\alpha) = \| f_{\text{steps}}(\alpha) - \text{reference} \|^2`.
  For ``steps = 2`` the prediction is affine in alpha,
  ``f_2 = P A y + alpha P (I - A) y`` with ``P = A`` (training points) or
  ``K_* (K + reg I)^{-1}`` (test points), so the minimiser is the closed form

  .. math::

     \alpha^\star = \operatorname{clip}_{[0,1]}
       \frac{\langle P (I - A) y,\; \text{reference} - P A y\rangle}{\|P (I - A) y\|^2}.

  For ``steps > 2``, ``f_t`` is a polynomial of degree ``t - 1`` in alpha (the same
  alpha is used in every round): ``L`` is evaluated on a ``grid_size`` grid in closed
  form and the best cell refined by golden-section search (a 1-D solve).

  Args:
    K: ``[n, n]`` kernel. y: ``[n]`` or ``[n, m]`` noisy labels.
    reference: the target of the evaluation, ``[n(_test)]`` or ``[n(_test), m]``: the
      clean function at the training points, or held-out labels with ``k_test``.
    reg: ridge ``>= 0``. steps: the round to optimise, ``>= 2``.
    k_test: optional ``[n_test, n]`` kernel of the evaluation points.
    grid_size: grid points for ``steps > 2``.

  Returns:
    The optimal alpha as a Python float.
  """
  steps = check_steps(steps, minimum=2)
  eig, y2d, ref2d, reg = _evaluation_setup(K, y, reference, reg, k_test)
  a, inverse = shrinkage_factors(eig.values, reg)
  z = eig.vectors.T @ y2d
  basis = eig.vectors if k_test is None else jnp.asarray(k_test) @ eig.vectors
  weight = a if k_test is None else inverse  # P = basis diag(weight) V^T
  if steps == 2:
    base = basis @ ((weight * a)[:, None] * z)
    slope = basis @ ((weight * (1.0 - a))[:, None] * z)
    denom = float(jnp.sum(slope**2))
    if denom == 0.0:
      return 0.0
    return float(np.clip(float(jnp.sum(slope * (ref2d - base))) / denom, 0.0, 1.0))

  def loss(alphas):
    def one(alpha):
      h = _target_factors(eig.values, reg=reg, steps=steps, alpha=alpha)[-1]
      return jnp.sum((basis @ ((weight * h)[:, None] * z) - ref2d) ** 2)

    return jax.vmap(one)(alphas)

  loss = jax.jit(loss)
  grid = jnp.linspace(0.0, 1.0, grid_size, dtype=eig.values.dtype)
  best = int(jnp.argmin(loss(grid)))
  lo, hi = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, grid_size - 1)])
  golden = (math.sqrt(5.0) - 1.0) / 2.0
  for _ in range(60):
    x1, x2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
    l1, l2 = loss(jnp.asarray([x1, x2], eig.values.dtype))
    lo, hi = (lo, x2) if l1 <= l2 else (x1, hi)
  candidates = jnp.asarray([0.5 * (lo + hi), float(grid[best])], eig.values.dtype)
  return float(candidates[int(jnp.argmin(loss(candidates)))])


def stepwise_optimal_alphas(K, y, reference, *, reg, steps, k_test=None):
  r"""Borup & Andersen (2021)'s per-round optimal label weights, in closed form.

  Round t >= 2 fits ``b_t = alpha_t y + (1 - alpha_t) p_{t-1}`` where ``p_{t-1}`` are the
  previous round's training predictions. Its evaluation is affine in ``alpha_t``,
  ``f_t = P p_{t-1} + alpha_t P (y - p_{t-1})``, so the greedy optimum against
  ``reference`` is

  .. math::

     \alpha_t^\star = \operatorname{clip}_{[0,1]}
       \frac{\langle P (y - p_{t-1}),\; \text{reference} - P p_{t-1} \rangle}
            {\| P (y - p_{t-1}) \|^2},

  with ``P = A`` at the training points or ``K_* (K + reg I)^{-1}`` at test points.

  Args:
    K, y, reference, reg, k_test: as in :func:`optimal_alpha`.
    steps: number of rounds ``>= 2``.

  Returns:
    ``(alphas [steps - 1], predictions [steps, n(_test)(, m)])``: the weight of rounds
    2..steps and the evaluation predictions of rounds 1..steps.
  """
  steps = check_steps(steps, minimum=2)
  eig, y2d, ref2d, reg = _evaluation_setup(K, y, reference, reg, k_test)
  vector = jnp.asarray(y).ndim == 1
  a, inverse = shrinkage_factors(eig.values, reg)
  basis = eig.vectors if k_test is None else jnp.asarray(k_test) @ eig.vectors
  weight = a if k_test is None else inverse
  z = eig.vectors.T @ y2d  # labels in the eigenbasis
  previous = a[:, None] * z  # round 1 training predictions
  outputs, alphas = [basis @ (weight[:, None] * z)], []
  for _ in range(2, steps + 1):
    base = basis @ (weight[:, None] * previous)
    slope = basis @ (weight[:, None] * (z - previous))
    denom = jnp.sum(slope**2)
    alpha = jnp.where(
      denom > 0, jnp.sum(slope * (ref2d - base)) / jnp.where(denom > 0, denom, 1.0), 0.0
    )
    alpha = jnp.clip(alpha, 0.0, 1.0)
    outputs.append(base + alpha * slope)
    previous = a[:, None] * (alpha * z + (1.0 - alpha) * previous)
    alphas.append(alpha)
  predictions = jnp.stack(outputs)
  return jnp.stack(alphas), predictions[..., 0] if vector else predictions


def krr_self_distillation_schedule(K, y, *, reg, alphas, k_test=None) -> jax.Array:
  r"""Like :func:`krr_self_distillation` with a different label weight in every round.

  Round 1 fits ``y``; round ``t >= 2`` fits ``b_t = alphas[t-2] y + (1 - alphas[t-2])
  p_{t-1}``. Per eigen-direction the target factor follows ``h_1 = 1``,
  ``h_t = alpha_t + (1 - alpha_t) a h_{t-1}`` (a product form instead of a geometric
  series), e.g. for the weights of :func:`stepwise_optimal_alphas`.

  Args:
    K: ``[n, n]`` kernel. y: ``[n]`` or ``[n, m]``. reg: ridge ``>= 0``.
    alphas: ``[steps - 1]`` label weights in ``[0, 1]`` of rounds 2..steps.
    k_test: optional ``[n_test, n]`` test-train kernel.

  Returns:
    ``[steps, n(_test)(, m)]`` predictions of rounds 1..steps.
  """
  K = checks.check_kernel("K", K)
  n = K.shape[0]
  y2d, vector = check_targets(y, n)
  reg = check_nonnegative(reg, "reg")
  alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
  for i, value in enumerate(alphas):
    check_alpha(value, f"alphas[{i}]")
  if k_test is not None:
    k_test = check_test_kernel(k_test, n)
  eig = kernel_eigensystem(K)
  a, inverse = shrinkage_factors(eig.values, reg)
  h = [jnp.ones_like(a)]
  for value in alphas:
    h.append(value + (1.0 - value) * a * h[-1])
  h = jnp.stack(h)
  out = apply_eigen_factors(eig, a * h if k_test is None else h * inverse, y2d, k_test)
  return out[..., 0] if vector else out
