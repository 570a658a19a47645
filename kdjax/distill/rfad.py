r"""RFAD: dataset distillation with a random-feature approximation of the ConvNet NNGP.

Loo, Hasani, Amini & Rus (2022), "Efficient Dataset Distillation using Random Feature
Approximation" (NeurIPS). The NNGP of a ConvNet (``depth`` x [Conv 3x3, ReLU, AvgPool 2x2],
no normalisation, readout removed) is estimated from ``C`` randomly initialised finite
networks with ``M`` output features each (the flattened last block):

.. math::
  \Phi(x) = \tfrac{1}{\sqrt{C M}}\,\big[f_{\theta_1}(x), \dots, f_{\theta_C}(x)\big],
  \qquad \mathbb{E}_\theta\,\Phi(x)\Phi(x')^\top = K_{\mathrm{NNGP}}(x, x'),

with fresh :math:`\theta_1..\theta_C` at every step. The networks are the finite
``init_fn``/``apply_fn`` of the ``kdjax.kernels.stax`` network whose ``kernel_fn`` is the
exact NNGP, so the estimate is unbiased for it. KRR on the support set ``(X_s, Y_s)``
predicts the target batch in whichever form is smaller,

.. math::
  \hat Y_t = \Phi_t \Phi_s^\top (\Phi_s \Phi_s^\top + \lambda I_m)^{-1} Y_s
           = \Phi_t (\Phi_s^\top \Phi_s + \lambda I_F)^{-1} \Phi_s^\top Y_s,
  \qquad \lambda = \text{reg}\cdot \lVert \Phi_s \rVert_F^2 / m,

so a step costs :math:`O(F m^2)` or :math:`O(F^2 m)`: linear in the support size ``m``
for a fixed feature count. The loss is the MSE of KIP, or the Platt-scaled
cross-entropy of RFAD, :math:`-\log \mathrm{softmax}(e^{s} \hat Y_t)_{y}` with a learned
log-scale ``s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdjax.distill import kip
from kdjax.kernels import stax

__all__ = [
  "LOSSES",
  "RfadState",
  "convnet",
  "random_features",
  "krr_predict",
  "rfad_loss",
  "meta_loss",
  "make_rfad_step",
]

LOSSES = ("mse", "platt")


def convnet(width: int, depth: int, *, W_std: float = math.sqrt(2.0), b_std: float = 0.1):
  """The ConvNet body as a ``stax`` network: ``depth`` x [Conv, Relu, AvgPool], Flatten.

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn(x1, x2, get='nngp')`` is the exact
    NNGP that :func:`random_features` estimates (standard parameterisation).
  """
  layers = []
  for _ in range(depth):
    layers += [
      stax.Conv(
        width, (3, 3), padding="SAME", W_std=W_std, b_std=b_std, parameterization="standard"
      ),
      stax.Relu(),
      stax.AvgPool((2, 2), strides=(2, 2)),
    ]
  return stax.serial(*layers, stax.Flatten())


def random_features(
  network: tuple, key: jax.Array, x: jax.typing.ArrayLike, *, num_models: int
) -> jax.Array:
  r"""``[n, C M]`` features :math:`\Phi(x)` of ``num_models`` random networks.

  :math:`\Phi = [f_{\theta_1}(x), \dots, f_{\theta_C}(x)] / \sqrt{C M}` with
  :math:`\theta_c` drawn by ``init_fn(fold_in(key, c))``, so :math:`\Phi\Phi^\top` is an
  unbiased estimate of the network's NNGP. The models run one after another (on CPU
  a ``vmap`` over their parameters becomes slow grouped convolutions).

  Args:
    network: ``(init_fn, apply_fn, kernel_fn)`` from :func:`convnet`.
    key: PRNG key of this draw.
    x: [n, H, W, C] images.
    num_models: C.
  """
  init_fn, apply_fn, _ = network
  x = jnp.asarray(x)
  features = []
  for c in range(num_models):
    _, params = init_fn(jax.random.fold_in(key, c), (-1,) + x.shape[1:])
    features.append(apply_fn(params, x))
  phi = jnp.concatenate(features, axis=1)
  return phi / jnp.sqrt(jnp.asarray(phi.shape[1], phi.dtype))


def krr_predict(
  phi_target: jax.typing.ArrayLike,
  phi_support: jax.typing.ArrayLike,
  y_support: jax.typing.ArrayLike,
  *,
  reg: float,
  form: str = "auto",
) -> jax.Array:
  r"""KRR with the linear kernel of the features, in the dual or the primal form.

  ``'dual'``: :math:`\Phi_t\Phi_s^\top(\Phi_s\Phi_s^\top + \lambda I_m)^{-1}Y_s`;
  ``'primal'``: :math:`\Phi_t(\Phi_s^\top\Phi_s + \lambda I_F)^{-1}\Phi_s^\top Y_s`;
  ``'auto'``: the smaller system. :math:`\lambda = \text{reg}\,\mathrm{tr}(K_{ss})/m`
  as in ``kdjax.krr.predict``.

  Args:
    phi_target: [b, F]; phi_support: [m, F]; y_support: [m, c].
    reg: relative ridge.
    form: 'auto', 'dual' or 'primal'.

  Returns:
    [b, c] predictions.
  """
  if form not in ("auto", "dual", "primal"):
    raise ValueError(f"form must be 'auto', 'dual' or 'primal', got {form!r}")
  phi_t, phi_s, y = (jnp.asarray(a) for a in (phi_target, phi_support, y_support))
  m, f = phi_s.shape
  lam = reg * jnp.sum(jnp.square(phi_s)) / m
  if form == "dual" or (form == "auto" and m <= f):
    k_ss = phi_s @ phi_s.T + lam * jnp.eye(m, dtype=phi_s.dtype)
    return (phi_t @ phi_s.T) @ jax.scipy.linalg.solve(k_ss, y, assume_a="pos")
  gram = phi_s.T @ phi_s + lam * jnp.eye(f, dtype=phi_s.dtype)
  return phi_t @ jax.scipy.linalg.solve(gram, phi_s.T @ y, assume_a="pos")


def rfad_loss(
  prediction: jax.Array, y_target: jax.Array, *, loss: str, log_scale: jax.typing.ArrayLike = 0.0
) -> jax.Array:
  r"""``'mse'``: :math:`\tfrac12\,\mathrm{mean}(\hat Y - Y)^2`; ``'platt'``: the mean
  cross-entropy of :math:`\mathrm{softmax}(e^{s}\hat Y)` to the class
  :math:`\arg\max_c Y_c` (Platt scaling with learned log-scale ``s``; Loo et al., 2022).
  """
  if loss == "mse":
    return 0.5 * jnp.mean(jnp.square(prediction - y_target))
  if loss == "platt":
    logits = jnp.exp(log_scale) * prediction
    labels = jnp.argmax(y_target, axis=-1)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")


def meta_loss(
  network: tuple,
  key: jax.Array,
  x_support: jax.typing.ArrayLike,
  y_support: jax.typing.ArrayLike,
  x_target: jax.typing.ArrayLike,
  y_target: jax.typing.ArrayLike,
  *,
  reg: float,
  num_models: int,
  loss: str,
  log_scale: jax.typing.ArrayLike = 0.0,
) -> jax.Array:
  r"""RFAD's meta-objective: :func:`rfad_loss` of the KRR prediction of the target batch.

  .. math:: L(X_s, Y_s) = \ell\big(\Phi_t(\Phi_s^\top\Phi_s + \lambda I)^{-1}\Phi_s^\top
     Y_s,\; Y_t\big)

  with the support and target features :math:`\Phi_s, \Phi_t` of one draw of
  ``num_models`` networks (``key``); its gradient in ``x_support`` is the meta-gradient.
  """
  x_support = jnp.asarray(x_support)
  phi = random_features(
    network, key, jnp.concatenate([x_support, jnp.asarray(x_target)]), num_models=num_models
  )
  m = x_support.shape[0]
  prediction = krr_predict(phi[m:], phi[:m], y_support, reg=reg)
  return rfad_loss(prediction, jnp.asarray(y_target), loss=loss, log_scale=log_scale)


class RfadState(NamedTuple):
  """Support images ``x`` [m, H, W, C], labels ``y`` [m, c], Platt ``log_scale`` (scalar),
  optax state of the trainable leaves, and ``step`` (int32)."""

  x: jax.Array
  y: jax.Array
  log_scale: jax.Array
  opt_state: Any
  step: jax.Array


def make_rfad_step(
  network: tuple,
  optimizer: optax.GradientTransformation,
  *,
  reg: float,
  num_models: int,
  seed: int,
  loss: str = "mse",
  learn_labels: bool = False,
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> tuple[Callable[..., RfadState], Callable[..., tuple[RfadState, dict]]]:
  """Builds ``init(x, y) -> RfadState`` and the jitted ``step(state, x_t, y_t)``.

  Each step draws ``num_models`` fresh networks with key ``fold_in(key(seed), step)``
  (so a resumed run draws the same ones), computes :func:`krr_predict` of the target
  batch from the support set, and applies ``optimizer`` to the gradient of
  :func:`rfad_loss` with respect to the images (and labels if ``learn_labels``, and the
  Platt log-scale with ``loss='platt'``). With a ``mesh`` the target batch is sharded
  along ``data_axis`` and the state replicated (``kdjax.distill.kip.jit_support_step``).

  Returns:
    ``(init, step)``; ``step(state, x_t, y_t) -> (state, {'loss', 'grad_norm'})``
    (the loss before the update); ``step`` donates ``state``.
  """
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
  if num_models < 1:
    raise ValueError(f"num_models must be >= 1, got {num_models}")
  if mesh is not None and data_axis not in mesh.axis_names:
    raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
  names = ("x",) + (("y",) if learn_labels else ()) + (("log_scale",) if loss == "platt" else ())

  def init(x_support, y_support) -> RfadState:
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    state = RfadState(x, y, jnp.zeros((), jnp.float32), None, jnp.zeros((), jnp.int32))
    return state._replace(opt_state=optimizer.init({k: getattr(state, k) for k in names}))

  def step(state: RfadState, x_target, y_target):
    params = {k: getattr(state, k) for k in names}
    key = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
      current = state._replace(**params)
      return meta_loss(
        network,
        key,
        current.x,
        current.y,
        x_target,
        y_target,
        reg=reg,
        num_models=num_models,
        loss=loss,
        log_scale=current.log_scale,
      )

    value, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    new = state._replace(**params, opt_state=opt_state, step=state.step + 1)
    return new, {"loss": value, "grad_norm": optax.global_norm(grads)}

  return kip.jit_support_step(init, step, mesh, data_axis)
