r"""Closed-form dataset distillation for ridge regression in an explicit feature space.

Chen, Huang & Weng (2024), "Provable and Efficient Dataset Distillation for Kernel Ridge
Regression" (NeurIPS): for ridge regression on features :math:`\phi(x) \in \mathbb{R}^d`
one (feature) point per class is enough to reproduce the full-data model exactly.

The full-data ridge model on ``n`` examples with targets :math:`Y \in \mathbb{R}^{n \times c}`
is

.. math:: W^\star = (\Phi^\top \Phi + \lambda I_d)^{-1} \Phi^\top Y \in \mathbb{R}^{d\times c}.

A support set of ``c`` feature vectors :math:`S = A^\top W^{\star\top}` (rows in the span
of the class weight vectors) with labels :math:`Y_S`, fitted by ridge with
:math:`\lambda_S \ge 0`, gives
:math:`W_S = S^\top (S S^\top + \lambda_S I)^{-1} Y_S`. Choosing
:math:`A = G^{-1} Y_0^\top` for desired labels :math:`Y_0` (default one-hot) and
:math:`G = W^{\star\top} W^\star`, and

.. math:: Y_S = A^\top G + \lambda_S A^{-1} = Y_0 + \lambda_S Y_0^{-\top} G,

makes :math:`W_S = W^\star A (A^\top G A + \lambda_S I)^{-1} (A^\top G A + \lambda_S I)
A^{-1} = W^\star` (needs :math:`W^\star` of rank ``c``). With :math:`\lambda_S = 0` the
labels are exactly :math:`Y_0`.

For a surjective random-feature map (:class:`RandomFeatures`: ``D <= d`` leaky-ReLU
features of a random projection) every support feature vector has a preimage image,
found by inverting the activation and solving the projection by least squares.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kdjax import checks

__all__ = ["ridge_weights", "distill", "RandomFeatures", "random_features"]


def ridge_weights(
  features: jax.typing.ArrayLike, targets: jax.typing.ArrayLike, *, reg: float
) -> jax.Array:
  r"""Ridge regression weights :math:`W = (\Phi^\top\Phi + \lambda I)^{-1}\Phi^\top Y`.

  Solved in the smaller of the primal (``d x d``) and dual (``n x n``,
  :math:`W = \Phi^\top(\Phi\Phi^\top + \lambda I)^{-1} Y`) forms, which agree.

  Args:
    features: [n, d] feature rows :math:`\Phi`.
    targets: [n, c] targets :math:`Y`.
    reg: absolute ridge :math:`\lambda \ge 0` (> 0 unless the Gram matrix is invertible).

  Returns:
    [d, c] weights.
  """
  phi, y = jnp.asarray(features), jnp.asarray(targets)
  if phi.ndim != 2 or y.ndim != 2 or phi.shape[0] != y.shape[0]:
    raise ValueError(f"features must be [n, d] and targets [n, c], got {phi.shape} and {y.shape}")
  if reg < 0:
    raise ValueError(f"reg must be >= 0, got {reg}")
  n, d = phi.shape
  if d <= n:
    return jnp.linalg.solve(phi.T @ phi + reg * jnp.eye(d, dtype=phi.dtype), phi.T @ y)
  return phi.T @ jnp.linalg.solve(phi @ phi.T + reg * jnp.eye(n, dtype=phi.dtype), y)


def distill(
  features: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  reg: float,
  support_reg: float = 0.0,
  labels: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""One support feature vector per class whose ridge model equals the full-data one.

  Chen, Huang & Weng (2024), "Provable and Efficient Dataset Distillation for Kernel
  Ridge Regression": with :math:`W^\star` the full-data ridge weights (regulariser
  ``reg``), :math:`G = W^{\star\top}W^\star` and desired labels :math:`Y_0`,

  .. math:: S = Y_0 G^{-1} W^{\star\top},\qquad Y_S = Y_0 + \lambda_S Y_0^{-\top} G,

  so that ridge on ``(S, Y_S)`` with ``support_reg`` gives :math:`W^\star` again.

  Args:
    features: [n, d] full-data features.
    targets: [n, c] full-data targets.
    reg: ridge of the full-data model (absolute).
    support_reg: ridge :math:`\lambda_S \ge 0` used on the support set.
    labels: [c, c] invertible desired labels :math:`Y_0` (default the identity: one-hot).

  Returns:
    ``(support_features [c, d], support_labels [c, c])``.

  Raises:
    ValueError: bad shapes, negative ridge, or :math:`W^\star` of rank below ``c``
      (eagerly).
  """
  if support_reg < 0:
    raise ValueError(f"support_reg must be >= 0, got {support_reg}")
  w = ridge_weights(features, targets, reg=reg)
  c = w.shape[1]
  y0 = jnp.eye(c, dtype=w.dtype) if labels is None else jnp.asarray(labels, w.dtype)
  if y0.shape != (c, c):
    raise ValueError(f"labels must be [{c}, {c}] (one row per class), got {y0.shape}")
  gram = w.T @ w
  if checks.is_concrete(gram) and jnp.linalg.matrix_rank(gram) < c:
    raise ValueError(
      f"the full-data ridge weights have rank below the {c} classes; one "
      "point per class cannot reproduce them"
    )
  support = y0 @ jnp.linalg.solve(gram, w.T)
  support_labels = y0 + support_reg * jnp.linalg.solve(y0.T, gram)
  return support, support_labels


