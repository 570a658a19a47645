r"""Infinite-width training dynamics: gradient descent on MSE and GP inference in closed form.

Names, arguments and semantics follow neural-tangents' `nt.predict` (0.6.5), so that its
users can switch: `gradient_descent_mse_ensemble`, `gradient_descent_mse`, `gp_inference`,
`max_learning_rate`, and the `Gaussian(mean, covariance)` result.

Continuous-time gradient descent on the loss `||f(X) - Y||^2 / (2 N)`, `N = y_train.size`,
with learning rate `eta` moves the outputs of an infinitely wide network as a linear ODE,

.. math::
  \frac{d f_t(X)}{dt} = -\frac{\eta}{N}\, \Theta\, (f_t(X) - Y), \qquad
  \frac{d f_t(x)}{dt} = -\frac{\eta}{N}\, \Theta(x, X)\, (f_t(X) - Y),

solved in the eigenbasis of the train-train kernel `Theta = V diag(lambda) V^T`:
`f_t(X) = Y + e^{-eta Theta t / N} (f_0(X) - Y)` and
`f_t(x) = f_0(x) - Theta(x, X) Theta^{-1} (I - e^{-eta Theta t / N}) (f_0(X) - Y)`.
With `f_0` the Gaussian process of the network at initialisation (NNGP `K`), the outputs of
the infinite ensemble are Gaussian; `get='ntk'` gives their mean and covariance under NTK
training, `get='nngp'` the same formulas with `K` in place of `Theta` (training only the
readout layer). `t=None` means `t = inf`, computed by a Cholesky solve.

Bad kernels: a train-train kernel that is not finite, not symmetric or not PSD (the
tolerances of `kdjax.checks`, shared with `kdjax.krr` and `kdjax.theory`) raises a
ValueError when it is concrete; under `jax.jit` (a traced kernel) the same checks turn
every output into NaN, never a plausible number. (A kernel with negative eigenvalues has
no gradient-flow solution that converges: `K - 100 I` grows like `e^{100 eta t / N}`.)

`diag_reg` adds `diag_reg * tr(K) / n * I` to the train-train kernel (neural-tangents'
relative scale) or `diag_reg * I` with `diag_reg_absolute_scale=True`. Outputs are `[n, c]`
targets with neural-tangents' default `trace_axes=(-1,)`: kernels are `[n1, n2]`, shared by
the `c` output columns.

References: Jacot, Gabriel, Hongler, 2018, "Neural Tangent Kernel"; Lee et al., 2019,
"Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent";
He, Lakshminarayanan, Teh, 2020, "Bayesian Deep Ensembles via the Neural Tangent Kernel"
(`ntkgp`); Novak et al., 2020, "Neural Tangents".
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve

from kdjax import checks

__all__ = [
  "Gaussian",
  "gradient_descent_mse_ensemble",
  "gradient_descent_mse",
  "gp_inference",
  "max_learning_rate",
]


class Gaussian(NamedTuple):
  """Mean `[m, c]` (with leading time axes) and covariance `[m, m]` of the outputs."""

  mean: jax.Array
  covariance: jax.Array


def _check_trace_axes(trace_axes) -> None:
  if tuple(trace_axes) not in ((-1,), (1,)):
    raise ValueError(
      f"trace_axes={trace_axes!r} is not supported: only (-1,), the output "
      "axis of [n, c] targets (neural-tangents' default)"
    )


def _check_targets(y_train) -> jax.Array:
  y = jnp.asarray(y_train)
  if y.ndim != 2:
    raise ValueError(f"y_train must be [n, c] (outputs on the last axis), got {y.shape}")
  return y


def _check_scalar(name: str, value, minimum: float, strict: bool) -> None:
  if not checks.is_concrete(value):
    return
  v = float(value)
  if not (v > minimum if strict else v >= minimum):
    raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")


def _check_times(t) -> jax.Array:
  t = jnp.asarray(t, dtype=jnp.result_type(float))
  if checks.is_concrete(t) and not bool(jnp.all(t >= 0)):
    raise ValueError(f"t must be >= 0 (None for t = infinity), got {np.asarray(t)}")
  return t


def _names(get: str | Sequence[str] | None, allowed: Sequence[str]) -> tuple[str, ...]:
  names = ("nngp", "ntk") if get is None else ((get,) if isinstance(get, str) else tuple(get))
  if not names or any(g not in allowed for g in names):
    raise ValueError(f"get must be one of {tuple(allowed)} or a tuple of them, got {get!r}")
  return names


def _pack(get: str | Sequence[str] | None, names: tuple[str, ...], values: dict):
  if isinstance(get, str):
    return values[get]
  return collections.namedtuple("Gaussians", names)(*(values[g] for g in names))


def _attr(k, g: str) -> jax.Array:
  """The `g` kernel of `k`: `k` itself if it is an array, else `k.nngp` / `k.ntk`."""
  if isinstance(k, (np.ndarray, jax.Array)):
    return jnp.asarray(k)
  value = getattr(k, g, None)
  if value is None:
    raise ValueError(f"the kernels passed have no {g!r} entry, which get={g!r} needs")
  return jnp.asarray(value)


def _ridge(k: jax.Array, diag_reg, absolute: bool) -> jax.Array:
  """The ridge `r` added to the diagonal: `diag_reg`, or `diag_reg * tr(K) / n`."""
  return diag_reg if absolute else diag_reg * jnp.trace(k) / k.shape[0]


def _regularize(k: jax.Array, diag_reg, absolute: bool) -> jax.Array:
  return k + _ridge(k, diag_reg, absolute) * jnp.eye(k.shape[0], dtype=k.dtype)


def _check_kernel(name: str, k: jax.Array, rows: int, cols: int) -> jax.Array:
  if k.shape != (rows, cols):
    raise ValueError(f"{name} must be [{rows}, {cols}], got {k.shape}")
  return k


def _check_train_kernel(name: str, k: jax.Array, n: int) -> jax.Array:
  """A `[n, n]` train-train kernel: symmetric and PSD when concrete (`kdjax.checks`)."""
  k = _check_kernel(name, k, n, n)
  return checks.check_kernel(name, k) if checks.is_concrete(k) else k


def _valid(k: jax.Array, evals: jax.Array | None = None) -> jax.Array | bool:
  """True for a concrete kernel (checked eagerly); for a traced one, whether it is finite,
  symmetric and PSD (`kdjax.checks.kernel_is_valid`; `evals` are `k`'s own eigenvalues)."""
  if checks.is_concrete(k):
    return True
  return checks.kernel_is_valid(k, jnp.linalg.eigvalsh(k) if evals is None else evals)


def _nan_unless(ok, x):
  """`x`, or NaN everywhere when the (traced) kernel check `ok` failed."""
  if ok is True or x is None:
    return x
  return jnp.where(ok, x, jnp.nan)


def _decay(evals: jax.Array, t: jax.Array, normalization: int) -> jax.Array:
  """`[T, n]` factors `exp(-max(lambda, 0) t / N)` (negative eigenvalues are rounding)."""
  return jnp.exp(-jnp.maximum(evals, 0) * t[:, None] / normalization)


def _grown(evals: jax.Array, t: jax.Array, normalization: int) -> jax.Array:
  """`[T, n]` factors `(1 - exp(-lambda t / N)) / |lambda|`: `Theta^{-1} (I - e^{-Theta t/N})`."""
  return -jnp.expm1(-jnp.maximum(evals, 0) * t[:, None] / normalization) / jnp.abs(evals)


def max_learning_rate(
  ntk_train_train: jax.typing.ArrayLike,
  y_train_size: int | None = None,
  momentum: float = 0.0,
  eps: float = 1e-12,
) -> float:
  r"""Largest stable learning rate of full-batch GD (+ momentum) on the MSE loss.

  .. math:: \eta_{max} = \frac{2 (1 + \mu) N}{\lambda_{max}(\Theta) + \epsilon}

  for the loss `||f - y||^2 / (2 N)`, `N = y_train_size` (default: `n`, one output), so
  that `I - eta Theta / N` is a contraction (Goh, 2017, "Why Momentum Really Works").

  Args:
    ntk_train_train: `[n, n]` NTK of the training inputs.
    y_train_size: `y_train.size`, the number of training outputs `N`.
    momentum: momentum `mu` in [0, 1).
    eps: keeps the divisor positive.

  Returns:
    `eta_max` as a Python float.
  """
  k = jnp.asarray(ntk_train_train)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f"ntk_train_train must be [n, n], got {k.shape}")
  factor = k.shape[0] if y_train_size is None else y_train_size
  lam_max = float(np.linalg.eigvalsh(np.asarray(k, np.float64))[-1])
  return 2 * (1 + momentum) * factor / (lam_max + eps)


