"""Branching: `FanOut` copies an input; `FanInSum`, `FanInProd`, `FanInConcat` merge branches.

The fan-in kernels assume the branches are independent given the input (true
when every branch but at most one ends with its own zero-mean random layer, as
in residual blocks), as in neural-tangents.
"""

from __future__ import annotations

import functools
import operator

import jax.numpy as jnp

from kdjax.kernels.stax.covariance import State, single
from kdjax.kernels.stax.layer import layer


def FanOut(num: int):
  """Copies the input into a list of `num` branches."""
  if not isinstance(num, int) or num < 1:
    raise ValueError(f"num must be a positive int, got {num!r}")
  return layer(
    lambda key, shape: ([shape] * num, ()),
    lambda params, x, **kw: [x] * num,
    lambda k: [single("FanOut", k)] * num,
  )


def _branches(name: str, ks) -> list[State]:
  """The branch states, checked to share one layout."""
  if not isinstance(ks, list):
    raise ValueError(f"{name} needs a list of branches (use FanOut)")
  shapes = {k.nngp.shape for k in ks}
  if len(shapes) != 1 or len({k.full for k in ks}) != 1:
    raise ValueError(f"{name}: branch kernels differ in shape {shapes}")
  if len({k.axes for k in ks}) != 1:
    raise ValueError(
      f"{name}: the branches put their (batch, channel) axes at different places "
      f"{[k.axes for k in ks]}"
    )
  return ks


def _same_input_shapes(name: str, input_shapes) -> tuple:
  if len({tuple(s) for s in input_shapes}) != 1:
    raise ValueError(f"{name}: input shapes differ: {input_shapes}")
  return input_shapes[0]


def FanInSum():
  r"""Sums a list of branches: `K' = sum_i K_i`, `Theta' = sum_i Theta_i`."""

  def transform(ks):
    ks = _branches("FanInSum", ks)
    total = lambda xs: functools.reduce(operator.add, xs)
    ntks = [k.ntk for k in ks if k.ntk is not None]
    first = ks[0]
    return first.replace(
      nngp=total([k.nngp for k in ks]),
      ntk=total(ntks) if ntks else None,
      cov1=total([k.cov1 for k in ks]),
      cov2=None if first.cov2 is None else total([k.cov2 for k in ks]),
    )

  def init_fn(key, input_shapes):
    return _same_input_shapes("FanInSum", input_shapes), ()

  return layer(init_fn, lambda params, xs, **kw: functools.reduce(jnp.add, xs), transform)


def FanInProd():
  r"""Elementwise product of a list of branches.

  Independent branches multiply their covariances, and the NTK follows the
  product rule:

  .. math::
    K' = \prod_i K_i, \qquad \Theta' = \sum_i \Theta_i \prod_{j \ne i} K_j.
  """

  def transform(ks):
    ks = _branches("FanInProd", ks)
    prod = lambda xs: functools.reduce(operator.mul, xs)
    first = ks[0]
    ntk = None
    if first.with_ntk and any(k.ntk is not None for k in ks):
      nngp_prod, ntk = 1.0, 0.0
      for k in ks:
        ntk = ntk * k.nngp + (0.0 if k.ntk is None else nngp_prod * k.ntk)
        nngp_prod = nngp_prod * k.nngp
    return first.replace(
      nngp=prod([k.nngp for k in ks]),
      ntk=ntk,
      cov1=prod([k.cov1 for k in ks]),
      cov2=None if first.cov2 is None else prod([k.cov2 for k in ks]),
    )

  def init_fn(key, input_shapes):
    return _same_input_shapes("FanInProd", input_shapes), ()

  return layer(init_fn, lambda params, xs, **kw: functools.reduce(jnp.multiply, xs), transform)


def FanInConcat(axis: int = -1):
  r"""Concatenates a list of branches (along the channel axis, for the kernel).

  Each unit of the result is a unit of one branch, so the per-unit kernel is
  the channel-weighted mean of the branch kernels (`C_i` channels each; the
  plain mean when all `C_i` are equal, as in neural-tangents):

  .. math::
    K' = \frac{\sum_i C_i K_i}{\sum_i C_i}.

  Args:
    axis: the axis to concatenate along. The finite network takes any axis;
      the kernel only the channel axis (-1 by default, see `layout`).

  Returns:
    `(init_fn, apply_fn, kernel_fn)`.
  """
  if isinstance(axis, bool) or not isinstance(axis, int):
    raise ValueError(f"axis must be an int, got {axis!r}")

  def transform(ks):
    ks = _branches("FanInConcat", ks)
    ndim = len(ks[0].spatial) + 2
    if not -ndim <= axis < ndim or axis % ndim != ks[0].axes[1]:
      raise ValueError(
        f"FanInConcat's kernel supports the channel axis only ({ks[0].axes[1]} of {ndim}-D "
        f"inputs), got axis={axis}"
      )
    widths = [k.channels for k in ks]
    weights = [1] * len(ks) if len(set(widths)) == 1 else widths

    def mean(xs):
      return functools.reduce(operator.add, [w * x for w, x in zip(weights, xs)]) / sum(weights)

    first = ks[0]
    ntk = None
    if any(k.ntk is not None for k in ks):
      ntk = mean([jnp.zeros_like(k.nngp) if k.ntk is None else k.ntk for k in ks])
    return first.replace(
      nngp=mean([k.nngp for k in ks]),
      ntk=ntk,
      cov1=mean([k.cov1 for k in ks]),
      cov2=None if first.cov2 is None else mean([k.cov2 for k in ks]),
      channels=sum(widths),
    )

  def init_fn(key, input_shapes):
    ndim = len(input_shapes[0])
    if not -ndim <= axis < ndim:
      raise ValueError(f"FanInConcat: axis={axis} is out of range for {ndim}-D inputs")
    a = axis % ndim
    rest = {tuple(s[:a]) + tuple(s[a + 1 :]) for s in input_shapes}
    if len(rest) != 1:
      raise ValueError(f"FanInConcat: input shapes differ beyond axis {axis}: {input_shapes}")
    shape = list(input_shapes[0])
    shape[a] = sum(s[a] for s in input_shapes)
    return tuple(shape), ()

  def apply_fn(params, xs, **kwargs):
    return jnp.concatenate(xs, axis=axis)

  return layer(init_fn, apply_fn, transform)
