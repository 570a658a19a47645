r"""Kernel Inducing Points (KIP): learn a tiny support set whose kernel ridge regression
predicts the real data.

Nguyen, Chen & Lee (2021), "Dataset Meta-Learning from Kernel Ridge-Regression" (ICLR).
For a support set ``(X_s, Y_s)`` of ``m`` images and labels, and a batch of real targets
``(X_t, Y_t)``, KIP minimises with Adam over ``X_s`` (and, with label learning, ``Y_s``)

.. math::
  L(X_s, Y_s) = \frac{1}{2 b c} \big\lVert Y_t - K_{ts}\,(K_{ss} + \lambda\,
  \tfrac{\mathrm{tr} K_{ss}}{m} I)^{-1} Y_s \big\rVert_F^2

where ``K`` is an infinite-width kernel (NTK or NNGP) and ``b``, ``c`` are the batch size
and the number of classes. Label Solve, from the same paper, replaces ``Y_s`` by the
minimiser of the same loss for fixed images (a linear least-squares problem).

The kernel is any ``kernel(x1, x2) -> [n1, n2]`` function, e.g.
``functools.partial(kernel_fn, get='ntk')`` for a ``kdjax.kernels.stax`` network; the
KRR itself is ``kdjax.krr.predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import krr
from kdjax.data import class_balanced_indices, regression_targets

__all__ = [
  "KipState",
  "init_support",
  "kip_loss",
  "make_kip_step",
  "label_solve",
  "krr_accuracy",
]

Kernel = Callable[[jax.Array, jax.Array], jax.Array]


class KipState(NamedTuple):
  """The learned support set and the optimiser state (a pytree; checkpoint it whole).

  Attributes:
    x: float32 [m, H, W, C] support images.
    y: float32 [m, num_classes] support labels (regression targets).
    opt_state: optax state of the trainable leaves ``{'x': ..., 'y': ...}`` selected by
      ``make_kip_step``'s ``learn_images``/``learn_labels``.
    step: int32 scalar, number of KIP steps taken.
  """

  x: jax.Array
  y: jax.Array
  opt_state: Any
  step: jax.Array


def init_support(
  x_train: np.ndarray,
  y_train: np.ndarray,
  *,
  per_class: int,
  num_classes: int,
  seed: int,
  label_offset: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``per_class`` real images of every class as the initial support set.

  As in Nguyen, Chen & Lee (2021), "Dataset Meta-Learning from Kernel Ridge-Regression",
  KIP starts from real images with their one-hot (minus ``label_offset``) labels.

  Args:
    x_train: [n, H, W, C] training images (already preprocessed).
    y_train: int [n] class ids.
    per_class: images per class.
    num_classes: number of classes.
    seed: NumPy seed of the draw.
    label_offset: subtracted from the one-hot labels.

  Returns:
    (x [num_classes * per_class, H, W, C] float32, y [num_classes * per_class,
    num_classes] float32), grouped by class.

  Raises:
    ValueError: ``per_class`` exceeds the number of images of some class.
  """
  index = class_balanced_indices(y_train, per_class, seed=seed, num_classes=num_classes)
  return (
    np.asarray(x_train[index], np.float32),
    regression_targets(np.asarray(y_train)[index], num_classes, offset=label_offset),
  )


def _support_krr(kernel: Kernel, x_support, y_support, x, reg: float) -> jax.Array:
  """KRR of the support set ``(x_support, y_support)`` evaluated at ``x``."""
  return krr.predict(kernel(x, x_support), kernel(x_support, x_support), y_support, reg=reg)