def gradient_descent_mse(
  k_train_train: jax.typing.ArrayLike,
  y_train: jax.typing.ArrayLike,
  *,
  learning_rate: float = 1.0,
  diag_reg: float = 0.0,
  diag_reg_absolute_scale: bool = False,
  trace_axes: Sequence[int] = (-1,),
) -> Callable:
  r"""Outputs of one (linearised) network trained by gradient flow on MSE, from its kernels.

  .. math::
    f_t(X) = Y + e^{-\eta \Theta t / N} (f_0(X) - Y), \quad
    f_t(x) = f_0(x) - \Theta(x, X) \Theta^{-1} (I - e^{-\eta \Theta t / N}) (f_0(X) - Y),

  `Theta` regularised by `diag_reg`; `t=None` is `t = inf` by a Cholesky solve (then the
  training outputs are exactly `Y`, as in neural-tangents).

  Args:
    k_train_train: `[n, n]` kernel (NTK, or NNGP for readout-only training).
    y_train: `[n, c]` targets.
    learning_rate: `eta`; times are in units of `1 / eta`.
    diag_reg: ridge, relative to `tr(K) / n` unless `diag_reg_absolute_scale`.
    diag_reg_absolute_scale: `diag_reg` in absolute units.
    trace_axes: only `(-1,)` is supported.

  Returns:
    `predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)` giving the
    training outputs `[*t.shape, n, c]`, or `(train, test)` when `fx_test_0` is given (then
    `k_test_train` `[m, n]` is needed); `fx_train_0=None` returns the test outputs only,
    computed with `f_0(X) = 0` (as neural-tangents).
  """
  _check_trace_axes(trace_axes)
  y = _check_targets(y_train)
  n, size = y.shape[0], y.size
  k = _check_kernel("k_train_train", jnp.asarray(k_train_train), n, n)
  k = _check_train_kernel("k_train_train", k.astype(jnp.result_type(k, float)), n)
  y = y.astype(k.dtype)
  _check_scalar("learning_rate", learning_rate, 0.0, strict=True)
  _check_scalar("diag_reg", diag_reg, 0.0, strict=False)
  k_reg = _regularize(k, diag_reg, diag_reg_absolute_scale)
  cache = {}

  def eigh():
    if "eigh" not in cache:
      cache["eigh"] = jnp.linalg.eigh(k_reg)
    return cache["eigh"]

  def valid(use_eigh: bool):
    """The traced kernel check; reuses the eigenvalues of `k_reg` when they are computed."""
    if use_eigh and not checks.is_concrete(k):
      return _valid(k, eigh()[0] - _ridge(k, diag_reg, diag_reg_absolute_scale))
    return _valid(k)

  def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
    if fx_train_0 is None and fx_test_0 is None:
      raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
    if fx_test_0 is not None and k_test_train is None:
      raise ValueError("fx_test_0 needs k_test_train, the [m, n] test-train kernel")
    k_td = None
    if fx_test_0 is not None:
      k_td = jnp.asarray(k_test_train).astype(k.dtype)
      if k_td.ndim != 2 or k_td.shape[1] != n:
        raise ValueError(f"k_test_train must be [m, {n}], got {k_td.shape}")
    f0 = 0.0 if fx_train_0 is None else jnp.asarray(fx_train_0, k.dtype)
    residual = jnp.broadcast_to(f0 - y, y.shape)
    if t is None:
      train = jnp.broadcast_to(y, y.shape)
      test = (
        None
        if k_td is None
        else fx_test_0 - k_td @ cho_solve(cho_factor(k_reg, lower=True), residual)
      )
    else:
      times = _check_times(t)
      evals, evecs = eigh()
      flat = times.reshape(-1)
      coords = evecs.T @ residual
      train = y + jnp.einsum(
        "ji,ti,ic->tjc", evecs, _decay(evals, flat * learning_rate, size), coords
      )
      train = train.reshape(times.shape + y.shape)
      test = None
      if k_td is not None:
        grown = _grown(evals, flat * learning_rate, size)
        test = fx_test_0 - jnp.einsum("mj,ji,ti,ic->tmc", k_td, evecs, grown, coords)
        test = test.reshape(times.shape + (k_td.shape[0], y.shape[1]))
    ok = valid(use_eigh=t is not None)
    train, test = _nan_unless(ok, train), _nan_unless(ok, test)
    if fx_test_0 is None:
      return train
    if fx_train_0 is None:
      return test
    return train, test

  return predict_fn


