r"""RCIG: dataset distillation with convexified implicit gradients.

Loo, Hasani, Lechner & Rus (2023), "Dataset Distillation with Convexified Implicit
Gradients" (ICML). A pool of finite ConvNets (``kdjax.models.ConvNet``) at different
training stages supplies parameters :math:`\theta_0`. Around them the network is
linearised in its body and readout bias, :math:`\delta` (the "tangent"), and its readout
kernel :math:`W` is solved in closed form (the paper's reparameterisation): with the
features :math:`\phi(x)` (the readout's input at :math:`\theta_0`) and the linearised
output change :math:`J(x)\delta` (a Jacobian-vector product at :math:`\theta_0`; the paper's
code drops :math:`f(x;\theta_0)` itself),

.. math::
  f_\delta(x) = J(x)\delta + \phi(x)\,W_\delta, \qquad
  W_\delta = \arg\min_W \tfrac12\lVert Y_s - J_s\delta - \Phi_s W\rVert^2
     + \tfrac\lambda2\lVert W\rVert^2 .

The inner problem is the L2-regularised MSE of this model on the support set, with
:math:`W` minimised out (:func:`inner_loss`):

.. math::
  L_{\mathrm{in}}(\delta; X_s, Y_s) = \frac{\lambda}{2mc}\Big(\mathrm{tr}\big(R^\top
     (\Phi_s\Phi_s^\top + \lambda I)^{-1} R\big) + \lVert\delta\rVert^2\Big),
  \qquad R = Y_s - J_s\delta,

a convex quadratic in :math:`\delta` (its minimiser is kernel ridge regression with the
empirical NTK :math:`J J^\top + \Phi\Phi^\top` of :math:`\theta_0`), with
:math:`\lambda = \text{reg}\cdot\mathrm{tr}(\Phi_s\Phi_s^\top)/m`. Its minimiser
:math:`\delta^\star` is found by conjugate gradients on Hessian-vector products
(:func:`cg`, :func:`meta_gradient`). The outer loss is the Platt-scaled cross-entropy of
:math:`f_{\delta^\star}` on a real target batch (:func:`predict`,
:func:`kdjax.distill.rfad.rfad_loss`), and the meta-gradient in the support set
:math:`u = (X_s, Y_s)` is the implicit-function-theorem gradient

.. math::
  \frac{dL_{\mathrm{out}}}{du} = \underbrace{\partial_u L_{\mathrm{out}}}_{\text{direct}}
    \;-\; \underbrace{\partial_u\big(v^\top \nabla_\delta L_{\mathrm{in}}(\delta^\star; u)\big)}
      _{\text{implicit}},
  \qquad H v = \nabla_\delta L_{\mathrm{out}},\quad H = \nabla^2_\delta L_{\mathrm{in}},

with :math:`v` by conjugate gradients too. As in the paper's code the implicit part is
clipped (per leaf) to the norm of the direct part. After each meta-step the chosen pool
model trains ``pool_steps`` Adam steps on the support set (MSE), and is re-initialised
after ``max_updates`` of them (as FRePo's pool, :mod:`kdjax.distill.frepo`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdjax.distill import frepo, kip, rfad

__all__ = [
  "RcigState",
  "cg",
  "tangent_like",
  "linearised",
  "inner_loss",
  "predict",
  "inner_hvp",
  "meta_gradient",
  "make_rcig_step",
]


def _vdot(a: Any, b: Any) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def cg(
  matvec: Callable[[Any], Any], b: Any, *, steps: int, x0: Any = None, unroll: bool = True
) -> tuple[Any, jax.Array]:
  r"""``steps`` conjugate-gradient iterations for :math:`A x = b` (``A`` symmetric positive
  definite, given by ``matvec``) on pytrees, from ``x0`` (default 0).

  Hestenes & Stiefel (1952). A fixed number of iterations, unrolled by default (XLA's CPU
  backend runs convolutions inside a while loop an order of magnitude slower; ``unroll=False``
  compiles faster); a converged residual stops the updates instead of dividing by zero.

  Returns:
    ``(x, relative_residual)``, the last being :math:`\lVert b - A x\rVert / \lVert b\rVert`
    as the recursion tracks it (0 for ``b = 0``).
  """
  if steps < 0:
    raise ValueError(f"steps must be >= 0, got {steps}")
  zeros = jax.tree.map(jnp.zeros_like, b)
  x = zeros if x0 is None else x0
  r = b if x0 is None else jax.tree.map(jnp.subtract, b, matvec(x0))
  rs = _vdot(r, r)
  b_norm2 = _vdot(b, b)

  def body(_, carry):
    x, r, p, rs = carry
    ap = matvec(p)
    pap = _vdot(p, ap)
    alpha = jnp.where(pap > 0, rs / jnp.where(pap > 0, pap, 1), 0)
    x = jax.tree.map(lambda a, q: a + alpha * q, x, p)
    r = jax.tree.map(lambda a, q: a - alpha * q, r, ap)
    rs_new = _vdot(r, r)
    beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1), 0)
    p = jax.tree.map(lambda a, q: a + beta * q, r, p)
    return x, r, p, rs_new

  x, _, _, rs = jax.lax.fori_loop(0, steps, body, (x, r, r, rs), unroll=unroll)
  return x, jnp.sqrt(rs / jnp.where(b_norm2 > 0, b_norm2, 1))


def _readout(variables: Any) -> str:
  names = sorted(k for k in variables["params"] if k.startswith("Dense_"))
  if not names:
    raise ValueError("the model has no nn.Dense readout (a 'Dense_<i>' parameter block)")
  return names[-1]


def tangent_like(variables: Any) -> Any:
  r"""Zeros shaped like the linearised parameters :math:`\delta`: every parameter of
  ``variables`` except the readout kernel (``{'body': ..., 'bias': ...}``)."""
  params, name = variables["params"], _readout(variables)
  body = {k: v for k, v in params.items() if k != name}
  return jax.tree.map(jnp.zeros_like, {"body": body, "bias": params[name]["bias"]})


def _logits_fn(model: nn.Module, variables: Any, x: jax.typing.ArrayLike):
  """``(f, theta0)``: ``f(theta) -> (logits, features)`` of ``x`` as a function of the
  linearised parameters (readout kernel fixed) and their value at ``variables``."""
  params, name = variables["params"], _readout(variables)
  kernel = params[name]["kernel"]
  primal = {"body": {k: v for k, v in params.items() if k != name}, "bias": params[name]["bias"]}

  def f(theta):
    full = {
      **variables,
      "params": {**theta["body"], name: {"kernel": kernel, "bias": theta["bias"]}},
    }
    phi = frepo.features(model, full, x)
    return phi @ kernel + theta["bias"], phi

  return f, primal


def linearised(
  model: nn.Module, variables: Any, delta: Any, x: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
  r"""``(phi, out)``: the readout features :math:`\phi(x)` at :math:`\theta_0` =
  ``variables`` ([n, F]) and the linearised output change :math:`J(x)\delta` ([n, c]),
  the Jacobian-vector product of the logits in the direction ``delta`` (body and readout
  bias; the readout kernel's direction is 0).
  """
  f, primal = _logits_fn(model, variables, x)
  (_, phi), (out, _) = jax.jvp(f, (primal,), (delta,))
  return phi, out


def inner_hvp(
  model: nn.Module,
  variables: Any,
  x_support: jax.typing.ArrayLike,
  y_support: jax.typing.ArrayLike,
  *,
  reg: float,
) -> Callable[[Any], Any]:
  r"""The Hessian of :func:`inner_loss` in ``delta`` as a function ``v -> H v``:
  :math:`H = \tfrac{\lambda}{mc}\big(J_s^\top (\Phi_s\Phi_s^\top + \lambda I)^{-1} J_s + I\big)`
  (the inner loss is quadratic), with :math:`J_s v` from one linearisation of the logits
  and :math:`J_s^\top w` from its transpose, the kernel factorised once. (The generic
  ``jax.linearize`` of the gradient runs the transposed average pools forward-over-reverse,
  which XLA's CPU backend executes orders of magnitude slower.)"""
  f, primal = _logits_fn(model, variables, x_support)
  (_, phi), f_lin = jax.linearize(f, primal)
  jv = lambda v: f_lin(v)[0]
  jt = jax.linear_transpose(jv, primal)
  m, c = jnp.shape(y_support)
  lam = _ridge(phi, reg)
  factor = jax.scipy.linalg.cho_factor(phi @ phi.T + lam * jnp.eye(m, dtype=phi.dtype))
  scale = lam / (m * c)

  def hvp(v):
    (back,) = jt(jax.scipy.linalg.cho_solve(factor, jv(v)))
    return jax.tree.map(lambda a, b: scale * (a + b), back, v)

  return hvp


def _ridge(phi_s: jax.Array, reg: float) -> jax.Array:
  return reg * jnp.sum(jnp.square(phi_s)) / phi_s.shape[0]


def inner_loss(
  model: nn.Module,
  variables: Any,
  delta: Any,
  x_support: jax.typing.ArrayLike,
  y_support: jax.typing.ArrayLike,
  *,
  reg: float,
) -> jax.Array:
  r""":math:`L_{\mathrm{in}}(\delta)` of the module docstring: the regularised MSE of the
  linearised model on the support set, readout kernel minimised out (convex quadratic in
  ``delta``)."""
  y = jnp.asarray(y_support)
  phi, out = linearised(model, variables, delta, x_support)
  m, c = y.shape
  lam = _ridge(phi, reg)
  r = y - out
  a = jax.scipy.linalg.solve(phi @ phi.T + lam * jnp.eye(m, dtype=phi.dtype), r, assume_a="pos")
  return 0.5 * lam * (jnp.sum(r * a) + _vdot(delta, delta)) / (m * c)


def predict(
  model: nn.Module,
  variables: Any,
  delta: Any,
  x_support: jax.typing.ArrayLike,
  y_support: jax.typing.ArrayLike,
  x_target: jax.typing.ArrayLike,
  *,
  reg: float,
) -> jax.Array:
  r""":math:`f_\delta(X_t) = J_t\delta + \Phi_t\Phi_s^\top(\Phi_s\Phi_s^\top + \lambda I)^{-1}
  (Y_s - J_s\delta)`: the linearised model with its readout kernel fitted to the support set
  ([b, c]). At ``delta = 0`` this is FRePo's KRR on the features of ``variables``."""
  x_support = jnp.asarray(x_support)
  m = x_support.shape[0]
  phi, out = linearised(model, variables, delta, jnp.concatenate([x_support, x_target]))
  phi_s, out_s = phi[:m], out[:m]
  lam = _ridge(phi_s, reg)
  k_ss = phi_s @ phi_s.T + lam * jnp.eye(m, dtype=phi.dtype)
  alpha = jax.scipy.linalg.solve(k_ss, jnp.asarray(y_support) - out_s, assume_a="pos")
  return out[m:] + (phi[m:] @ phi_s.T) @ alpha


def meta_gradient(
  inner: Callable[[Any, Any], jax.Array],
  outer: Callable[[Any, Any], jax.Array],
  delta0: Any,
  u: Any,
  *,
  inner_steps: int,
  hinv_steps: int,
  clip: bool = True,
  hvp: Callable[[Any], Any] | None = None,
  unroll: bool = True,
) -> tuple[jax.Array, Any, Any, dict]:
  r"""The implicit meta-gradient of ``outer(delta*(u), u)`` where ``delta*(u)`` minimises the
  convex quadratic ``inner(delta, u)``.

  The Hessian :math:`H` of ``inner`` in ``delta`` is ``hvp`` (``v -> H v``, held fixed in
  ``u``) or else linearised once at ``delta0`` (``jax.linearize`` of its gradient);
  :math:`\delta^\star = \delta_0 - H^{-1}\nabla L_{\mathrm{in}}(\delta_0)` (exact for a
  quadratic) and :math:`v = H^{-1}\nabla_\delta L_{\mathrm{out}}(\delta^\star)` by ``inner_steps``
  / ``hinv_steps`` iterations of :func:`cg`; the implicit part is
  :math:`-\partial_u\, v^\top\nabla_\delta L_{\mathrm{in}}(\delta^\star; u)` (a reverse pass
  over a Jacobian-vector product; ``unroll``: :func:`cg`'s), clipped per leaf to the direct
  part's norm when ``clip`` (Loo et al., 2023, code).

  Returns:
    ``(outer value, direct, implicit, info)``; ``direct`` and ``implicit`` are pytrees like
    ``u`` (their sum is the meta-gradient) and ``info`` holds ``delta`` and the relative
    CG residuals ``inner_residual``, ``hinv_residual``.
  """
  grad_in = jax.grad(inner)
  if hvp is None:
    g0, hvp = jax.linearize(lambda d: grad_in(d, u), delta0)
  else:
    g0 = grad_in(delta0, u)
  step, inner_residual = cg(hvp, g0, steps=inner_steps, unroll=unroll)
  delta = jax.lax.stop_gradient(jax.tree.map(jnp.subtract, delta0, step))
  value, (g_delta, direct) = jax.value_and_grad(outer, argnums=(0, 1))(delta, u)
  v, hinv_residual = cg(hvp, g_delta, steps=hinv_steps, unroll=unroll)
  v = jax.lax.stop_gradient(v)
  implicit = jax.grad(lambda u: -jax.jvp(lambda d: inner(d, u), (delta,), (v,))[1])(u)
  if clip:

    def clip_leaf(g, ref):
      norm, limit = jnp.linalg.norm(g), jnp.linalg.norm(ref)
      return jnp.where(norm > limit, g * (limit / jnp.where(norm > 0, norm, 1)), g)

    implicit = jax.tree.map(clip_leaf, implicit, direct)
  info = {"delta": delta, "inner_residual": inner_residual, "hinv_residual": hinv_residual}
  return value, direct, implicit, info


class RcigState(NamedTuple):
  """Support ``x``/``y``, the Platt ``log_scale``, their optax state, the model pool
  (parameters and Adam states stacked on a leading ``[P]`` axis), each model's ``age`` [P]
  (Adam steps since its last reset) and ``step``."""

  x: jax.Array
  y: jax.Array
  log_scale: jax.Array
  opt_state: Any
  pool: Any
  pool_opt_state: Any
  age: jax.Array
  step: jax.Array


def make_rcig_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  *,
  model_optimizer: optax.GradientTransformation,
  reg: float,
  pool_size: int,
  max_updates: int,
  pool_steps: int,
  inner_steps: int,
  hinv_steps: int,
  seed: int,
  loss: str = "platt",
  learn_labels: bool = True,
  clip_implicit: bool = True,
  mesh: Mesh | None = None,
  data_axis: str = "data",
) -> tuple[Callable[..., RcigState], Callable[..., tuple[RcigState, dict]], Callable]:
  """Builds ``init(x, y)``, the jitted ``step(state, x_t, y_t)`` and ``init_model(key, x)``.

  Step ``t`` draws, from ``fold_in(fold_in(key(seed), 0), t)``, the pool model ``i`` it
  uses, which then takes ``pool_steps`` Adam steps on the (pre-update) support set (the
  paper's code draws 1 to 15 steps per visit); pool model ``i`` starts as
  ``init_model(fold_in(fold_in(key(seed), 1), i))`` and a model reset at step ``t`` as
  ``init_model(fold_in(.., pool_size + t))``, so a resumed run is identical.

  Args:
    model: a flax classifier with an ``nn.Dense`` readout, e.g. ``ConvNet``.
    optimizer: optax transformation of the support set (images, labels, Platt scale).
    model_optimizer: optax transformation of the pool's models.
    reg: relative ridge (``lambda = reg * tr(Phi_s Phi_s^T) / m``), > 0.
    pool_size: P >= 1 models.
    max_updates: Adam steps after which a pool model is re-initialised (>= 1).
    pool_steps: Adam steps of the chosen model per meta-step (>= 1).
    inner_steps: CG iterations of the inner solve (>= 1).
    hinv_steps: CG iterations of the inverse-Hessian-vector product (>= 1).
    seed: seed of the models and draws.
    loss: 'platt' (the paper's) or 'mse' outer loss (:func:`kdjax.distill.rfad.rfad_loss`).
    learn_labels: update the support labels too.
    clip_implicit: clip the implicit gradient to the direct one's norm (per leaf).
    mesh: shard the target batch along ``data_axis`` (state replicated).

  Returns:
    ``(init, step, init_model)``; ``step`` returns ``(state, {'loss', 'grad_norm',
    'implicit_norm', 'inner_residual', 'hinv_residual', 'model_loss'})`` and donates
    ``state``.
  """
  for name, value in (
    ("pool_size", pool_size),
    ("max_updates", max_updates),
    ("pool_steps", pool_steps),
    ("inner_steps", inner_steps),
    ("hinv_steps", hinv_steps),
  ):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if not reg > 0:
    raise ValueError(f"reg must be > 0, got {reg}")
  if loss not in rfad.LOSSES:
    raise ValueError(f"loss must be one of {list(rfad.LOSSES)}, got {loss!r}")
  names = ("x",) + (("y",) if learn_labels else ()) + (("log_scale",) if loss == "platt" else ())
  draws, inits = (
    jax.random.fold_in(jax.random.key(seed), 0),
    jax.random.fold_in(jax.random.key(seed), 1),
  )

  init_model = frepo.model_initializer(model, model_optimizer)

  def init(x_support, y_support) -> RcigState:
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    pool, pool_opt = frepo.init_pool(init_model, inits, x, pool_size)
    state = RcigState(
      x,
      y,
      jnp.zeros((), jnp.float32),
      None,
      pool,
      pool_opt,
      jnp.zeros(pool_size, jnp.int32),
      jnp.zeros((), jnp.int32),
    )
    return state._replace(opt_state=optimizer.init({k: getattr(state, k) for k in names}))

  def step(state: RcigState, x_target, y_target):
    i = jax.random.randint(jax.random.fold_in(draws, state.step), (), 0, pool_size)
    variables = jax.lax.stop_gradient(jax.tree.map(lambda a: a[i], state.pool))
    u = {k: getattr(state, k) for k in names}

    def inner(delta, u):
      y = u.get("y", state.y)
      return inner_loss(model, variables, delta, u["x"], y, reg=reg)

    def outer(delta, u):
      y = u.get("y", state.y)
      prediction = predict(model, variables, delta, u["x"], y, x_target, reg=reg)
      return rfad.rfad_loss(prediction, y_target, loss=loss, log_scale=u.get("log_scale", 0.0))

    value, direct, implicit, info = meta_gradient(
      inner,
      outer,
      tangent_like(variables),
      u,
      inner_steps=inner_steps,
      hinv_steps=hinv_steps,
      clip=clip_implicit,
      hvp=inner_hvp(model, variables, u["x"], u.get("y", state.y), reg=reg),
    )
    grads = jax.tree.map(jnp.add, direct, implicit)
    updates, opt_state = optimizer.update(grads, state.opt_state, u)
    u = optax.apply_updates(u, updates)

    # pool_steps Adam steps of pool model i on the (pre-update) support set, then maybe a
    # reset.
    m_opt = jax.tree.map(lambda a: a[i], state.pool_opt_state)
    m_loss, trained = frepo.train_pool_model(
      model, model_optimizer, (variables, m_opt), state.x, state.y, pool_steps
    )
    fresh = init_model(jax.random.fold_in(inits, pool_size + state.step), state.x)
    age = state.age[i] + pool_steps
    new = state._replace(
      **u,
      **frepo.pool_update(state, i, trained, fresh, age, max_updates),
      opt_state=opt_state,
      step=state.step + 1,
    )
    metrics = {
      "loss": value,
      "grad_norm": optax.global_norm(grads),
      "implicit_norm": optax.global_norm(implicit),
      "inner_residual": info["inner_residual"],
      "hinv_residual": info["hinv_residual"],
      "model_loss": m_loss,
    }
    return new, metrics

  init, step = kip.jit_support_step(init, step, mesh, data_axis)
  return init, step, init_model
