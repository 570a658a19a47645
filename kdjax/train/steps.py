r"""Pure, jitted, sharded train and eval steps.

``make_train_step`` returns ``train_step(state, batch[, teacher_variables]) -> (state,
metrics)``: one optimizer update of the student on the loss

.. math::
  L(\theta) = \frac{1}{|B|} \sum_{i \in B} m_i\,\ell\big(f_\theta(x_i), g(x_i), y_i\big)

where ``f_theta`` is the student, ``g`` the frozen teacher (absent for supervised
training), ``m_i`` the optional ``batch['mask']`` and ``ell`` an objective from
``kdjax.train.objectives``. The teacher's variables are an explicit argument, never
closed over, so a new teacher (the next born-again generation) reuses the compiled step.
The dropout key of step ``s`` is ``fold_in(PRNGKey(seed), s)``: a step depends only on
the state, the batch and the seed.

``jit_train_step`` compiles it with explicit in/out NamedShardings and donates the old
state's buffers; ``make_eval_step`` / ``jit_eval_step`` give the eval step that
``kdjax.jobs.evaluate.evaluate`` runs over a dataset of fixed-size batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kdjax import mesh as mesh_lib
from kdjax.losses import masked_mean
from kdjax.train.objectives import Objective, cross_entropy
from kdjax.train.state import TrainState

Batch = Mapping[str, jax.Array]


def teacher_logits(teacher: nn.Module, teacher_variables: Any, inputs: jax.Array) -> jax.Array:
  """The frozen teacher's eval-mode logits (no gradient flows into the teacher)."""
  return jax.lax.stop_gradient(teacher.apply(teacher_variables, inputs, train=False))


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  objective: Objective,
  *,
  seed: int,
  teacher: nn.Module | None = None,
  augment: Callable | None = None,
) -> Callable:
  """Builds the (un-jitted) train step.

  Args:
    model: the student.
    tx: its optimizer.
    objective: per-example loss ``objective(student_logits, teacher_logits, labels, rng)
      -> [batch, ...]`` (``teacher_logits`` is None without a teacher).
    seed: the run's seed (step keys are ``fold_in(fold_in(PRNGKey(seed), 0x5EED), step)``).
    teacher: the teacher module; the step then takes ``teacher_variables``.
    augment: optional ``augment(rng, inputs) -> inputs`` applied on device before the
      student and the teacher see the batch (``kdjax.train.augment``).

  Returns:
    ``train_step(state, batch)`` or, with a teacher,
    ``train_step(state, batch, teacher_variables)``, returning ``(new_state, metrics)``
    with scalar metrics ``train_loss`` and ``train_accuracy``. ``batch`` has ``inputs``,
    integer ``labels`` and optionally a boolean ``mask`` over examples (or tokens).
  """
  base_key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)

  def step(state: TrainState, batch: Batch, teacher_variables: Any = None):
    rng = jax.random.fold_in(base_key, state.step)
    mask = batch.get("mask")
    inputs = batch["inputs"]
    if augment is not None:
      inputs = augment(jax.random.fold_in(rng, 2), inputs)
    targets = None
    if teacher is not None:
      targets = teacher_logits(teacher, teacher_variables, inputs)

    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      mutable = list(state.model_state)
      if mutable:
        logits, model_state = model.apply(
          variables, inputs, train=True, mutable=mutable, rngs={"dropout": rng}
        )
      else:
        logits = model.apply(variables, inputs, train=True, rngs={"dropout": rng})
        model_state = state.model_state
      per_example = objective(logits, targets, batch["labels"], jax.random.fold_in(rng, 1))
      loss = masked_mean(per_example, mask)  # masked examples are excluded, NaN or not
      return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      model_state=model_state,
    )
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
    return new_state, {"train_loss": loss, "train_accuracy": masked_mean(correct, mask)}

  if teacher is None:
    return lambda state, batch: step(state, batch)
  return step


def jit_train_step(
  step: Callable, mesh: Mesh, state_shardings: Any, teacher_shardings: Any = None
) -> Callable:
  """``jax.jit`` of a train step with explicit shardings, donating the input state.

  Batches are split over the ``'data'`` axis; metrics come back replicated; the teacher's
  variables (when ``teacher_shardings`` is given) keep their own layout.
  """
  in_shardings = (state_shardings, mesh_lib.batch_sharding(mesh))
  if teacher_shardings is not None:
    in_shardings += (teacher_shardings,)
  return jax.jit(
    step,
    in_shardings=in_shardings,
    out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
    donate_argnums=0,
  )


def make_eval_step(model: nn.Module) -> Callable:
  """``eval_step(variables, batch) -> sums``: summed CE loss, correct predictions, count.

  Sums (not means) so that batches combine exactly; padded examples carry ``mask=False``.
  """

  def eval_step(variables: Any, batch: Batch) -> dict:
    logits = model.apply(variables, batch["inputs"], train=False)
    mask = batch.get("mask")
    mask = (
      jnp.ones(batch["labels"].shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    )
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
    return {
      "loss_sum": jnp.sum(cross_entropy(logits, batch["labels"]) * mask),
      "correct": jnp.sum(correct * mask),
      "count": jnp.sum(mask),
    }

  return eval_step


def jit_eval_step(eval_step: Callable, mesh: Mesh, variables_shardings: Any) -> Callable:
  """``jax.jit`` of an eval step: variables in their layout, batch split over ``'data'``."""
  return jax.jit(
    eval_step,
    in_shardings=(variables_shardings, mesh_lib.batch_sharding(mesh)),
    out_shardings=mesh_lib.replicated(mesh),
  )


def check_teacher(
  student: nn.Module,
  student_variables: Any,
  teacher: nn.Module,
  teacher_variables: Any,
  sample_input: Any,
) -> None:
  """Raises ValueError unless the teacher's logits have the student's shape on ``sample_input``."""
  sample = jax.ShapeDtypeStruct(sample_input.shape, sample_input.dtype)
  s = jax.eval_shape(lambda v, x: student.apply(v, x, train=False), student_variables, sample)
  try:
    t = jax.eval_shape(lambda v, x: teacher.apply(v, x, train=False), teacher_variables, sample)
  except Exception as e:  # a teacher that cannot even read these inputs
    raise ValueError(
      f"the teacher cannot be applied to the student's inputs {sample.shape}: {e}"
    ) from e
  if s.shape != t.shape:
    raise ValueError(
      f"teacher logits have shape {t.shape} but the student's have shape {s.shape}; "
      f"the teacher must predict the same classes as the student "
      f"(check model.num_classes of teacher and student)"
    )
