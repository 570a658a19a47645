"""Newer kdjax.kernels.stax layers against neural-tangents 0.6.5 values (float64).

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

REFERENCE = np.load(os.path.join(os.path.dirname(__file__), "reference", "layers.npz"))
CASES = json.loads(str(REFERENCE["specs"]))
KEYS = ("nngp", "ntk", "nngp_11", "ntk_11")


def _erf_nngp(cov12, var1, var2):
  return jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2))) * 2 / jnp.pi


def _erf_d_nngp(cov12, var1, var2):
  return 4 / jnp.pi / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2)


# The same named functions as generate.py's FUNCTIONS.
FUNCTIONS = {
  "tanh": jnp.tanh,
  "erf": jax.scipy.special.erf,
  "erf_nngp": _erf_nngp,
  "erf_d_nngp": _erf_d_nngp,
  "sin": jnp.sin,
}


def build(spec):
  """kdjax network from a JSON spec in neural-tangents' names."""
  layers = []
  for name, kwargs in spec:
    kwargs = dict(kwargs)
    for key in ("fn", "nngp_fn", "d_nngp_fn"):
      if key in kwargs:
        kwargs[key] = FUNCTIONS[kwargs[key]]
    for key in ("window_shape", "strides", "filter_shape"):
      if key in kwargs:
        kwargs[key] = tuple(kwargs[key])
    if name == "Dense":
      layers.append(stax.Dense(kwargs.pop("width"), **kwargs))
    elif name in ("Conv", "ConvTranspose"):
      layers.append(getattr(stax, name)(kwargs.pop("channels"), **kwargs))
    else:
      layers.append(getattr(stax, name)(**kwargs))
  return stax.serial(*layers)


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
DEFAULT_IMAGE_CASES = ("gelu_img", "numerical_tanh_img_flatten")


def _param(name):
  slow = CASES[name]["input"] == "img" and name not in DEFAULT_IMAGE_CASES
  return pytest.param(name, marks=pytest.mark.slow if slow else ())


@pytest.mark.parametrize("name", [_param(name) for name in sorted(CASES)])
def test_matches_neural_tangents(name):
  got = kernels(name)
  for key in KEYS:
    want = REFERENCE[f"{name}.{key}"]
    value = np.asarray(got[key])
    assert value.shape == want.shape
    assert np.all(np.isfinite(value)), key
    known = np.ones(want.shape, bool)
    if key.endswith("_11") and name.startswith(NT_DIAGONAL_INACCURATE):
      known = ~np.eye(*want.shape, dtype=bool)
    error = relative_error(value[known], want[known])
    assert error < 1e-6, (key, error)


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
