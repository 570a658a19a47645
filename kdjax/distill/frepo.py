r"""FRePo: dataset distillation by neural feature regression with an online model pool.

Zhou, Nezhadarya & Ba (2022), "Dataset Distillation using Neural Feature Regression"
(NeurIPS). A pool of ``P`` finite ConvNets (``kdjax.models.ConvNet``) is trained online
on the current support set; at step ``t`` model ``i = t mod P`` with parameters
:math:`\theta_i` gives last-layer features :math:`\phi_{\theta_i}` (the input of its
readout) and the support set is updated along the gradient of the KRR loss

.. math::
  L(X_s, Y_s) = \tfrac12\,\mathrm{mean}\big(Y_t - \phi(X_t)\phi(X_s)^\top
     (\phi(X_s)\phi(X_s)^\top + \lambda I)^{-1} Y_s\big)^2,
  \qquad \phi = \phi_{\mathrm{sg}(\theta_i)},

where the meta-gradient flows through the features and the kernel only (the model
parameters are constants: no unrolled training). Then model ``i`` takes one Adam step on
the MSE of its logits to the support labels, and is re-initialised after
``max_updates`` such steps, so the pool always spans models of different ages.
The KRR is :func:`kdjax.distill.rfad.krr_predict` (dual or primal, whichever is smaller).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kdjax.distill import rfad

__all__ = ["FrepoState", "features", "pool_update", "make_frepo_step"]


def features(model: nn.Module, variables: Any, x: jax.typing.ArrayLike) -> jax.Array:
  r"""The input of ``model``'s last ``nn.Dense`` (its readout): ``[n, F]`` features.

  For ``kdjax.models.ConvNet`` these are the flattened last-block activations, so
  ``logits = features @ W + b``.
  """
  captured = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
      captured.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    model.apply(variables, jnp.asarray(x))
  if not captured:
    raise ValueError(f"{type(model).__name__} has no nn.Dense readout to take features from")
  return captured[-1]


class FrepoState(NamedTuple):
  """Support ``x``/``y``, their optax state, the model pool (parameters and Adam states
  stacked on a leading ``[P]`` axis), each model's ``age`` [P] (updates since its last
  reset) and ``step``."""

  x: jax.Array
  y: jax.Array
  opt_state: Any
  pool: Any
  pool_opt_state: Any
  age: jax.Array
  step: jax.Array


def model_initializer(model: nn.Module, model_optimizer: optax.GradientTransformation):
  """``init_model(key, x) -> (params, opt_state)``: a pool model at its start, as FRePo's and
  RCIG's pools (re-)initialise their models."""

  def init_model(key, x):
    params = model.init(key, x[:1])
    return params, model_optimizer.init(params)

  return init_model


def init_pool(init_model: Callable, key: jax.Array, x: jax.Array, pool_size: int) -> tuple:
  """The pool's ``(params, opt_state)``, stacked on a leading ``[P]`` axis: model ``i`` is
  ``init_model(fold_in(key, i), x)``."""
  return jax.vmap(lambda i: init_model(jax.random.fold_in(key, i), x))(jnp.arange(pool_size))


def train_pool_model(
  model: nn.Module,
  model_optimizer: optax.GradientTransformation,
  trained: tuple,
  x: jax.Array,
  y: jax.Array,
  num_steps: int = 1,
) -> tuple[jax.Array, tuple]:
  r"""``num_steps`` optimizer steps of a pool model ``trained = (params, opt_state)`` on the
  support set's :math:`\tfrac12\,\mathrm{mean}_i \lVert f(x_i) - y_i\rVert^2`; returns the
  last step's loss and the new ``(params, opt_state)``. A Python loop (unrolled): XLA's CPU
  backend runs convolutions inside a while loop an order of magnitude slower."""

  def model_loss(p):
    return 0.5 * jnp.mean(jnp.sum(jnp.square(model.apply(p, x) - y), -1))

  params, opt = trained
  for _ in range(num_steps):
    loss, grads = jax.value_and_grad(model_loss)(params)
    updates, opt = model_optimizer.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
  return loss, (params, opt)


