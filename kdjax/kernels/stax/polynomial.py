"""Polynomial nonlinearities: `Polynomial`, `Monomial`, `Hermite`, `RectifiedMonomial`.

Kernels follow from Gaussian moments. For the NTK, Price's theorem gives
`d E[f(u) f(v)] / dc = E[f'(u) f'(v)]`, the `dot` of
`kdjax.kernels.stax.elementwise`.

References:
  Cho and Saul, 2009, "Kernel Methods for Deep Learning" (arc-cosine kernels
    of degree n, `RectifiedMonomial`).
  Han et al., 2022, "Fast Neural Kernel Embeddings for General Activations"
    (Hermite expansions, `Polynomial`, `Hermite`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from kdjax.kernels.stax.elementwise import elementwise


def _check_degree(name: str, degree) -> int:
  if not isinstance(degree, (int, np.integer)) or isinstance(degree, bool) or degree < 0:
    raise ValueError(f"{name}: degree must be a non-negative int, got {degree!r}")
  return int(degree)


def Polynomial(coef: Sequence[float]):
  r"""`coef[0] + coef[1] x + ... + coef[n] x^n` (numpy.polynomial's order).

  Expanding `f(sqrt(v) z)` in probabilists' Hermite polynomials, `He_l` with
  coefficient `v^{l/2} b_l(v)`, and using `E[He_l(z) He_m(z')] = l! rho^l
  [l = m]` for correlated standard normals:

  .. math::
    K' = \sum_l l!\, b_l(v_1) b_l(v_2)\, c^l, \quad
    \text{dot} = \sum_{l \ge 1} l \cdot l!\, b_l(v_1) b_l(v_2)\, c^{l-1}, \quad
    b_l(v) = \sum_i \text{coef}_{2i+l} \frac{(2i+l)!}{2^i\, i!\, l!} v^i.

  Args:
    coef: coefficients, lowest degree first.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  coef = np.asarray(coef, dtype=np.float64)
  if coef.ndim != 1 or not np.all(np.isfinite(coef)):
    raise ValueError(f"coef must be a sequence of finite numbers, got {coef!r}")
  n = len(coef)
  # b[l][i]: coefficient of v^i in b_l(v).
  b = [
    [
      coef[2 * i + l] * math.factorial(2 * i + l) / (2**i * math.factorial(i) * math.factorial(l))
      for i in range((n - 1 - l) // 2 + 1)
    ]
    for l in range(n)
  ]

  def b_l(l, v):
    return sum(c * v**i for i, c in enumerate(b[l]))

  def pair_fn(c, v1, v2):
    nngp, dot = 0.0, 0.0
    for l in range(n):
      term = math.factorial(l) * b_l(l, v1) * b_l(l, v2)
      nngp = nngp + term * c**l
      if l:
        dot = dot + l * term * c ** (l - 1)
    return nngp, dot

  def fn(x):
    return jnp.polyval(jnp.asarray(coef[::-1], x.dtype), x)

  return elementwise("Polynomial", fn, pair_fn)


def Monomial(degree: int):
  """`x^degree`: `Polynomial([0] * degree + [1])`."""
  degree = _check_degree("Monomial", degree)
  return Polynomial([0.0] * degree + [1.0])


def Hermite(degree: int):
  r"""`He_n(x) / sqrt(n!)`, the normalised probabilists' Hermite polynomial.

  For unit-variance inputs (neural-tangents assumes, and does not check, that
  the inputs have unit norm across channels) `E[He_n(u) He_n(v)] = n! c^n`:

  .. math::
    K' = c^n, \qquad \Theta' = n\, c^{n-1}\, \Theta.
  """
  degree = _check_degree("Hermite", degree)
  poly = np.polynomial.hermite_e.herme2poly([0] * degree + [1]) / math.sqrt(math.factorial(degree))

  def fn(x):
    return jnp.polyval(jnp.asarray(poly[::-1], x.dtype), x)

  def pair_fn(c, v1, v2):
    return c**degree, (degree * c ** (degree - 1) if degree else 0.0)

  return elementwise("Hermite", fn, pair_fn)


def _arc_cosine_terms(n: int) -> dict:
  """`J_n(theta)` of Cho & Saul as `{(a, b, e): coef}` for `(pi - theta)^a cos^b sin^e`.

  `J_n = (-1)^n sin^{2n+1} (1/sin d/dtheta)^n ((pi - theta) / sin)`, applied
  symbolically to monomials; every exponent of the result is >= 0, so `J_n`
  is finite at `theta = 0` (the kernel diagonal).
  """
  terms = {(1, 0, -1): 1.0}
  for _ in range(n):
    new = {}
    for (a, b, e), k in terms.items():
      # d/dtheta, then divide by sin (e - 1).
      for key, value in (
        ((a - 1, b, e - 1), -a * k),
        ((a, b - 1, e), -b * k),
        ((a, b + 1, e - 2), e * k),
      ):
        if value:
          new[key] = new.get(key, 0.0) + value
    terms = new
  return {(a, b, e + 2 * n + 1): (-1) ** n * k for (a, b, e), k in terms.items()}


def _rectified_moment(n: int):
  """`(c, v1, v2) -> E[u_+^n v_+^n] = (v1 v2)^{n/2} J_n(theta) / (2 pi)`."""
  terms = _arc_cosine_terms(n)

  def moment(c, v1, v2):
    prod = v1 * v2
    r = jnp.sqrt(jnp.maximum(prod, 0.0))
    cos = jnp.clip(c / jnp.where(r > 0, r, 1.0), -1.0, 1.0)
    s_sq = 1 - cos**2
    sin = jnp.sqrt(jnp.where(s_sq > 8 * jnp.finfo(s_sq.dtype).eps, s_sq, 0.0))
    theta = jnp.where(r > 0, jnp.arctan2(sin, cos), math.pi / 2)
    total = sum(k * (math.pi - theta) ** a * cos**b * sin**e for (a, b, e), k in terms.items())
    return r**n * total / (2 * math.pi)

  return moment


def RectifiedMonomial(degree: int):
  r"""`x^n` for `x >= 0`, else 0: the arc-cosine kernel of degree `n`.

  .. math::
    K' = \frac{(v_1 v_2)^{n/2}}{2\pi} J_n(\theta), \qquad
    \text{dot} = n^2 K'_{n-1}

  (Cho & Saul, 2009), with `theta = arccos(c / sqrt(v1 v2))`; the NTK after
  `n = 0` (a step) is zero, as in neural-tangents. Unlike neural-tangents
  0.6.5, which gives NaN there, the kernel diagonal (`theta = 0`) is finite.
  """
  degree = _check_degree("RectifiedMonomial", degree)
  moment = _rectified_moment(degree)
  lower = _rectified_moment(degree - 1) if degree else None

  def pair_fn(c, v1, v2):
    dot = degree**2 * lower(c, v1, v2) if degree else 0.0
    return moment(c, v1, v2), dot

  return elementwise("RectifiedMonomial", lambda x: jnp.where(x >= 0, x**degree, 0.0), pair_fn)