class RandomFeatures(NamedTuple):
  r"""A surjective random-feature map :math:`\phi(x) = \sigma(x R)/\sqrt{D}`.

  :math:`R \in \mathbb{R}^{p \times D}` Gaussian with :math:`D \le p` (full column rank
  almost surely) and :math:`\sigma` the leaky ReLU of slope ``slope`` (a bijection), so
  every feature vector has a preimage (Chen, Huang & Weng, 2024, surjective feature maps).

  Attributes:
    matrix: [p, D] projection (inputs are flattened to p values).
    slope: leaky-ReLU slope in (0, 1].
  """

  matrix: jax.Array
  slope: float

  def __call__(self, x: jax.typing.ArrayLike) -> jax.Array:
    """Features [n, D] of inputs [n, ...]."""
    x = jnp.asarray(x)
    z = x.reshape(x.shape[0], -1) @ self.matrix
    return jnp.where(z >= 0, z, self.slope * z) / jnp.sqrt(self.matrix.shape[1])

  def preimage(self, features: jax.typing.ArrayLike, shape: tuple[int, ...]) -> jax.Array:
    r"""Minimum-norm inputs :math:`x` with :math:`\phi(x) = ` ``features``.

    .. math:: z = \sigma^{-1}(\sqrt{D}\,f),\qquad x = \arg\min \lVert x \rVert
       \ \text{s.t.}\ x R = z \;=\; z R^{+}

    Args:
      features: [m, D] feature rows.
      shape: the trailing input shape, e.g. ``(28, 28, 1)``.

    Returns:
      [m, *shape] inputs.
    """
    z = jnp.asarray(features) * jnp.sqrt(self.matrix.shape[1])
    z = jnp.where(z >= 0, z, z / self.slope)
    x = jnp.linalg.lstsq(self.matrix.T, z.T)[0].T
    return x.reshape((x.shape[0],) + tuple(shape))


def random_features(
  key: jax.Array, input_dim: int, num_features: int, *, slope: float = 0.2, dtype=jnp.float32
) -> RandomFeatures:
  """Samples a :class:`RandomFeatures` map with ``num_features <= input_dim``.

  Raises:
    ValueError: ``num_features`` exceeds ``input_dim`` (the map would not be surjective)
      or ``slope`` outside (0, 1].
  """
  if not 1 <= num_features <= input_dim:
    raise ValueError(
      f"num_features must be in [1, input_dim={input_dim}] for a surjective map, got {num_features}"
    )
  if not 0 < slope <= 1:
    raise ValueError(f"slope must be in (0, 1], got {slope}")
  return RandomFeatures(jax.random.normal(key, (input_dim, num_features), dtype), slope)
