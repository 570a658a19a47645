"""Input checks and shared numerics of the logit-level losses (private to kdjax.losses)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.checks import check_unit_interval, is_concrete


def check_same_shape(student_logits, other, other_name):
  if student_logits.shape != other.shape:
    raise ValueError(
      f"{other_name} must have the same shape as student_logits, got "
      f"student_logits {student_logits.shape} and {other_name} {other.shape}"
    )


def compute_dtype(*arrays):
  """float32 for low-precision (or integer) inputs, else the inputs' float type."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def class_last(x, axis):
  if x.ndim == 0:
    raise ValueError(f"logits must have a class axis, got a scalar (axis={axis})")
  try:
    return jnp.moveaxis(x, axis, -1)
  except (ValueError, IndexError) as e:
    raise ValueError(f"axis={axis} is out of range for logits of shape {x.shape}") from e


def example_mask(where, example_shape, expected="the logits shape without the class axis"):
  """Returns ``where`` as a boolean array of ``example_shape`` (or None)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise ValueError(f"where must be a boolean mask, got dtype {where.dtype}")
  try:
    return jnp.broadcast_to(where, example_shape)
  except ValueError as e:
    raise ValueError(
      f"where must be broadcastable to {example_shape} ({expected}), got {where.shape}"
    ) from e


def real_array(x, name: str) -> jax.Array:
  """``jnp.asarray(x)``, rejecting complex dtypes (checked at trace time)."""
  x = jnp.asarray(x)
  if jnp.iscomplexobj(x):
    raise ValueError(f"{name} must be real (floating or integer), got dtype {x.dtype}")
  return x


def check_temperature(temperature) -> jax.Array | float:
  """Raises for a concrete temperature that is not finite and > 0; a traced one that is
  not > 0 becomes NaN, so that every loss computed with it is NaN (not plausible)."""
  if is_concrete(temperature):
    value = np.asarray(temperature)
    if np.iscomplexobj(value) or not np.all((value > 0) & np.isfinite(value)):
      raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return temperature
  return jnp.where(temperature > 0, temperature, jnp.nan)


def prepare_pair(
  student_logits, teacher_logits, temperature, where, axis, other_name="teacher_logits"
):
  """Checks inputs; returns class-last tempered logits with masked rows zeroed, mask."""
  student_logits = real_array(student_logits, "student_logits")
  teacher_logits = real_array(teacher_logits, other_name)
  check_same_shape(student_logits, teacher_logits, other_name)
  temperature = check_temperature(temperature)
  dtype = compute_dtype(student_logits, teacher_logits)
  s = class_last(student_logits.astype(dtype), axis)
  t = class_last(teacher_logits.astype(dtype), axis)
  s, t, mask = zero_masked_rows(s, t, where)
  return s / temperature, t / temperature, mask


def zero_masked_rows(s, t, where):
  """``(s, t, mask)``: class-last ``s`` and ``t`` with the rows ``where`` masks out set to 0,
  and the example mask (None without ``where``)."""
  mask = example_mask(where, s.shape[:-1])
  if mask is not None:
    # Masked rows may hold anything (NaN included); replacing them keeps their
    # gradient exactly zero instead of 0 * NaN.
    s = jnp.where(mask[..., None], s, 0)
    t = jnp.where(mask[..., None], t, 0)
  return s, t, mask


def apply_mask(loss, mask):
  return loss if mask is None else jnp.where(mask, loss, 0)


def nonnegative(x):
  """Returns ``max(x, 0)`` in value with the gradient of ``x`` (straight-through)."""
  return x + jax.lax.stop_gradient(jnp.where(x < 0, -x, 0))


def kl_from_log_probs(log_p, log_q):
  r"""``KL(p || q) = sum_k p_k (log p_k - log q_k)`` over the last axis, 0 log 0 = 0."""
  p = jnp.exp(log_p)
  support = p != 0  # NaN counts as support, so that it propagates
  diff = jnp.where(support, log_p, 0) - jnp.where(support, log_q, 0)
  return nonnegative(jnp.sum(jnp.where(support, p * diff, 0), axis=-1))


def log_mixture(log_p, log_q, weight):
  """``log(weight * p + (1 - weight) * q)`` elementwise, for a weight in [0, 1]."""
  a = log_p + jnp.log(weight)
  b = log_q + jnp.log1p(-weight)
  empty = jnp.isneginf(a) & jnp.isneginf(b)
  mixed = jnp.logaddexp(jnp.where(empty, 0, a), jnp.where(empty, 0, b))
  return jnp.where(empty, -jnp.inf, mixed)


def interior_weight(name, weight, dtype):
  """Validates a weight in [0, 1]; returns (weight safe for logs, is-interior flag)."""
  check_unit_interval(name, weight)
  weight = jnp.asarray(weight, dtype)
  interior = (weight > 0) & (weight < 1)
  return jnp.where(interior, weight, 0.5), interior


def prepare_labels(labels, example_shape, num_classes, mask):
  """Checks integer labels of ``example_shape``; masked rows are set to class 0."""
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
  if labels.shape != tuple(example_shape):
    raise ValueError(
      f"labels must have shape {tuple(example_shape)} (the logits shape "
      f"without the class axis), got {labels.shape}"
    )
  if is_concrete(labels) and (mask is None or is_concrete(mask)):
    values = np.asarray(labels)
    checked = np.ones(values.shape, bool) if mask is None else np.asarray(mask)
    bad = checked & ((values < 0) | (values >= num_classes))
    if bad.any():
      raise ValueError(
        f"labels must be in [0, {num_classes}) (num_classes), got values "
        f"{np.unique(values[bad])[:5].tolist()}"
      )
  return labels if mask is None else jnp.where(mask, labels, 0)