def kip_loss(
  kernel: Kernel,
  x_support: jax.Array,
  y_support: jax.Array,
  x_target: jax.Array,
  y_target: jax.Array,
  *,
  reg: float,
) -> jax.Array:
  r"""The KIP loss: mean squared error of support-set KRR on a target batch.

  .. math::
    L = \frac{1}{2 b c} \big\lVert Y_t - K_{ts} (K_{ss} + \lambda\,\tfrac{\mathrm{tr}
    K_{ss}}{m} I)^{-1} Y_s \big\rVert_F^2

  Nguyen, Chen & Lee (2021), "Dataset Meta-Learning from Kernel Ridge-Regression".

  Args:
    kernel: ``kernel(x1, x2) -> [n1, n2]``.
    x_support: [m, ...] support inputs.
    y_support: [m, c] support labels.
    x_target: [b, ...] target inputs.
    y_target: [b, c] target labels.
    reg: lambda, relative to ``tr(K_ss)/m`` (as ``kdjax.krr.predict``).

  Returns:
    Scalar loss (mean over the b targets and c classes, times 1/2).
  """
  prediction = _support_krr(kernel, x_support, y_support, x_target, reg)
  return 0.5 * jnp.mean(jnp.square(prediction - y_target))


def _trainable(state_or_support: Any, learn_images: bool, learn_labels: bool) -> dict:
  params = {}
  if learn_images:
    params["x"] = state_or_support[0]
  if learn_labels:
    params["y"] = state_or_support[1]
  return params


