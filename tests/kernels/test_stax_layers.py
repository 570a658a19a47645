"""Newer kdjax.kernels.stax layers against neural-tangents 0.6.5 values (float64).

Nonlinearities, normalisation, pooling and padding, fan-in, repeat, transposed
convolutions, the standard parameterization's `s` and `batch_axis` /
`channel_axis`, each in a small network on vectors and/or images (NHWC, or
transposed for the layout cases).

The values and the network of each case come from `reference/layers.npz`,
written by `reference/generate.py` (see `reference/README.md`).
"""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.kernels import stax

from .reference import stax_spec

REFERENCE = np.load(os.path.join(os.path.dirname(__file__), "reference", "layers.npz"))
CASES = json.loads(str(REFERENCE["specs"]))
KEYS = ("nngp", "ntk", "nngp_11", "ntk_11")


def build(spec):
  """kdjax network from a JSON spec in neural-tangents' names (as generate.py builds NT's)."""
  return stax_spec.build(stax, spec)


def relative_error(got, want):
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


@functools.cache
def kernels(name):
  """kdjax's four kernels of a case, in float64 (computed once per case)."""
  case = CASES[name]
  x1, x2 = REFERENCE[f"{case['input']}.x1"], REFERENCE[f"{case['input']}.x2"]
  _, _, kernel_fn = build(case["spec"])
  with jax.enable_x64(True):
    k12, k11 = kernel_fn(x1, x2), kernel_fn(x1)
  assert k12.nngp.dtype == np.float64
  return {"nngp": k12.nngp, "ntk": k12.ntk, "nngp_11": k11.nngp, "ntk_11": k11.ntk}


# neural-tangents 0.6.5 is inaccurate on the diagonal of x1 vs itself (theta = 0) for these:
# NaN or autodiff through sqrt(rounding) for RectifiedMonomial, sqrt(rounding) after Sign.
# There the diagonal is checked against closed forms below instead.
NT_DIAGONAL_INACCURATE = ("rectified_monomial", "sign")
# Image cases (slower to compile) in the default run; the others are marked slow.
# (Nonlinearities on images share the code path of the original Relu image references.)
DEFAULT_IMAGE_CASES = (
  "circular",
  "conv_transpose",
  "sum_pool",
  "avg_pool_normalize_edges",
  "nchw_concat_flatten_batch_last",
  "attention_softmax_concat_values",
)


# Inputs with spatial axes (NHWC images and the batch_axis / channel_axis transposes).
IMAGE_INPUTS = ("img", "nchw", "cnhw", "hnwc")


def _param(name):
  slow = CASES[name]["input"] in IMAGE_INPUTS and name not in DEFAULT_IMAGE_CASES
  return pytest.param(name, marks=pytest.mark.slow if slow else ())


def case_errors(name):
  """`{key: max|kdjax - NT| / max|NT|}` of a case (the README's error table)."""
  got = kernels(name)
  errors = {}
  for key in KEYS:
    want = REFERENCE[f"{name}.{key}"]
    value = np.asarray(got[key])
    assert value.shape == want.shape
    assert np.all(np.isfinite(value)), key
    known = np.ones(want.shape, bool)
    if key.endswith("_11") and name.startswith(NT_DIAGONAL_INACCURATE):
      known = ~np.eye(*want.shape, dtype=bool)
    errors[key] = relative_error(value[known], want[known])
  return errors


@pytest.mark.parametrize("name", [_param(name) for name in sorted(CASES)])
def test_matches_neural_tangents(name):
  errors = case_errors(name)
  assert max(errors.values()) < 1e-6, errors


def _input_variance():
  """Per-example variance after the cases' first Dense(W_std=1.5, b_std=0.3)."""
  x1 = REFERENCE["fc.x1"]
  return 1.5**2 * np.sum(x1**2, 1) / x1.shape[1] + 0.3**2


