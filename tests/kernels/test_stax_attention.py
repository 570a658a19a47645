"""GlobalSelfAttention's finite network against neural-tangents 0.6.5, and its bad arguments.

Its kernels are checked against neural-tangents' in `test_stax_layers.py` (the
`attention_*` cases of `reference/layers.npz`). Here `apply_fn` runs with the parameters
neural-tangents' `init_fn` drew and must give neural-tangents' outputs
(`reference/attention_apply.npz`, written by `reference/generate.py`).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.kernels import stax

from .reference import stax_spec

REFERENCE = np.load(os.path.join(os.path.dirname(__file__), "reference", "attention_apply.npz"))
CASES = json.loads(str(REFERENCE["specs"]))


def _layer(kwargs):
  """The kdjax layer of a case, built as generate.py built neural-tangents' one."""
  return stax_spec.build_layer(stax, "GlobalSelfAttention", kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_apply_fn_matches_neural_tangents_with_its_parameters(name):
  x = REFERENCE["x"]
  init_fn, apply_fn, _ = _layer(CASES[name])
  get = lambda key: REFERENCE[f"{name}.{key}"] if f"{name}.{key}" in REFERENCE else None
  b = get("b")
  params = (None, get("keys"), get("values"), get("w_out"), None if b is None else b.ravel())
  params += (get("pos_emb"),)
  with jax.enable_x64(True):
    shapes = []

    def init_params(key):
      shape, params = init_fn(key, x.shape)
      shapes.append(shape)
      return params

    own = jax.eval_shape(init_params, jax.random.key(0))
    out_shape = shapes[0]
    got = jax.jit(apply_fn)(params, jnp.asarray(x))
  want = get("out")
  assert out_shape == got.shape == want.shape
  # kdjax's init_fn draws parameters of neural-tangents' shapes (the bias is [n_chan_out]).
  for mine, theirs in zip(own, params):
    assert (mine is None) == (theirs is None)
    assert mine is None or mine.shape == theirs.shape
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.max(np.abs(want)))


def test_bad_arguments_raise_value_errors_naming_them():
  cases = [
    (dict(linear_scaling=False), "linear_scaling=False is not supported"),
    (dict(attention_mechanism="TANH"), "attention_mechanism must be one of"),
    (dict(pos_emb_type="ROTARY"), "pos_emb_type must be one of"),
    (dict(pos_emb_type="SUM", n_chan_pos_emb=4), "n_chan_pos_emb only applies"),
    (dict(n_heads=0), "n_heads must be a positive int"),
    (dict(W_key_std=-1.0), "W_key_std must be a non-negative number"),
    (dict(val_pos_emb=1), "val_pos_emb must be a bool"),
    (dict(pos_emb_decay_fn=3.0), "pos_emb_decay_fn must be callable"),
  ]
  base = {"n_chan_out": 4, "n_chan_key": 4, "n_chan_val": 4, "n_heads": 1}
  for kwargs, message in cases:
    with pytest.raises(ValueError, match=message):
      stax.GlobalSelfAttention(**{**base, **kwargs})
  _, _, kernel_fn = stax.GlobalSelfAttention(4, 4, 4, 1)
  with pytest.raises(ValueError, match="needs inputs with spatial axes"):
    kernel_fn(np.ones((2, 3)))
  _, _, kernel_fn = stax.serial(stax.Dense(4, channel_axis=1), stax.GlobalSelfAttention(4, 4, 4, 1))
  with pytest.raises(ValueError, match="channel_axis=-1"):
    kernel_fn(np.ones((2, 3, 4, 5)))