def gp_inference(
  k_train_train,
  y_train: jax.typing.ArrayLike,
  *,
  diag_reg: float = 0.0,
  diag_reg_absolute_scale: bool = False,
  trace_axes: Sequence[int] = (-1,),
) -> Callable:
  r"""Posterior of the NNGP, of the NTK ensemble after infinite training, or of the NTK-GP.

  With `A = K_{dd} + r I` (the train-train kernel of the mode, regularised):

  .. math::
    \mu = K_{td} A^{-1} Y, \qquad
    \Sigma_{nngp} = K_{tt} - K_{td} A^{-1} K_{dt}, \qquad
    \Sigma_{ntkgp} = \Theta_{tt} - \Theta_{td} A^{-1} \Theta_{dt},

    \Sigma_{ntk} = K_{tt} + \Theta_{td} A^{-1} K_{dd} A^{-1} \Theta_{dt}
      - (\Theta_{td} A^{-1} K_{dt} + K_{td} A^{-1} \Theta_{dt}).

  Args:
    k_train_train: `[n, n]` array, or an object with `.nngp` / `.ntk` (both for the NTK
      covariance).
    y_train: `[n, c]` targets.
    diag_reg: ridge, relative to `tr(K) / n` unless `diag_reg_absolute_scale`.
    diag_reg_absolute_scale: `diag_reg` in absolute units.
    trace_axes: only `(-1,)` is supported.

  Returns:
    `predict_fn(get=None, k_test_train=None, k_test_test=None)`: for each mode in `get`
    (`'nngp'`, `'ntk'`, `'ntkgp'`; None = `('nngp', 'ntk')`) the mean `[m, c]`, or
    `Gaussian(mean, covariance [m, m])` when `k_test_test` is given. `k_test_train=None`
    means the training points: `Gaussian(y_train, 0)`. A string `get` gives one result,
    a tuple a namedtuple.
  """
  _check_trace_axes(trace_axes)
  y = _check_targets(y_train)
  n = y.shape[0]
  _check_scalar("diag_reg", diag_reg, 0.0, strict=False)
  factors = {}

  def factor(g):
    """Cholesky factor of the regularised `g` kernel, and the (traced) kernel check."""
    if g not in factors:
      k = _check_kernel(f"k_train_train.{g}", _attr(k_train_train, g), n, n)
      k = _check_train_kernel(f"k_train_train.{g}", k.astype(jnp.result_type(k, float)), n)
      chol = cho_factor(_regularize(k, diag_reg, diag_reg_absolute_scale), lower=True)
      factors[g] = chol, _valid(k)
    return factors[g]

  def predict_fn(get: str | Sequence[str] | None = None, k_test_train=None, k_test_test=None):
    names = _names(get, ("nngp", "ntk", "ntkgp"))
    out = {}
    for g in names:
      kind = "nngp" if g == "nngp" else "ntk"
      chol, ok = factor(kind)
      dtype = chol[0].dtype
      if k_test_train is None:
        mean = y.astype(dtype)
        out[g] = mean if k_test_test is None else Gaussian(mean, jnp.zeros((n, n), dtype))
        continue
      k_td = _attr(k_test_train, kind).astype(dtype)
      if k_td.ndim != 2 or k_td.shape[1] != n:
        raise ValueError(f"k_test_train must be [m, {n}], got {k_td.shape}")
      mean = _nan_unless(ok, k_td @ cho_solve(chol, y.astype(dtype)))
      if k_test_test is None:
        out[g] = mean
        continue
      prior = "ntk" if g == "ntkgp" else "nngp"
      m = k_td.shape[0]
      k_tt = _check_kernel(f"k_test_test.{prior}", _attr(k_test_test, prior), m, m)
      k_prior_td = _attr(k_test_train, prior).astype(dtype)
      inv_prior_dt = cho_solve(chol, k_prior_td.T)  # A^{-1} K_dt (Theta_dt for ntkgp)
      if g != "ntk":
        cov = k_tt - k_td @ inv_prior_dt
      else:
        if not all(hasattr(k, "nngp") for k in (k_train_train, k_test_train)):
          raise ValueError(
            "the NTK covariance needs both kernels, nngp and ntk: pass "
            "k_train_train and k_test_train with .nngp and .ntk"
          )
        k_dd = _check_train_kernel("k_train_train.nngp", _attr(k_train_train, "nngp"), n)
        ok_dd = _valid(k_dd)
        inv_td = cho_solve(chol, k_td.T)  # A^{-1} Theta_dt
        cross = k_td @ inv_prior_dt
        cov = _nan_unless(ok_dd, k_tt + inv_td.T @ k_dd @ inv_td - (cross + cross.T))
      out[g] = Gaussian(mean, _nan_unless(ok, cov))
    return _pack(get, names, out)

  return predict_fn