def test_sign_diagonal_is_the_closed_form():
  """sign(u)^2 = 1, then Dense(1.1, 0.2), Relu (halves the variance) and the readout."""
  got = kernels("sign")
  relu = (1.1**2 * 1.0 + 0.2**2) / 2  # Relu's NNGP and NTK on the diagonal (NTK was nngp).
  nngp = 1.2**2 * relu + 0.2**2
  np.testing.assert_allclose(np.diagonal(got["nngp_11"]), nngp, rtol=1e-14)
  np.testing.assert_allclose(np.diagonal(got["ntk_11"]), nngp + 1.2**2 * relu, rtol=1e-14)


def test_rectified_monomial_diagonal_is_the_closed_form():
  """E[relu(u)^2n] = (2n - 1)!! v^n / 2 and dot = n^2 E[relu(u)^(2n-2)]."""
  var = _input_variance()
  double_factorial = lambda n: math.prod(range(n, 0, -2))
  for degree in range(4):
    got = kernels(f"rectified_monomial{degree}")
    moment = double_factorial(2 * degree - 1) * var**degree / 2
    dot = degree**2 * double_factorial(2 * degree - 3) * var ** (degree - 1) / 2 if degree else 0
    nngp = 1.2**2 * moment + 0.2**2
    np.testing.assert_allclose(np.diagonal(got["nngp_11"]), nngp, rtol=1e-12)
    np.testing.assert_allclose(np.diagonal(got["ntk_11"]), nngp + 1.2**2 * dot * var, rtol=1e-12)


def test_bad_arguments_raise_value_errors_naming_them():
  cases = [
    (lambda: stax.Dropout(0.0), "rate"),
    (lambda: stax.Dropout(0.5, mode="eval"), "mode"),
    (lambda: stax.Dense(3, s=(1, 2)), "s only applies"),
    (lambda: stax.Conv(3, (2, 2), parameterization="standard", s=(0, 1)), "s must be"),
    (lambda: stax.ConvTranspose(3, (2, 2), padding="CIRCULAR"), "CIRCULAR"),
    (lambda: stax.repeat(stax.Relu(), -1), "n must"),
    (lambda: stax.Monomial(-1), "degree"),
    (lambda: stax.RectifiedMonomial(1.5), "degree"),
    (lambda: stax.ElementwiseNumerical(jnp.tanh, 0), "deg"),
    (lambda: stax.Elementwise(jnp.tanh), "nngp_fn"),
    (lambda: stax.Polynomial([1.0, np.nan]), "coef"),
    (lambda: stax.AvgPool((2, 2), normalize_edges=1), "normalize_edges"),
  ]
  for make, message in cases:
    with pytest.raises(ValueError, match=message):
      make()
  x = np.ones((2, 4, 4, 3))
  kernel_errors = [
    (stax.Dropout(0.5), "Dropout cannot be applied to the inputs"),
    (stax.LayerNorm(axis=(1, 2)), "channel axis"),
    (stax.LayerNorm(axis=(0, 3)), "batch axis"),
    (stax.serial(stax.FanOut(2), stax.FanInConcat(axis=1)), "channel axis"),
  ]
  for (_, _, kernel_fn), message in kernel_errors:
    with pytest.raises(ValueError, match=message):
      kernel_fn(x)
  init_fn, _, _ = stax.repeat(stax.Dense(5), 2)
  with pytest.raises(ValueError, match="keep the shape"):
    init_fn(jax.random.key(0), (2, 3))


