"""The train state (a pytree of arrays only) and the optimizers built from configs."""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdjax.jobs import config as config_lib
from kdjax.train import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, and nothing else (so it checkpoints as is).

  Attributes:
    step: int32 scalar, the number of updates applied.
    params: the model parameters (the 'params' collection).
    opt_state: the optax optimizer state.
    model_state: the other mutable collections (e.g. ``{'batch_stats': ...}``), or ``{}``.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any

  def variables(self) -> dict:
    """The flax variables ``{'params': ..., **model_state}`` for ``model.apply``."""
    return {"params": self.params, **self.model_state}


def make_optimizer(
  config: Any, num_steps: int, *, name: str = "optimizer"
) -> optax.GradientTransformation:
  r"""An optax optimizer from an ``optimizer`` block (:class:`kdjax.jobs.config.Optimizer`).

  Keys: ``name`` in {'sgd', 'adam', 'adamw'}; the learning-rate keys of
  :func:`kdjax.jobs.schedules.make_schedule` (``learning_rate``, ``schedule``,
  ``warmup_steps``, ``final_lr_fraction``) over ``num_steps``; ``momentum`` (sgd, Nesterov
  when ``nesterov``); ``weight_decay`` (coupled L2 for sgd and adam, decoupled for adamw);
  ``grad_clip_norm`` (0 = off).

  Args:
    config: the optimizer block.
    num_steps: the number of training steps (the cosine schedule's length).
    name: the block's config path, quoted in errors (e.g. ``'teacher.optimizer'``).

  Raises:
    ValueError: naming the key: an unknown optimizer or schedule, a learning rate that is
      not finite and > 0, a negative weight decay or clipping norm, a missing key, ...
  """
  return config_lib.Optimizer.from_config(config, f"config.{name}").make(num_steps)


def _init_state(
  model: nn.Module, tx: optax.GradientTransformation, sample_input: jax.Array, rng: jax.Array
) -> TrainState:
  variables = model.init({"params": rng, "dropout": rng}, sample_input, train=False)
  variables = flax.core.unfreeze(variables)
  params = variables.pop("params")
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state=variables
  )


def state_shardings(
  model: nn.Module,
  tx: optax.GradientTransformation,
  sample_input: Any,
  mesh: Mesh,
  rules: sharding_lib.Rules = (),
) -> Any:
  """NamedShardings of the TrainState that ``create_state`` returns (no arrays allocated)."""
  abstract = jax.eval_shape(
    lambda r: _init_state(model, tx, sample_input, r), jax.random.PRNGKey(0)
  )
  return sharding_lib.tree_shardings(abstract, mesh, rules)


def create_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  sample_input: Any,
  seed: int,
  mesh: Mesh,
  rules: sharding_lib.Rules = (),
) -> tuple[TrainState, Any]:
  """Initialises a TrainState directly in its sharded layout.

  ``jax.jit(init, out_shardings=...)`` makes every device compute only its own shards,
  so an FSDP-sharded model never exists whole on one device.

  Args:
    model: the flax module.
    tx: the optimizer.
    sample_input: an input batch ``[batch, ...]`` (only its shape and dtype matter).
    seed: the initialisation seed (``jax.random.PRNGKey(seed)``).
    mesh: the device mesh.
    rules: sharding rules (see ``kdjax.train.sharding``).

  Returns:
    ``(state, shardings)``: the state and its tree of NamedShardings.
  """
  shardings = state_shardings(model, tx, sample_input, mesh, rules)
  leaves, treedef = jax.tree.flatten(shardings)
  init = _jitted_init(model, tx, sample_input.shape, sample_input.dtype, tuple(leaves), treedef)
  return init(jax.random.PRNGKey(seed)), shardings


@functools.lru_cache(maxsize=8)
def _jitted_init(model, tx, shape, dtype, sharding_leaves, sharding_treedef) -> Any:
  """The jitted initialiser, one per (model, optimizer object, input, layout): models of one
  configuration (e.g. the students of an LM run, sharing their optimizer) compile it once."""
  return jax.jit(
    lambda r: _init_state(model, tx, jnp.zeros(shape, dtype), r),
    out_shardings=jax.tree.unflatten(sharding_treedef, sharding_leaves),
  )
