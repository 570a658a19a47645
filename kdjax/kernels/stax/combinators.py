"""Combinators: `serial`, `parallel` and `repeat` compose `(init_fn, apply_fn, kernel_fn)`."""

from __future__ import annotations

import jax
from jax import lax

from kdjax.kernels.stax.covariance import to_diagonal
from kdjax.kernels.stax.layer import fused_requirements, layer


def _to_diagonal(k):
  return [to_diagonal(s) for s in k] if isinstance(k, list) else to_diagonal(k)


def serial(*layers):
  """Composes layers: `f = f_L o ... o f_1`.

  Args:
    *layers: `(init_fn, apply_fn, kernel_fn)` triples.

  Returns:
    `(init_fn, apply_fn, kernel_fn)` of the composition. Its `kernel_fn`
    propagates pixel-pair covariances only up to the last layer that needs them.
  """
  if not layers:
    raise ValueError("serial needs at least one layer")
  init_fns, apply_fns, kernel_fns = zip(*layers)

  def init_fn(key, input_shape):
    params = []
    for init, k in zip(init_fns, jax.random.split(key, len(init_fns))):
      input_shape, p = init(k, input_shape)
      params.append(p)
    return input_shape, tuple(params)

  def apply_fn(params, inputs, **kwargs):
    for apply, p in zip(apply_fns, params):
      inputs = apply(p, inputs, **kwargs)
    return inputs

  def needs(full):
    """Per layer, whether its input needs pixel pairs; then the network's."""
    per_layer = []
    for kf in reversed(kernel_fns):
      full = kf.input_needs_full(full)
      per_layer.append(full)
    return per_layer[::-1]

  def transform(k):
    for kf, need in zip(kernel_fns, needs(True)):
      if not need:
        k = _to_diagonal(k)
      k = kf.transform(k)
    return k

  def input_needs_full(full):
    return needs(full)[0]

  return layer(
    init_fn,
    apply_fn,
    transform,
    input_needs_full,
    kernel_fns[0].flattens_input,
    fused_requirements(kernel_fns),
  )


def parallel(*layers):
  """Applies layer `i` to input `i` of a list (after `FanOut`).

  Args:
    *layers: `(init_fn, apply_fn, kernel_fn)` triples, one per branch.

  Returns:
    `(init_fn, apply_fn, kernel_fn)` mapping a list of inputs to a list.
  """
  if not layers:
    raise ValueError("parallel needs at least one layer")
  init_fns, apply_fns, kernel_fns = zip(*layers)

  def check(xs):
    if not isinstance(xs, (list, tuple)) or len(xs) != len(layers):
      raise ValueError(
        f"parallel with {len(layers)} layers needs a list of {len(layers)} inputs (use FanOut)"
      )

  def init_fn(key, input_shapes):
    check(input_shapes)
    outs = [
      init(k, s) for init, k, s in zip(init_fns, jax.random.split(key, len(layers)), input_shapes)
    ]
    return [o[0] for o in outs], tuple(o[1] for o in outs)

  def apply_fn(params, inputs, **kwargs):
    check(inputs)
    return [a(p, x, **kwargs) for a, p, x in zip(apply_fns, params, inputs)]

  def transform(ks):
    check(ks)
    out = []
    for kf, k in zip(kernel_fns, ks):
      if not kf.input_needs_full(True):
        k = to_diagonal(k)
      out.append(kf.transform(k))
    return out

  def input_needs_full(full):
    return any(kf.input_needs_full(full) for kf in kernel_fns)

  return layer(
    init_fn, apply_fn, transform, input_needs_full, requirements=fused_requirements(kernel_fns)
  )


def repeat(layer_: tuple, n: int):
  """`layer_` composed `n` times, as `serial(*[layer_] * n)`.

  As in neural-tangents, `init_fn` and `apply_fn` run the layer in a
  `lax.scan` over `n` stacked parameter sets, so the layer must keep the shape
  of its inputs. The kernel is the same as that of the unrolled composition.

  Args:
    layer_: an `(init_fn, apply_fn, kernel_fn)` triple.
    n: number of repetitions, `n >= 0` (0 gives the identity).

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if not isinstance(n, int) or n < 0:
    raise ValueError(f"n must be a non-negative int, got {n!r}")
  init_one, apply_one, _ = layer_
  _, _, unrolled = serial(*[layer_] * n) if n else layer(None, None, lambda k: k)

  def init_fn(key, input_shape):
    out_shape, _ = init_one(key, input_shape)
    if tuple(out_shape) != tuple(input_shape):
      raise ValueError(
        f"repeat: the layer maps shape {tuple(input_shape)} to {tuple(out_shape)}; it must "
        f"keep the shape (use serial(*[layer] * n) instead)"
      )

    def step(key, _):
      key, sub = jax.random.split(key)
      return key, init_one(sub, input_shape)[1]

    _, params = lax.scan(step, key, None, n)
    return out_shape, params

  def apply_fn(params, inputs, **kwargs):
    def step(x, p):
      return apply_one(p, x, **kwargs), None

    return lax.scan(step, inputs, params, n)[0]

  return layer(
    init_fn,
    apply_fn,
    unrolled.transform,
    unrolled.input_needs_full,
    unrolled.flattens_input,
    unrolled.requirements,
  )