IMAGE_NETWORK = (
  (2, 5, 4, 3),
  [
    stax.Conv(4, (3, 2), padding="CIRCULAR", parameterization="standard", s=(1, 2)),
    stax.LayerNorm(axis=(1, 2, 3)),
    stax.Gelu(),
    stax.ConvTranspose(4, (3, 2), (2, 1), "SAME"),
    stax.Dropout(0.8),
    stax.FanOut(2),
    stax.parallel(stax.Sin(), stax.Polynomial([0.1, 0.5, 0.2])),
    stax.FanInConcat(),
    stax.SumPool((2, 2), (2, 2), "SAME"),
    stax.AvgPool((3, 3), padding="SAME", normalize_edges=True),
    stax.repeat(stax.serial(stax.Conv(8, (2, 2), padding="SAME"), stax.Relu()), 2),
    stax.GlobalSumPool(),
    stax.Dense(3),
  ],
)
VECTOR_NETWORK = (
  (2, 4),
  [
    stax.Dense(6, parameterization="standard", s=(1, 2)),
    stax.LayerNorm(),
    stax.Dropout(0.8),
    stax.FanOut(2),
    stax.parallel(stax.Gabor(), stax.Hermite(2)),
    stax.FanInProd(),
    stax.repeat(stax.serial(stax.Dense(12), stax.Relu()), 2),
    stax.Dense(3),
  ],
)


@pytest.mark.parametrize(
  "network",
  [VECTOR_NETWORK, pytest.param(IMAGE_NETWORK, marks=pytest.mark.slow)],
  ids=["vectors", "images"],
)
def test_finite_networks_have_the_kernels_output_shapes(network):
  """init_fn/apply_fn of the newer layers run and agree on shapes."""
  input_shape, layers = network
  init_fn, apply_fn, _ = stax.serial(*layers)
  x = jax.random.normal(jax.random.key(0), input_shape)
  shapes = []

  def init_params(key):
    shape, params = init_fn(key, x.shape)
    shapes.append(shape)
    return params

  # One compile each for init and apply (eager random draws compile per shape).
  params = jax.jit(init_params)(jax.random.key(1))
  out = jax.jit(apply_fn)(params, x, rng=jax.random.key(2))
  assert out.shape == shapes[0] == (2, 3)
  assert bool(jnp.all(jnp.isfinite(out)))


FINITE_WIDTH_LAYERS = {
  "Gelu": stax.Gelu(),
  "Sin": stax.Sin(1.3, 0.7, 0.4),
  "Rbf": stax.Rbf(0.6),
  "Sign": stax.Sign(),
  "Exp": stax.Exp(0.8, 0.5),
  "Gaussian": stax.Gaussian(1.2, -0.7),
  "Polynomial": stax.Polynomial([0.3, -0.5, 0.2, 0.7]),
  "RectifiedMonomial": stax.RectifiedMonomial(2),
  "Hermite": stax.Hermite(3),
  "Gabor": stax.Gabor(),
  "ElementwiseNumerical": stax.ElementwiseNumerical(jnp.tanh, 20),
  "LayerNorm": stax.LayerNorm(),
  "Dropout": stax.Dropout(0.7),
}


def test_finite_width_networks_converge_to_their_kernels():
  """apply_fn and kernel_fn mean the same function: a 60,000-unit layer's Monte-Carlo NNGP.

  Inputs have unit mean square and the Dense has W_std=1, no bias, so the
  pre-activations have unit variance (as Hermite assumes).
  """
  width = 60_000
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 4))
  x = x / np.sqrt(np.mean(x**2, axis=1, keepdims=True))
  init_dense, apply_dense, _ = stax.Dense(width)
  with jax.enable_x64(True):
    _, params = init_dense(jax.random.key(0), x.shape)
    z = apply_dense(params, jnp.asarray(x))
    for name, (_, apply_fn, _) in FINITE_WIDTH_LAYERS.items():
      _, _, kernel_fn = stax.serial(stax.Dense(width), FINITE_WIDTH_LAYERS[name])
      f = np.asarray(apply_fn((), z, rng=jax.random.key(1)))
      products = f[:, None, :] * f[None, :, :]  # [3, 3, width] samples of f(u) f(v).
      empirical = products.mean(-1)
      standard_error = products.std(-1) / np.sqrt(width)
      want = np.asarray(kernel_fn(x, None, "nngp"))
      # Within 6 standard errors of the Monte-Carlo mean, and close in relative terms.
      assert np.all(np.abs(empirical - want) <= 6 * standard_error + 1e-9), name
      assert np.max(np.abs(empirical - want)) / np.max(np.abs(want)) < 0.1, name