def make_kip_step(
  kernel: Kernel,
  optimizer: optax.GradientTransformation,
  *,
  reg: float,
  learn_images: bool = True,
  learn_labels: bool = False,
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> tuple[Callable[..., KipState], Callable[..., tuple[KipState, dict]]]:
  """Builds ``init(x, y) -> KipState`` and the jitted ``step(state, x_t, y_t)``.

  One step takes the gradient of :func:`kip_loss` on a target batch with respect to the
  support images (and labels if ``learn_labels``) and applies ``optimizer`` (Adam in
  Nguyen, Chen & Lee, 2021, "Dataset Meta-Learning from Kernel Ridge-Regression").

  With a ``mesh``, the target batch is sharded along ``data_axis`` (its size must be
  divisible by that axis) and the support set and optimiser state are replicated; the
  kernel rows and the loss are then computed data-parallel, and the result equals the
  unsharded step up to float rounding.

  Args:
    kernel: ``kernel(x1, x2) -> [n1, n2]``.
    optimizer: an optax transformation, e.g. ``optax.adam(1e-2)``.
    reg: lambda of :func:`kip_loss`.
    learn_images: update the support images.
    learn_labels: update the support labels (label learning).
    mesh: optional ``jax.sharding.Mesh`` with an axis named ``data_axis``.
    data_axis: mesh axis of the target batch.

  Returns:
    ``(init, step)``: ``init(x_support, y_support) -> KipState`` and
    ``step(state, x_target, y_target) -> (state, {'loss': scalar, 'grad_norm': scalar})``
    where ``loss`` is the loss before the update. ``step`` donates ``state``.
  """
  if not (learn_images or learn_labels):
    raise ValueError("at least one of learn_images and learn_labels must be True")
  if mesh is not None and data_axis not in mesh.axis_names:
    raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")

  def init(x_support, y_support) -> KipState:
    # Copies, so that donating the state never deletes the caller's arrays.
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    return KipState(
      x, y, optimizer.init(_trainable((x, y), learn_images, learn_labels)), jnp.zeros((), jnp.int32)
    )

  def step(state: KipState, x_target, y_target):
    params = _trainable(state, learn_images, learn_labels)

    def loss_fn(params):
      return kip_loss(
        kernel, params.get("x", state.x), params.get("y", state.y), x_target, y_target, reg=reg
      )

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    new = KipState(params.get("x", state.x), params.get("y", state.y), opt_state, state.step + 1)
    return new, {"loss": loss, "grad_norm": optax.global_norm(grads)}

  return jit_support_step(init, step, mesh, data_axis)


def jit_sharded_step(
  step: Callable,
  mesh: Mesh | None,
  data_axis: str = "data",
  *,
  args: tuple[str, ...] = ("replicated", "batch", "batch"),
) -> Callable:
  """``step(state, ...) -> (state, metrics)`` jitted, donating its state. With a ``mesh``,
  positional argument ``k`` is ``'replicated'`` or sharded along ``data_axis``
  (``'batch'``) as ``args[k]`` says, and both outputs are replicated."""
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  sharding = {"replicated": NamedSharding(mesh, P()), "batch": NamedSharding(mesh, P(data_axis))}
  return jax.jit(
    step,
    in_shardings=tuple(sharding[a] for a in args),
    out_shardings=(sharding["replicated"],) * 2,
    donate_argnums=0,
  )


def jit_support_step(
  init: Callable, step: Callable, mesh: Mesh | None, data_axis: str = "data"
) -> tuple[Callable, Callable]:
  """``(init, step)`` of a support-set method, jitted: ``step(state, x_target, y_target)``
  donates its state; with a ``mesh``, the state is replicated and the target batch sharded
  along ``data_axis`` (without one, ``init`` is returned as is)."""
  step = jit_sharded_step(step, mesh, data_axis)
  if mesh is None:
    return init, step
  return jax.jit(init, out_shardings=NamedSharding(mesh, P())), step


def label_solve(
  kernel: Kernel,
  x_support: jax.Array,
  x_target: jax.Array,
  y_target: jax.Array,
  *,
  reg: float,
  rcond: float | None = None,
) -> jax.Array:
  r"""Label Solve: the support labels that minimise the KIP loss for fixed images.

  With :math:`A = K_{ts}(K_{ss} + \lambda\,\tfrac{\mathrm{tr}K_{ss}}{m} I)^{-1}`
  (``[b, m]``), the KRR prediction on the targets is :math:`A Y_s`, so

  .. math:: Y_s^\star = \arg\min_{Y_s} \lVert Y_t - A Y_s \rVert_F^2 = A^{+} Y_t

  (minimum-norm least squares). Nguyen, Chen & Lee (2021), "Dataset Meta-Learning from
  Kernel Ridge-Regression", Label Solve.

  Args:
    kernel: ``kernel(x1, x2) -> [n1, n2]``.
    x_support: [m, ...] support inputs.
    x_target: [b, ...] target inputs (typically the whole training set).
    y_target: [b, c] target labels.
    reg: lambda, as in :func:`kip_loss`.
    rcond: singular values below ``rcond * max`` are treated as zero (None = jnp's
      default of ``eps * max(b, m)``).

  Returns:
    [m, c] labels.
  """
  m = x_support.shape[0]
  a = _support_krr(kernel, x_support, jnp.eye(m, dtype=jnp.result_type(x_support)), x_target, reg)
  return jnp.linalg.lstsq(a, y_target, rcond=rcond)[0]


def krr_accuracy(
  kernel: Kernel,
  x_support: jax.Array,
  y_support: jax.Array,
  x_test: jax.Array,
  labels_test: jax.Array,
  *,
  reg: float,
) -> jax.Array:
  r"""Test accuracy of KRR trained on the support set alone.

  .. math:: \mathrm{acc} = \frac1n \sum_i [\arg\max_c (K_{*s}(K_{ss} + \lambda
     \tfrac{\mathrm{tr}K_{ss}}{m} I)^{-1} Y_s)_{ic} = \mathrm{label}_i]

  Args:
    kernel: ``kernel(x1, x2) -> [n1, n2]``.
    x_support: [m, ...]; y_support: [m, c].
    x_test: [n, ...]; labels_test: int [n] class ids.
    reg: lambda, as in :func:`kip_loss`.

  Returns:
    Scalar accuracy in [0, 1].
  """
  prediction = _support_krr(kernel, x_support, y_support, x_test, reg)
  return jnp.mean(jnp.argmax(prediction, axis=-1) == labels_test)
