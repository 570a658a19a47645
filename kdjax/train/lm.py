r"""Language-model distillation steps: objectives, exact gradient accumulation, generated
batches, bits per byte and FSDP rules.

A batch is ``{'inputs', 'targets': int32 [B, L], 'mask': bool [B, L]}`` (True = the target
counts in the loss). Every objective returns the *sum* of its per-token losses over the
masked tokens and their *count* (``kdjax.losses.masked_sum_and_count``); the train step
adds both up over ``micro_batches`` slices of the batch, together with the gradient of
the sum, and divides once:

.. math::
  \mathcal{L} = \frac{\sum_{b,t} m_{b,t}\,\ell_{b,t}}{\sum_{b,t} m_{b,t}}, \qquad
  \nabla\mathcal{L} = \frac{\sum_k \nabla S_k}{\sum_k C_k}

which equals the full-batch mean and gradient whatever the micro-batches' token counts.

Objectives (:func:`make_objective`):

* ``'ce'``: next-token cross-entropy :math:`\ell = -\log q_\theta(y_t \mid y_{<t})`
  (teacher pretraining, the CE-only student, and sequence-level KD on teacher-generated
  continuations: Kim & Rush (2016), "Sequence-Level Knowledge Distillation");
* ``'kd'``: any divergence of ``kdjax.losses`` between the frozen teacher's and the
  student's next-token distributions at the *loss* temperature (teacher-forced token KD;
  on generated continuations it is on-policy GKD with ``'jsd'``: Agarwal et al. (2024),
  "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes";
  with ``'skew_kl'`` DistiLLM's skew KL: Ko et al. (2024), "DistiLLM"). With
  ``chunked=True`` the loss goes through ``kdjax.losses.chunked_kd_sum_and_count`` on the
  final hidden states and output kernels (the bias folded in as an extra input row), so
  ``[B L, V]`` logits are never built.
* ``'adaspec'``: the ``'kd'`` divergence on the selected tokens only: the ``fraction`` of
  real tokens where the student's loss most exceeds a reference student's
  (``teacher_params = {'target': ..., 'reference': ...}``; the reference has the student's
  architecture): Hu et al. (2025), "AdaSPEC: Selective Knowledge Distillation for
  Efficient Speculative Decoders" (:func:`kdjax.losses.adaspec_sum_and_count`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from kdjax import losses, mesh as mesh_lib
from kdjax.models import sampling
from kdjax.train.state import TrainState

Batch = dict[str, jax.Array]
Objective = Callable[[Any, Any, Batch, Any], tuple[jax.Array, jax.Array]]

LM_RULES = ((r".*(kernel|embedding)$", "fsdp"), (r".*", "replicate"))
"""FSDP sharding rules of TransformerLM states: every weight matrix, the token and the
position embeddings are split along their largest divisible axis; biases, norms and
counters are replicated."""


def _head_inputs(
  model: Any, params: Any, tokens: jax.Array, **kwargs
) -> tuple[jax.Array, jax.Array]:
  """``(hidden [N, H + 1], kernel [H + 1, V])`` with ``hidden @ kernel`` = the logits."""
  hidden = model.apply({"params": params}, tokens, return_hidden=True, **kwargs)
  hidden = hidden.reshape(-1, hidden.shape[-1])
  hidden = jnp.concatenate([hidden, jnp.ones((hidden.shape[0], 1), hidden.dtype)], axis=1)
  if hasattr(model, "head_weights"):  # LlamaLM / GPT2LM: no bias, maybe tied
    return hidden, model.head_weights(params)
  head = params["head"]
  return hidden, jnp.concatenate([head["kernel"], head["bias"][None]], axis=0)


def make_objective(
  kind: str,
  student: Any,
  teacher: Any = None,
  *,
  divergence: str = "kl",
  temperature: float = 1.0,
  chunked: bool = False,
  chunk_size: int = 1024,
  fraction: float = 0.4,
  **hyperparams,
) -> Objective:
  """``objective(params, teacher_params, batch, rng) -> (loss sum, token count)``.

  Args:
    kind: ``'ce'``, ``'kd'`` or ``'adaspec'`` (module docstring).
    student: the student module.
    teacher: the teacher module (``'kd'`` only).
    divergence: a key of ``kdjax.losses.DIVERGENCES`` (``'kd'``).
    temperature: the loss temperature (``'kd'``), never the sampling temperature.
    chunked: use the memory-bounded chunked loss (``'kd'``).
    chunk_size: tokens per chunk of the chunked loss.
    fraction: the share of tokens AdaSPEC trains on (``'adaspec'``).
    **hyperparams: the divergence's hyper-parameters (``beta``, ``alpha``).
  """
  if kind == "ce":

    def ce(params, teacher_params, batch, rng):
      del teacher_params
      logits = student.apply({"params": params}, batch["inputs"], train=True, rngs={"dropout": rng})
      nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
      return losses.masked_sum_and_count(nll, batch["mask"])

    return ce
  if kind == "adaspec":
    if chunked:
      raise ValueError("the 'adaspec' objective has no chunked form")
    losses.get_divergence(divergence, temperature=temperature, **hyperparams)  # validates

    def adaspec(params, teacher_params, batch, rng):
      inputs = batch["inputs"]
      target = teacher.apply({"params": teacher_params["target"]}, inputs)
      reference = student.apply({"params": teacher_params["reference"]}, inputs)
      logits = student.apply({"params": params}, inputs, train=True, rngs={"dropout": rng})
      return losses.adaspec_sum_and_count(
        logits,
        jax.lax.stop_gradient(reference),
        jax.lax.stop_gradient(target),
        fraction=fraction,
        where=batch["mask"],
        divergence=divergence,
        temperature=temperature,
        **hyperparams,
      )

    return adaspec
  if kind != "kd":
    raise ValueError(f"objective kind must be 'ce', 'kd' or 'adaspec', got {kind!r}")
  teacher_outputs, student_kd = make_kd_parts(
    student,
    teacher,
    divergence=divergence,
    temperature=temperature,
    chunked=chunked,
    chunk_size=chunk_size,
    **hyperparams,
  )

  def kd(params, teacher_params, batch, rng):
    outputs = jax.lax.stop_gradient(teacher_outputs(teacher_params, batch["inputs"]))
    return student_kd(params, outputs, batch, rng)

  return kd


def make_kd_parts(
  student: Any,
  teacher: Any,
  *,
  divergence: str,
  temperature: float,
  chunked: bool,
  chunk_size: int,
  **hyperparams,
) -> tuple[Callable, Callable]:
  """The two parts of the ``'kd'`` objective: ``(teacher_outputs, student_kd)``.

  ``teacher_outputs(teacher_params, inputs)`` is the frozen teacher's forward pass in eval
  mode: its logits ``[B, L, V]``, or with ``chunked`` its ``(hidden [B L, H + 1], kernel
  [H + 1, V])``. ``student_kd(params, outputs, batch, rng) -> (loss sum, token count)`` is
  the student's forward pass (train mode) and the divergence against those outputs. The
  objective is ``student_kd(params, stop_gradient(teacher_outputs(...)), batch, rng)``;
  ``benchmarks/lm_kd.py`` times the parts apart. Arguments as in :func:`make_objective`.
  """
  losses.get_divergence(divergence, temperature=temperature, **hyperparams)  # validates

  def teacher_outputs(teacher_params, inputs):
    if chunked:
      return _head_inputs(teacher, teacher_params, inputs)
    return teacher.apply({"params": teacher_params}, inputs)

  def student_kd(params, outputs, batch, rng):
    train = {"train": True, "rngs": {"dropout": rng}}
    if chunked:
      s_hidden, s_kernel = _head_inputs(student, params, batch["inputs"], **train)
      t_hidden, t_kernel = outputs
      return losses.chunked_kd_sum_and_count(
        s_hidden,
        s_kernel,
        t_hidden,
        t_kernel,
        divergence=divergence,
        temperature=temperature,
        where=batch["mask"].reshape(-1),
        chunk_size=chunk_size,
        **hyperparams,
      )
    s_logits = student.apply({"params": params}, batch["inputs"], **train)
    return losses.sequence_kd_sum_and_count(
      s_logits,
      outputs,
      where=batch["mask"],
      divergence=divergence,
      temperature=temperature,
      **hyperparams,
    )

  return teacher_outputs, student_kd


def make_train_step(
  objective: Objective, tx: optax.GradientTransformation, *, seed: int, micro_batches: int = 1
) -> Callable:
  """``train_step(state, batch, teacher_params) -> (state, metrics)`` with exact accumulation.

  The batch is cut into ``micro_batches`` equal slices along its first axis; the loss sums,
  token counts and gradients of the sums are added up over them (``lax.scan``; no loop for
  one slice) and divided once by the total count. The dropout key of step ``s`` is
  ``fold_in(PRNGKey(seed), s)``.
  """

  def train_step(state: TrainState, batch: Batch, teacher_params: Any):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    if micro_batches == 1:  # the same sums without a loop: a smaller program to compile
      (total, count), grads = grad_fn(
        state.params, teacher_params, batch, jax.random.fold_in(rng, 0)
      )
    else:
      slices = jax.tree.map(
        lambda x: x.reshape((micro_batches, x.shape[0] // micro_batches) + x.shape[1:]), batch
      )

      def accumulate(carry, inputs):
        total, count, grads = carry
        index, micro = inputs
        (s, c), g = grad_fn(state.params, teacher_params, micro, jax.random.fold_in(rng, index))
        return (total + s, count + c, jax.tree.map(jnp.add, grads, g)), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), zeros)
      (total, count, grads), _ = jax.lax.scan(accumulate, init, (jnp.arange(micro_batches), slices))
    denominator = jnp.maximum(count, 1).astype(jnp.float32)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {
      "train_loss": losses.mean_from_sum_and_count(total, count),
      "train_tokens": count,
    }

  return train_step


def jit_train_step(
  step: Callable, mesh: Mesh, state_shardings: Any, teacher_shardings: Any
) -> Callable:
  """``jax.jit`` with the state's and the teacher's shardings, batches split over 'data'."""
  return jax.jit(
    step,
    in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh), teacher_shardings),
    out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
    donate_argnums=0,
  )


def generated_batch(
  model: Any,
  params: Any,
  batch: Batch,
  rng: jax.Array,
  *,
  prompt_len: int,
  temperature: float,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None,
  pad_id: int,
) -> Batch:
  """A batch whose continuations after the first ``prompt_len`` tokens come from ``model``.

  The prompts are ``batch['inputs'][:, :prompt_len]``; ``L + 1 - prompt_len`` tokens are
  sampled at the *sampling* temperature; the new ``inputs``/``targets`` are the prompt plus
  the continuation shifted by one, and ``mask`` is True only on generated targets (up to
  and including EOS): prompt tokens never count in the loss.
  """
  prompts = batch["inputs"][:, :prompt_len]
  seq_len = batch["inputs"].shape[1]
  out = sampling.generate(
    model,
    {"params": params},
    prompts,
    rng=rng,
    max_new_tokens=seq_len + 1 - prompt_len,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    eos_id=eos_id,
    pad_id=pad_id,
  )
  return _assemble(prompts, out["tokens"], out["mask"])


@functools.partial(jax.jit, static_argnums=1)
def mask_prompt(batch: Batch, prompt_len: int) -> Batch:
  """``batch`` with the targets of its first ``prompt_len`` input tokens masked out (the
  loss counts only continuation tokens, as on generated batches)."""
  keep = jnp.arange(batch["mask"].shape[1]) >= prompt_len - 1
  return dict(batch, mask=batch["mask"] & keep)


@jax.jit
def _assemble(prompts: jax.Array, tokens: jax.Array, mask: jax.Array) -> Batch:
  sequence = jnp.concatenate([prompts, tokens], axis=1)
  prompt_targets = jnp.zeros((prompts.shape[0], prompts.shape[1] - 1), bool)
  return {
    "inputs": sequence[:, :-1],
    "targets": sequence[:, 1:],
    "mask": jnp.concatenate([prompt_targets, mask], axis=1),
  }


@functools.cache
def make_nll_step(model: Any) -> Callable:
  """``nll_step(params, batch, token_bytes) -> {'nll_sum', 'bytes', 'tokens'}`` (jitted sums).

  One jitted function per (hashable) model configuration, so models of one architecture
  (every student of a run, the teacher scoring samples again and again) compile it once.
  """

  @jax.jit
  def nll_step(params, batch, token_bytes):
    logits = model.apply({"params": params}, batch["inputs"])
    nll = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), batch["targets"]
    )
    mask = batch["mask"]
    return {
      "nll_sum": jnp.sum(jnp.where(mask, nll, 0.0)),
      "bytes": jnp.sum(jnp.where(mask, token_bytes[batch["targets"]], 0)),
      "tokens": jnp.sum(mask, dtype=jnp.int32),
    }

  return nll_step


def bits_per_byte(
  nll_step: Callable, params: Any, batches: list[Batch], token_bytes: np.ndarray
) -> dict:
  r"""``{'bits_per_byte', 'nll_per_token'}`` over ``batches``:
  :math:`\sum \mathrm{NLL} / (\ln 2 \sum \mathrm{bytes})` (module ``kdjax.data.text``)."""
  totals = {"nll_sum": 0.0, "bytes": 0, "tokens": 0}
  for batch in batches:
    for key, value in nll_step(params, batch, token_bytes).items():
      totals[key] += float(value) if key == "nll_sum" else int(value)
  if not math.isfinite(totals["nll_sum"]):
    raise FloatingPointError(f"non-finite validation NLL {totals['nll_sum']}")
  return {
    "bits_per_byte": totals["nll_sum"] / (math.log(2) * max(totals["bytes"], 1)),
    "nll_per_token": totals["nll_sum"] / max(totals["tokens"], 1),
  }
