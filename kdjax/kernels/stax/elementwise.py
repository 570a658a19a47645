"""Pointwise nonlinearities: from a dual kernel, by quadrature, and in closed form.

A nonlinearity `phi` applied to a Gaussian pre-activation with covariance
`[[v1, c], [c, v2]]` maps the kernels as

.. math::
  K' = E[\\phi(u) \\phi(v)], \\qquad \\Theta' = E[\\phi'(u) \\phi'(v)] \\, \\Theta,

so every such layer is a `pair_fn(c, v1, v2) -> (K', dot)` applied entrywise, `c` the
pre-activation covariance of two points, `v1`, `v2` their variances and
`dot = E[phi'(u) phi'(v)]`; `elementwise` turns one into a layer. `Elementwise` takes a
user's dual kernel, `ElementwiseNumerical` integrates any smooth `phi` by quadrature, and
the named layers (`Relu`, `Erf`, `Gelu`, ...) are closed forms. The formulas and names
follow neural-tangents 0.6.5, whose values the tests reproduce.

References:
  Williams, 1997, "Computing with Infinite Networks" (Erf).
  Cho and Saul, 2009, "Kernel Methods for Deep Learning" (ReLU, Sign).
  Tsuchida, Roosta, Gallagher, 2018, "Invariance of Weight Distributions in
    Rectified MLPs" (ABRelu).
  Tsuchida, Pearce, van der Heide, Roosta, Gallagher, 2021, "Avoiding Kernel
    Fixed Points: Computing with ELU and GELU Infinite Networks" (Gelu).
  Han et al., 2022, "Fast Neural Kernel Embeddings for General Activations"
    (Elementwise, ElementwiseNumerical, Sin, Cos, Rbf, Exp, Gaussian).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.kernels.stax.covariance import outer, single, variances, with_covs
from kdjax.kernels.stax.layer import layer

PairFn = Callable[[jax.Array, jax.Array, jax.Array], tuple]


def elementwise(name: str, fn: Callable[[jax.Array], jax.Array] | None, pair_fn: PairFn):
  """The layer applying `fn` pointwise, with kernels from `pair_fn`.

  Args:
    name: layer name for error messages.
    fn: the finite network's nonlinearity (None: `apply_fn` raises).
    pair_fn: `(c, v1, v2) -> (K', dot)` on broadcastable arrays, where `c` is
      a covariance and `v1`, `v2` the variances of its two points.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """

  def pair(c, v1, v2):
    nngp, dot = pair_fn(c, v1, v2)
    return jnp.broadcast_to(nngp, c.shape), dot

  def transform(k):
    k = single(name, k)
    var1 = variances(k.cov1, k)
    var2 = var1 if k.cov2 is None else variances(k.cov2, k)
    nngp, dot = pair(k.nngp, *outer(var1, var2, k, pairs=True))
    ntk = None if k.ntk is None else dot * k.ntk

    def cov_fn(cov):
      v = variances(cov, k)
      return pair(cov, *outer(v, v, k, pairs=False))[0]

    return with_covs(k, nngp, ntk, cov_fn)

  def apply_fn(params, x, **kwargs):
    if fn is None:
      raise ValueError(f"{name} was built without `fn`: it has a kernel but no finite network")
    return fn(x)

  return layer(lambda key, shape: (shape, ()), apply_fn, transform)


def Elementwise(
  fn: Callable[[jax.Array], jax.Array] | None = None,
  nngp_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
  d_nngp_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
):
  """A nonlinearity `fn` given its dual kernel `nngp_fn(cov12, var1, var2)`.

  Args:
    fn: the scalar nonlinearity, for `apply_fn` (None: `apply_fn` raises).
    nngp_fn: `(cov12, var1, var2) -> E[fn(u) fn(v)]` for a centred bivariate
      normal `(u, v)`, scalar in, scalar out.
    d_nngp_fn: `(cov12, var1, var2) -> E[fn'(u) fn'(v)]`; None for the
      derivative of `nngp_fn` in `cov12` by autodiff (Price's theorem).

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if nngp_fn is None:
    raise ValueError(
      "Elementwise needs nngp_fn (use ElementwiseNumerical for a nonlinearity without one)"
    )
  if fn is not None and not callable(fn):
    raise ValueError(f"fn must be callable, got {fn!r}")
  nngp_vec = jnp.vectorize(nngp_fn)
  d_nngp_vec = jnp.vectorize(jax.grad(nngp_fn) if d_nngp_fn is None else d_nngp_fn)

  def pair_fn(c, v1, v2):
    return nngp_vec(c, v1, v2), d_nngp_vec(c, v1, v2)

  name = getattr(fn if fn is not None else nngp_fn, "__name__", "Elementwise")
  return elementwise(f"Elementwise({name})", fn, pair_fn)


def ElementwiseNumerical(
  fn: Callable[[jax.Array], jax.Array],
  deg: int,
  df: Callable[[jax.Array], jax.Array] | None = None,
):
  r"""Any smooth nonlinearity, its kernels by Gauss–Hermite quadrature of degree `deg`.

  With Gauss–Hermite nodes `x_i` and weights `w_i` (for `e^{-x^2}`),
  `u = sqrt(2 v1) x` and `v = c / sqrt(v1 / 2) x + sqrt(2 (v2 - c^2 / v1)) y`:

  .. math::
    E[f(u) f(v)] \approx \frac{1}{\pi} \sum_{i, j} w_i w_j f(u_i) f(v_{ij}),

  and the same with `f'` (autodiff of `fn` unless `df` is given) for the NTK.
  Exact for polynomials of degree `< 2 deg`; not suited to kinks (ReLU, Abs).

  Args:
    fn: the scalar nonlinearity, e.g. `jnp.tanh`.
    deg: number of quadrature nodes per dimension, `>= 1` (25 is a good start
      for smooth functions; cost grows as `deg^2`).
    df: the derivative of `fn`; None for autodiff.

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if not callable(fn):
    raise ValueError(f"fn must be callable, got {fn!r}")
  if not isinstance(deg, int) or deg < 1:
    raise ValueError(f"deg must be a positive int, got {deg!r}")
  nodes, weights = np.polynomial.hermite.hermgauss(deg)
  d_fn = jnp.vectorize(jax.grad(fn)) if df is None else df

  def integrate(f, c, v1, v2):
    shape = jnp.broadcast_shapes(c.shape, v1.shape, v2.shape)
    x = nodes.reshape((deg, 1) + (1,) * len(shape))
    y = nodes.reshape((1, deg) + (1,) * len(shape))
    tiny = jnp.finfo(c.dtype).tiny
    u = jnp.sqrt(2 * v1) * x
    v = (
      c / jnp.sqrt(jnp.maximum(v1 / 2, tiny)) * x
      + jnp.sqrt(jnp.maximum(2 * (v2 - c**2 / jnp.maximum(v1, tiny)), 0.0)) * y
    )
    grid = jnp.asarray(np.outer(weights, weights) / np.pi, c.dtype)
    return jnp.tensordot(grid, f(u) * f(v), axes=((0, 1), (0, 1)))

  def pair_fn(c, v1, v2):
    return integrate(fn, c, v1, v2), integrate(d_fn, c, v1, v2)

  name = getattr(fn, "__name__", "fn")
  return elementwise(f"ElementwiseNumerical({name}, deg={deg})", fn, pair_fn)


def _atan2(y: jax.Array, x: jax.Array) -> jax.Array:
  """`arctan2(y, x)`; in float32 a polynomial that XLA can vectorise.

  XLA's CPU `atan2` costs ~50 ns per element, more than the rest of a ReLU
  layer together. Below float64 this uses the Cephes `atanf` reduction and
  polynomial (about 1 ulp); float64 keeps `jnp.arctan2`.
  """
  if jnp.finfo(y.dtype).bits >= 64:
    return jnp.arctan2(y, x)
  ay, ax = jnp.abs(y), jnp.abs(x)
  big, small = jnp.maximum(ay, ax), jnp.minimum(ay, ax)
  ratio = small / jnp.where(big > 0, big, 1.0)  # in [0, 1]
  reduce = ratio > 0.41421356237309503  # tan(pi / 8)
  t = jnp.where(reduce, (ratio - 1) / (ratio + 1), ratio)
  z = t * t
  poly = (
    ((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1
  ) * z * t + t
  angle = jnp.where(reduce, math.pi / 4 + poly, poly)
  angle = jnp.where(ay > ax, math.pi / 2 - angle, angle)
  angle = jnp.where(x < 0, math.pi - angle, angle)
  return jnp.where(y < 0, -angle, angle)


def _arccos_of_one_minus(gap: jax.Array) -> jax.Array:
  """`arccos(1 - gap)` for `gap` in [0, 1], a polynomial XLA vectorises.

  Abramowitz and Stegun, 1964, "Handbook of Mathematical Functions", 4.4.46:
  `arccos(x) = sqrt(1 - x) sum_k a_k x^k` on [0, 1], error <= 2e-8. Taking
  `gap = 1 - x` as input keeps its precision near `x = 1`.
  """
  x = 1.0 - gap
  poly = -0.0012624911
  for coef in (
    0.0066700901,
    -0.0170881256,
    0.0308918810,
    -0.0501743046,
    0.0889789874,
    -0.2145988016,
    1.5707963050,
  ):
    poly = poly * x + coef
  return jnp.sqrt(gap) * poly


@functools.cache
def _ab_relu_pair(a: float, b: float):
  """`(K', dot)` of `a min(x, 0) + b max(x, 0)` with clean derivatives.

  With `s = sqrt(prod - K^2)` and `theta = atan2(s, K)`:
  `K' = (a-b)^2 / (2 pi) s + dot K`, `dot = (a^2+b^2)/2 - (a-b)^2 theta/(2 pi)`.
  The JVP uses `dK'/dK = dot` and `dK'/dprod = (a-b)^2 s / (4 pi prod)`,
  which stay finite where `s -> 0` (the kernel diagonal); `theta` gets zero
  derivative where `s == 0`. `s^2` within 8 ulps of `prod` counts as 0.
  """
  factor = (a - b) ** 2 / (2 * math.pi)
  mean_sq = (a**2 + b**2) / 2

  def parts(cov12, prod):
    """`(s, theta)`; values within 8 ulps of `s == 0` are snapped to it.

    Rounding (e.g. a fused multiply-add in `prod - cov12**2`) leaves a few
    ulps where the exact `s` is 0, as on the kernel diagonal; snapping makes
    `theta` exactly 0 there.
    """
    eps = jnp.finfo(prod.dtype).eps
    if jnp.finfo(prod.dtype).bits >= 64:
      s_sq = prod - cov12**2
      s = jnp.sqrt(jnp.where(s_sq > 8 * eps * jnp.abs(prod), s_sq, 0.0))
      theta = jnp.arctan2(s, cov12)
    else:
      # From the cosine c: s = r sin(theta) and theta = arccos(c) agree, so
      # the NNGP, stationary in theta, keeps float32 accuracy.
      r = jnp.sqrt(jnp.maximum(prod, 0.0))
      cos = jnp.clip(cov12 / jnp.where(r > 0, r, 1.0), -1.0, 1.0)
      gap = 1.0 - jnp.abs(cos)
      gap = jnp.where(gap > 8 * eps, gap, 0.0)
      s = r * jnp.sqrt(gap * (2.0 - gap))
      angle = _arccos_of_one_minus(gap)
      theta = jnp.where(cos < 0, math.pi - angle, angle)
    both_zero = (s == 0) & (cov12 == 0)
    return s, jnp.where(both_zero, math.pi / 2, theta)

  @jax.custom_jvp
  def pair(cov12, prod):
    s, theta = parts(cov12, prod)
    dot = mean_sq - factor * theta
    return factor * s + dot * cov12, dot

  @pair.defjvp
  def pair_jvp(primals, tangents):
    cov12, prod = primals
    d_cov12, d_prod = tangents
    s, theta = parts(cov12, prod)
    dot = mean_sq - factor * theta
    out = (factor * s + dot * cov12, dot)
    positive = s > 0
    safe_s = jnp.where(positive, s, 1.0)
    safe_prod = jnp.where(prod > 0, prod, 1.0)
    d_theta = jnp.where(positive, -(d_cov12 - cov12 * d_prod / (2 * safe_prod)) / safe_s, 0.0)
    d_out = dot * d_cov12 + jnp.where(prod > 0, factor * s / (2 * safe_prod), 0.0) * d_prod
    return out, (d_out, -factor * d_theta)

  return pair


def ABRelu(a: float, b: float):
  r"""`a min(x, 0) + b max(x, 0)`; arc-cosine kernel (Cho & Saul, 2009).

  With `theta = arccos(c / sqrt(v1 v2))`:

  .. math::
    K' = \frac{(a-b)^2}{2\pi} \sqrt{v_1 v_2 - c^2}
       + \Big(\frac{a^2+b^2}{2} - \frac{(a-b)^2 \theta}{2\pi}\Big) c,
    \quad \text{dot} = \frac{a^2+b^2}{2} - \frac{(a-b)^2\theta}{2\pi}.
  """
  a, b = float(a), float(b)
  pair = _ab_relu_pair(a, b)
  return elementwise(
    "ABRelu",
    lambda x: a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0),
    lambda c, v1, v2: pair(c, v1 * v2),
  )


def Relu():
  """ReLU, `max(x, 0)`: `ABRelu(0, 1)` (the arc-cosine kernel of degree 1)."""
  return ABRelu(0.0, 1.0)


def LeakyRelu(alpha: float):
  """Leaky ReLU, `alpha min(x, 0) + max(x, 0)`: `ABRelu(alpha, 1)`."""
  return ABRelu(alpha, 1.0)


def Abs():
  """`|x|`: `ABRelu(-1, 1)`."""
  return ABRelu(-1.0, 1.0)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0):
  r"""`a erf(b x) + c` (Williams, 1997).

  With the pre-activations scaled by `b` and `D = (1 + 2 b^2 v_1)(1 + 2 b^2 v_2)`:

  .. math::
    K' = a^2 \frac{2}{\pi} \arcsin\frac{2 b^2 c}{\sqrt{D}} + c^2, \quad
    \text{dot} = a^2 b^2 \frac{4}{\pi \sqrt{D - 4 b^4 c^2}}.
  """
  a, b, shift = float(a), float(b), float(c)
  scale = b**2

  def pair_fn(cov, v1, v2):
    cov = scale * cov
    denom = (1 + 2 * scale * v1) * (1 + 2 * scale * v2)
    root = jnp.sqrt(jnp.maximum(denom - 4 * cov**2, 0.0))
    nngp = a**2 * (2 / math.pi) * _atan2(2 * cov, root) + shift**2
    return nngp, a**2 * scale * (4 / math.pi) / root

  return elementwise("Erf", lambda x: a * jax.scipy.special.erf(b * x) + shift, pair_fn)


def Sigmoid_like():
  """`0.5 erf(x / 2.4020563531719796) + 0.5`, a sigmoid with a closed-form kernel.

  The constant minimises the squared distance to the logistic sigmoid on
  [-5, 5] (as in neural-tangents).
  """
  return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


def Gelu(approximate: bool = False):
  r"""GELU, `x Phi(x)` (`approximate=True` only changes the finite network, as in NT).

  With `p = v_1 v_2`, `q = (1 + v_1)(1 + v_2)`, `delta = sqrt(q - c^2)` and
  `alpha = arctan(c / delta)`:

  .. math::
    K' = \frac{c}{4} + \frac{1}{2\pi}\Big(\frac{c^2 + p \delta^2}{q \delta} + c\,\alpha\Big),
    \quad \text{dot} = \frac14 + \frac{\alpha}{2\pi}
      + \frac{c}{2\pi\delta}\Big(\frac{1}{\delta^2} + \frac{1 - p}{q} + 1\Big).
  """
  if not isinstance(approximate, bool):
    raise ValueError(f"approximate must be a bool, got {approximate!r}")

  def pair_fn(c, v1, v2):
    p = v1 * v2
    q = (1 + v1) * (1 + v2)
    delta_sq = q - c**2
    delta = jnp.sqrt(delta_sq)
    alpha = jnp.arctan2(c, delta)
    nngp = c / 4 + ((c**2 + p * delta_sq) / (q * delta) + c * alpha) / (2 * math.pi)
    dot = 0.25 + alpha / (2 * math.pi)
    dot = dot + c / (2 * math.pi * delta) * (1 / delta_sq + (1 - p) / q + 1)
    return nngp, dot

  return elementwise("Gelu", lambda x: jax.nn.gelu(x, approximate=approximate), pair_fn)


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0):
  r"""`a sin(b x + c)`.

  .. math::
    K' = \frac{a^2}{2}\big(e^{b^2 (c_{12} - \bar v)} - \cos(2c)\, e^{-b^2 (c_{12} + \bar v)}\big),
    \quad \text{dot} = \frac{a^2 b^2}{2}\big(e^{b^2 (c_{12} - \bar v)}
      + \cos(2c)\, e^{-b^2 (c_{12} + \bar v)}\big),

  with `c12` the covariance and `v-bar = (v1 + v2) / 2`.
  """
  a, b, phase = float(a), float(b), float(c)

  def pair_fn(cov, v1, v2):
    mean_var = (v1 + v2) / 2
    plus = jnp.exp(b**2 * (cov - mean_var))
    minus = jnp.exp(-(b**2) * (cov + mean_var)) * math.cos(2 * phase)
    return a**2 / 2 * (plus - minus), a**2 * b**2 / 2 * (plus + minus)

  return elementwise("Sin", lambda x: a * jnp.sin(b * x + phase), pair_fn)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0):
  """`a cos(b x + c)`: `Sin(a, b, c + pi / 2)`."""
  return Sin(a=a, b=b, c=float(c) + math.pi / 2)


def Rbf(gamma: float = 1.0):
  r"""`sqrt(2) sin(sqrt(2 gamma) x + pi / 4)`, whose NNGP is the RBF kernel.

  .. math::
    K' = e^{-\gamma (v_1 + v_2 - 2 c)}, \qquad \text{dot} = 2 \gamma K'.
  """
  gamma = float(gamma)

  def pair_fn(c, v1, v2):
    nngp = jnp.exp(gamma * (2 * c - v1 - v2))
    return nngp, 2 * gamma * nngp

  return elementwise(
    "Rbf", lambda x: math.sqrt(2) * jnp.sin(math.sqrt(2 * gamma) * x + math.pi / 4), pair_fn
  )


def Exp(a: float = 1.0, b: float = 1.0):
  r"""`a exp(b x)`: `K' = a^2 e^{b^2 ((v_1 + v_2)/2 + c)}`, `dot = b^2 K'`."""
  a, b = float(a), float(b)

  def pair_fn(c, v1, v2):
    nngp = a**2 * jnp.exp(b**2 * ((v1 + v2) / 2 + c))
    return nngp, b**2 * nngp

  return elementwise("Exp", lambda x: a * jnp.exp(b * x), pair_fn)


def Gaussian(a: float = 1.0, b: float = -1.0):
  r"""`a exp(b x^2)`.

  With `det = sqrt((1 - 2 b v_1)(1 - 2 b v_2) - 4 b^2 c^2)`:

  .. math::
    K' = \frac{a^2}{det}, \qquad \text{dot} = \frac{4 a^2 b^2 c}{det^3}.
  """
  a, b = float(a), float(b)

  def pair_fn(c, v1, v2):
    det = jnp.sqrt(jnp.maximum((1 - 2 * b * v1) * (1 - 2 * b * v2) - 4 * b**2 * c**2, 0.0))
    return a**2 / det, 4 * a**2 * b**2 * c / det**3

  return elementwise("Gaussian", lambda x: a * jnp.exp(b * x**2), pair_fn)


def Sign():
  r"""`sign(x)`: `K' = 1 - 2 theta / pi` with `theta = arccos(c / sqrt(v1 v2))`.

  Its derivative is zero almost everywhere, so the NTK after it is zero (as
  in neural-tangents); a zero-variance input gives `K' = 0`.
  """

  def pair_fn(c, v1, v2):
    prod = v1 * v2
    s_sq = prod - c**2
    # Rounding within 8 ulps of s = 0 (the diagonal) is snapped to it.
    s = jnp.sqrt(jnp.where(s_sq > 8 * jnp.finfo(s_sq.dtype).eps * jnp.abs(prod), s_sq, 0.0))
    theta = jnp.where((s == 0) & (c == 0), math.pi / 2, jnp.arctan2(s, c))
    return 1 - 2 * theta / math.pi, 0.0

  return elementwise("Sign", jnp.sign, pair_fn)


def Gabor():
  r"""`exp(-x^2) sin(x)`.

  With `S = v_1 + v_2`, `D = 4 (v_1 v_2 - c^2)`, `den = 2 S + D + 1`,
  `L = exp(-(S + D + 2c) / (2 den))` and `R = exp(2c / den)`:

  .. math::
    K' = \frac{L (R - 1)}{2 \sqrt{den}}, \qquad
    \text{dot} = \frac{L \big((A - B) + R (A + B)\big)}{2\, den^{5/2}},

  where `A = 1 + 2S + 4(c^2 + v_1 v_2)` and `B = 4c(D + 3S + 2)`.
  """

  def pair_fn(c, v1, v2):
    total = v1 + v2
    diff = 4 * (v1 * v2 - c**2)
    denom = 2 * total + diff + 1
    left = jnp.exp(-(total + diff + 2 * c) / (2 * denom))
    right = jnp.exp(2 * c / denom)
    shared = 1 + 2 * total + 4 * (c**2 + v1 * v2)
    skew = 4 * c * (diff + 3 * total + 2)
    dot = left * ((shared - skew) + right * (shared + skew)) / (2 * denom**2.5)
    return left * (right - 1) / (2 * jnp.sqrt(denom)), dot

  return elementwise("Gabor", lambda x: jnp.exp(-(x**2)) * jnp.sin(x), pair_fn)


def ExpNormalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False):
  r"""The "Gaussian normalised kernel" (kernel only; `apply_fn` raises).

  With `r = sqrt(v_1 v_2)` and `rho = c / r` (clipped to [-1, 1] when
  `do_clip`), as in neural-tangents (Shankar et al., 2020, "Neural Kernels
  Without Tangents"):

  .. math::
    K' = r\, e^{\gamma (\rho + \text{shift})}, \qquad
    \Theta' = \gamma\, e^{\gamma (\rho + \text{shift})}\, \Theta.
  """
  gamma, shift = float(gamma), float(shift)
  if not isinstance(do_clip, bool):
    raise ValueError(f"do_clip must be a bool, got {do_clip!r}")

  def pair_fn(c, v1, v2):
    r = jnp.sqrt(jnp.maximum(v1 * v2, 1e-30))
    rho = c / r
    if do_clip:
      rho = jnp.clip(rho, -1.0, 1.0)
    scale = jnp.exp(gamma * (rho + shift))
    return r * scale, gamma * scale

  return elementwise("ExpNormalized", None, pair_fn)