def gradient_descent_mse_ensemble(
  kernel_fn: Callable,
  x_train: jax.typing.ArrayLike,
  y_train: jax.typing.ArrayLike,
  *,
  learning_rate: float = 1.0,
  diag_reg: float = 0.0,
  diag_reg_absolute_scale: bool = False,
  trace_axes: Sequence[int] = (-1,),
  check_learning_rate: bool = False,
) -> Callable:
  r"""Mean and covariance of the infinite ensemble of infinite networks trained on MSE.

  For training time `t` (`tau = eta t / N`), `A` the regularised train-train kernel of the
  mode `g` (`K` for `'nngp'`, `Theta` for `'ntk'`) and `M_t = A^{-1} (I - e^{-A tau})`:

  .. math::
    \mu_t(x) = A_{xX} M_t Y, \qquad
    \Sigma^{nngp}_t = K_{xx} - K_{xX} A^{-1}(I - e^{-2 A \tau}) K_{Xx},

    \Sigma^{ntk}_t = K_{xx} + \Theta_{xX} M_t K_{XX} M_t \Theta_{Xx}
      - (\Theta_{xX} M_t K_{Xx} + K_{xX} M_t \Theta_{Xx}),

  and on the training inputs (`x_test=None`) `mu_t = (I - e^{-A tau}) Y`, covariance
  `A_+ e^{-2 A_+ tau}` (nngp) or `e^{-A tau} K e^{-A tau}` (ntk), `A_+` the eigenvalues
  clipped at 0. `t=None` is `t = inf` (then `gp_inference`; on the training inputs the mean
  is exactly `Y` with zero covariance, whatever `diag_reg`).

  Args:
    kernel_fn: `kernel_fn(x1, x2, get)` with `.nngp` / `.ntk` for a tuple `get`, e.g. from
      `kdjax.kernels.stax`.
    x_train: `[n, ...]` training inputs.
    y_train: `[n, c]` targets.
    learning_rate: `eta`; times are in units of `1 / eta`.
    diag_reg: ridge, relative to `tr(K) / n` unless `diag_reg_absolute_scale`.
    diag_reg_absolute_scale: `diag_reg` in absolute units.
    trace_axes: only `(-1,)` is supported.
    check_learning_rate: raise if `learning_rate` exceeds `max_learning_rate` of the NTK
      (discrete GD would diverge; the continuous-time formulas do not see it).

  Returns:
    `predict_fn(t=None, x_test=None, get=None, compute_cov=False)`: for each mode of `get`
    (`'nngp'`, `'ntk'`; None = both) the mean `[*t.shape, m, c]`, or with `compute_cov`
    `Gaussian(mean, covariance [*t.shape, m, m])`; one result for a string `get`, else a
    namedtuple.

  Raises:
    ValueError: for mismatched `x_train`/`y_train`, `learning_rate <= 0`, `diag_reg < 0`,
      an unstable `learning_rate` with `check_learning_rate`, and (from `predict_fn`)
      `t < 0` or an unknown `get`.
  """
  _check_trace_axes(trace_axes)
  y = _check_targets(y_train)
  x_train = jnp.asarray(x_train)
  if x_train.ndim < 1 or x_train.shape[0] != y.shape[0]:
    raise ValueError(
      f"x_train has {x_train.shape[:1]} examples and y_train {y.shape[:1]}: they must match"
    )
  _check_scalar("learning_rate", learning_rate, 0.0, strict=True)
  _check_scalar("diag_reg", diag_reg, 0.0, strict=False)
  size = y.size
  k_dd = {}

  def train_kernels(names):
    missing = tuple(g for g in names if g not in k_dd)
    if missing:
      k = kernel_fn(x_train, None, missing)
      k_dd.update({g: jnp.asarray(_attr(k, g)) for g in missing})
    return k_dd

  if check_learning_rate:
    limit = max_learning_rate(train_kernels(("ntk",))["ntk"], size)
    if learning_rate > limit:
      raise ValueError(
        f"learning_rate={learning_rate} is above the stable maximum "
        f"{limit:.4g} = 2 N / lambda_max(NTK) for N = {size} outputs"
      )
  eig = {}

  def eigenspace(g):
    if g not in eig:
      eig[g] = jnp.linalg.eigh(_regularize(k_dd[g], diag_reg, diag_reg_absolute_scale))
    return eig[g]

  def predict_fn(
    t=None, x_test=None, get: str | Sequence[str] | None = None, compute_cov: bool = False
  ):
    names = _names(get, ("nngp", "ntk"))
    needed = tuple(g for g in ("nngp", "ntk") if g in names or (g == "nngp" and compute_cov))
    kernels = train_kernels(needed)
    dtype = jnp.result_type(kernels[needed[0]], float)
    k_td = k_tt = None
    if x_test is not None:
      k = kernel_fn(x_test, x_train, needed)
      k_td = {g: _attr(k, g).astype(dtype) for g in needed}
      if compute_cov:
        k_tt = _attr(kernel_fn(x_test, None, "nngp"), "nngp").astype(dtype)
    if t is None:
      gp = gp_inference(
        collections.namedtuple("K", needed)(*(kernels[g] for g in needed)),
        y,
        diag_reg=diag_reg,
        diag_reg_absolute_scale=diag_reg_absolute_scale,
      )
      tt = None if not compute_cov else (True if x_test is None else k_tt)
      td = (
        None if x_test is None else collections.namedtuple("K", needed)(*(k_td[g] for g in needed))
      )
      result = gp(names, td, tt)
      return _pack(get, names, {g: getattr(result, g) for g in names})
    times = _check_times(t)
    tau = times.reshape(-1) * learning_rate
    yd = y.astype(dtype)
    out = {}
    for g in names:
      evals, evecs = eigenspace(g)
      coords = evecs.T @ yd
      if k_td is None:
        grown = -jnp.expm1(-jnp.maximum(evals, 0) * tau[:, None] / size)
        mean = jnp.einsum("ji,ti,ic->tjc", evecs, grown, coords)
      else:
        mean = jnp.einsum("mj,ji,ti,ic->tmc", k_td[g], evecs, _grown(evals, tau, size), coords)
      mean = mean.reshape(times.shape + mean.shape[1:])
      if not compute_cov:
        out[g] = mean
        continue
      k_nngp = kernels["nngp"]
      if k_td is None and g == "nngp":
        lam = jnp.maximum(evals, 0)
        cov = jnp.einsum("ji,ti,ki->tjk", evecs, lam * _decay(evals, 2 * tau, size), evecs)
      elif k_td is None:
        decay = jnp.einsum("ji,ti,ki->tjk", evecs, _decay(evals, tau, size), evecs)
        cov = decay @ k_nngp @ decay
      elif g == "nngp":
        half = jnp.einsum("mj,ji->mi", k_td[g], evecs)
        cov = k_tt - jnp.einsum("mi,ti,li->tml", half, _grown(evals, 2 * tau, size), half)
      else:
        # M_t Theta_dt, [T, n, m], then the three terms of Sigma^ntk.
        grown = jnp.einsum("ji,ti,ki,lk->tjl", evecs, _grown(evals, tau, size), evecs, k_td[g])
        cross = jnp.einsum("jm,tjl->tml", k_td["nngp"].T, grown)
        cov = (
          k_tt
          + jnp.einsum("tjm,jk,tkl->tml", grown, k_nngp, grown)
          - (cross + jnp.swapaxes(cross, 1, 2))
        )
      out[g] = Gaussian(mean, cov.reshape(times.shape + cov.shape[1:]))
    return _pack(get, names, out)

  return predict_fn
