r"""Monte-Carlo NNGP / NTK: empirical kernels of finite networks averaged over initialisations.

As neural-tangents' `monte_carlo_kernel_fn`: for `S` parameter draws `theta_s ~ init_fn`,

.. math::
  \hat K(x_1, x_2) = \frac{1}{S} \sum_{s=1}^{S} \frac{1}{C} \sum_{c=1}^{C}
    f_c(x_1; \theta_s) f_c(x_2; \theta_s), \qquad
  \hat \Theta(x_1, x_2) = \frac{1}{S} \sum_{s=1}^{S} \frac{1}{C} \sum_{c=1}^{C}
    \nabla_\theta f_c(x_1; \theta_s) \cdot \nabla_\theta f_c(x_2; \theta_s),

the mean over the `C` outputs (neural-tangents' `trace_axes=(-1,)`). Both converge to the
analytic `kernel_fn` as the width and `S` grow (the error falls like `1/sqrt(S)` at a
fixed width, down to the finite-width bias).

The draws use the key chain `key, k_s = split(key)` for `s = 1..S`, so the estimates for
a sequence of sample counts are nested, as in neural-tangents.

References: Neal, 1996, "Bayesian Learning for Neural Networks"; Novak et al., 2020,
"Neural Tangents: Fast and Easy Infinite Neural Networks in Python".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from kdjax.kernels.empirical import empirical_ntk_fn
from kdjax.kernels.gram import tiled_kernel_fn
from kdjax.kernels.stax.layer import get_names, pack

__all__ = ["monte_carlo_kernel_fn"]


def _counts(n_samples) -> tuple[int, ...]:
  counts = (n_samples,) if isinstance(n_samples, (int, float)) else tuple(n_samples)
  if not counts or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in counts):
    raise ValueError(f"n_samples must be a positive int or a sequence of them, got {n_samples!r}")
  return tuple(sorted(set(counts)))


def monte_carlo_kernel_fn(
  init_fn: Callable,
  apply_fn: Callable,
  key: jax.Array,
  n_samples: int | Sequence[int],
  batch_size: int = 0,
  trace_axes: Sequence[int] = (-1,),
) -> Callable:
  """Builds `kernel_fn(x1, x2=None, get=None)`, the Monte-Carlo estimate of the kernels.

  Args:
    init_fn: `init_fn(key, input_shape) -> (output_shape, params)`, e.g. from
      `kdjax.kernels.stax`.
    apply_fn: `apply_fn(params, x) -> [n, C]`.
    key: a `jax.random` key.
    n_samples: number of initialisations `S`, or a sequence of counts: then `kernel_fn`
      returns the list of estimates at each count (ascending), from one nested chain.
    batch_size: `0` computes the whole kernel at once; `b > 0` computes it in `b x b`
      tiles of inputs (`kdjax.kernels.tiled_kernel_fn`; `b` need not divide `n1`, `n2`).
      Only with an int `n_samples`.
    trace_axes: only `(-1,)` (the mean over the output units) is supported.

  Returns:
    `kernel_fn(x1, x2=None, get=None)`: `get` is `'nngp'`, `'ntk'` or a tuple (None means
    both, as a namedtuple with `.nngp` / `.ntk`), like `kdjax.kernels.stax` kernels.
  """
  counts = _counts(n_samples)
  if tuple(trace_axes) != (-1,):
    raise ValueError(f"trace_axes={trace_axes!r} is not supported: only (-1,)")
  if not isinstance(batch_size, int) or batch_size < 0:
    raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
  if batch_size and len(counts) > 1:
    raise ValueError(
      "batch_size > 0 needs an int n_samples, got a sequence "
      f"{tuple(counts)}; call once per count instead"
    )
  ntk_fn = empirical_ntk_fn(apply_fn)

  def one_sample(sample_key, x1, x2, names):
    _, params = init_fn(sample_key, x1.shape)
    out = []
    for g in names:
      if g == "nngp":
        f1 = apply_fn(params, x1)
        f2 = f1 if x2 is None else apply_fn(params, x2)
        if f1.ndim != 2:
          raise ValueError(f"apply_fn must return [n, C] outputs, got {f1.shape}")
        out.append(f1 @ f2.T / f1.shape[1])
      else:
        out.append(ntk_fn(x1, x2, params))
    return tuple(out)

  def estimates(x1, x2, names):
    """Estimates at every count in `counts`, one nested key chain."""

    def body(carry, _):
      chain, sums = carry
      chain, sample_key = jax.random.split(chain)
      sample = one_sample(sample_key, x1, x2, names)
      return (chain, tuple(s + k for s, k in zip(sums, sample))), None

    shapes = jax.eval_shape(lambda: one_sample(key, x1, x2, names))
    carry = (key, tuple(jnp.zeros(s.shape, s.dtype) for s in shapes))
    out, done = [], 0
    for count in counts:
      carry, _ = lax.scan(body, carry, None, length=count - done)
      done = count
      out.append(tuple(s / count for s in carry[1]))
    return out

  compiled = jax.jit(estimates, static_argnums=2)

  def kernel_fn(x1, x2=None, get=None):
    names = get_names(get)
    x1 = jnp.asarray(x1)
    x2 = None if x2 is None else jnp.asarray(x2)
    results = [pack(get, names, list(r)) for r in compiled(x1, x2, names)]
    return results[0] if isinstance(n_samples, int) else results

  if batch_size:
    return tiled_kernel_fn(kernel_fn, batch_size)
  return kernel_fn