def pool_update(state: Any, i: Any, trained: tuple, fresh: tuple, age: Any, max_updates: int):
  """The pool fields (``pool``, ``pool_opt_state``, ``age``) of ``state`` once model ``i``
  has trained to ``trained = (params, opt_state)`` at ``age`` updates: FRePo's pool (Zhou et
  al. 2022) restarts the model from ``fresh = (params, opt_state)`` at age 0 once ``age >=
  max_updates``. Shared by FRePo's and RCIG's steps."""
  reset = age >= max_updates
  pick = lambda new, old: jnp.where(reset, new, old)  # noqa: E731
  params, opt = (jax.tree.map(pick, f, t) for f, t in zip(fresh, trained))
  put = lambda stacked, one: stacked.at[i].set(one)  # noqa: E731
  return {
    "pool": jax.tree.map(put, state.pool, params),
    "pool_opt_state": jax.tree.map(put, state.pool_opt_state, opt),
    "age": state.age.at[i].set(jnp.where(reset, 0, age)),
  }


def make_frepo_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  *,
  model_optimizer: optax.GradientTransformation,
  reg: float,
  pool_size: int,
  max_updates: int,
  seed: int,
  learn_labels: bool = True,
) -> tuple[
  Callable[..., FrepoState],
  Callable[..., tuple[FrepoState, dict]],
  Callable[[jax.Array, jax.Array], Any],
]:
  """Builds ``init(x, y)``, the jitted ``step(state, x_t, y_t)`` and ``init_model(key, x)``.

  Model ``i`` is (re-)initialised by ``init_model(fold_in(key(seed), t), x)`` where ``t``
  is the step of its reset (``t = i`` at the start), so a resumed run is identical.

  Args:
    model: a flax classifier with an ``nn.Dense`` readout, e.g. ``ConvNet(normalization=
      'none')``.
    optimizer: optax transformation of the support set.
    model_optimizer: optax transformation of the pool's models.
    reg: relative KRR ridge (``reg * tr(K_ss)/m``).
    pool_size: P >= 1 models.
    max_updates: updates after which a model is re-initialised (>= 1).
    seed: seed of the models' initialisations.
    learn_labels: update the support labels too.

  Returns:
    ``(init, step, init_model)``; ``step`` returns ``(state, {'loss', 'grad_norm',
    'model_loss'})`` and donates ``state``.
  """
  if pool_size < 1 or max_updates < 1:
    raise ValueError(f"pool_size and max_updates must be >= 1, got {pool_size}, {max_updates}")
  names = ("x", "y") if learn_labels else ("x",)
  base = jax.random.key(seed)

  init_model = model_initializer(model, model_optimizer)

  def init(x_support, y_support) -> FrepoState:
    x, y = jnp.array(x_support, jnp.float32), jnp.array(y_support, jnp.float32)
    pool, pool_opt = init_pool(init_model, base, x, pool_size)
    opt_state = optimizer.init({k: v for k, v in (("x", x), ("y", y)) if k in names})
    return FrepoState(
      x, y, opt_state, pool, pool_opt, jnp.zeros(pool_size, jnp.int32), jnp.zeros((), jnp.int32)
    )

  def step(state: FrepoState, x_target, y_target):
    i = state.step % pool_size
    params = jax.tree.map(lambda a: a[i], state.pool)
    frozen = jax.lax.stop_gradient(params)
    support = {k: getattr(state, k) for k in names}

    def loss_fn(support):
      xs, ys = support["x"], support.get("y", state.y)
      phi = features(model, frozen, jnp.concatenate([xs, x_target]))
      m = xs.shape[0]
      prediction = rfad.krr_predict(phi[m:], phi[:m], ys, reg=reg)
      return 0.5 * jnp.mean(jnp.square(prediction - y_target))

    loss, grads = jax.value_and_grad(loss_fn)(support)
    updates, opt_state = optimizer.update(grads, state.opt_state, support)
    support = optax.apply_updates(support, updates)

    # One online step of model i on the (pre-update) support set, then maybe a reset.
    m_opt = jax.tree.map(lambda a: a[i], state.pool_opt_state)
    m_loss, trained = train_pool_model(model, model_optimizer, (params, m_opt), state.x, state.y)
    fresh = init_model(jax.random.fold_in(base, state.step + pool_size), state.x)
    new = state._replace(
      **support,
      **pool_update(state, i, trained, fresh, state.age[i] + 1, max_updates),
      opt_state=opt_state,
      step=state.step + 1,
    )
    return new, {"loss": loss, "grad_norm": optax.global_norm(grads), "model_loss": m_loss}

  return init, jax.jit(step, donate_argnums=0), init_model
