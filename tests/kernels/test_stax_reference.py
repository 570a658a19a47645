"""kdjax.kernels.stax against neural-tangents 0.6.5 values (float64)."""

import json
import os

import jax
import numpy as np
import pytest

from kdjax.kernels import stax

from .reference import stax_spec

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "reference")
NETWORK_NAMES = [
  "conv2_relu_flatten",
  "conv2_relu_gap",
  "conv3_relu_avgpool_flatten",
  "fc1_relu_standard",
  "fc2_erf",
  "fc3_relu",
]
FILES = [os.path.join(REFERENCE_DIR, f"{name}.npz") for name in NETWORK_NAMES]


def build(spec):
  """kdjax network from a reference file's JSON `spec` (as generate.py builds NT's)."""
  return stax_spec.build(stax, spec)


def relative_error(got, want):
  return np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))


def test_reference_files_exist():
  missing = [f for f in FILES if not os.path.isfile(f)]
  assert not missing, missing


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_matches_neural_tangents(path):
  ref = np.load(path)
  _, _, kernel_fn = build(json.loads(str(ref["spec"])))
  with jax.enable_x64(True):
    k12 = kernel_fn(ref["x1"], ref["x2"])
    k11 = kernel_fn(ref["x1"], None, ("nngp", "ntk"))
    assert k12.nngp.dtype == np.float64
  assert relative_error(k12.nngp, ref["nngp"]) < 1e-6
  assert relative_error(k12.ntk, ref["ntk"]) < 1e-6
  assert relative_error(k11.nngp, ref["nngp_11"]) < 1e-6
  assert relative_error(k11.ntk, ref["ntk_11"]) < 1e-6


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_get_single_kernel_and_jit(path):
  ref = np.load(path)
  _, _, kernel_fn = build(json.loads(str(ref["spec"])))
  with jax.enable_x64(True):
    nngp = jax.jit(kernel_fn, static_argnames="get")(ref["x1"], ref["x2"], get="nngp")
    ntk = kernel_fn(ref["x1"], ref["x2"], get=("ntk",)).ntk
  assert nngp.shape == ref["nngp"].shape
  assert relative_error(nngp, ref["nngp"]) < 1e-6
  assert relative_error(ntk, ref["ntk"]) < 1e-6
