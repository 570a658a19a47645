"""Regenerates the neural-tangents reference kernels in this directory.

Run it with Python from a venv holding jax==0.4.23 and neural-tangents==0.6.5
(neural-tangents does not import on current JAX), from the repository root:

  python3.11 -m venv ntref-venv
  ntref-venv/bin/pip install jax==0.4.23 jaxlib==0.4.23 neural-tangents==0.6.5 \
      'numpy<2' 'scipy<1.13'
  ntref-venv/bin/python tests/kernels/reference/generate.py

Every case is a JSON `spec`, a list of `[layer, kwargs]` in neural-tangents'
names, that `tests/kernels/test_stax_reference.py` builds with
`kdjax.kernels.stax` the same way. Values are float64.

* `<case>.npz` (the six original networks): keys `x1`, `x2`, `spec`, `nngp`,
  `ntk` (x1 vs x2), `nngp_11`, `ntk_11` (x1 vs itself). Their inputs are
  consecutive draws of one `np.random.default_rng(0)` stream.
* `layers.npz` (one small network per newer layer): the shared inputs
  `fc.x1`, `fc.x2` (vectors) and `img.x1`, `img.x2` (NHWC images), their
  transposes for the `batch_axis` / `channel_axis` cases (`LAYOUTS`: `nchw`,
  `cnhw`, `hnwc`, `cn`), `specs` (a JSON object
  `{case: {"input": "fc" | "img" | ..., "spec": [...]}}`) and, per case,
  `<case>.nngp`, `<case>.ntk`, `<case>.nngp_11`, `<case>.ntk_11`.

* `attention_apply.npz`: for one `GlobalSelfAttention` layer per `ATTENTION_APPLY`
  case, the parameters neural-tangents' `init_fn` drew (`<case>.keys`, `.values`,
  `.w_out`, `.b`, `.pos_emb`) and its `apply_fn` output `<case>.out` on the input `x`
  (= `img.x1`), for the finite-network test of kdjax's `apply_fn`.

Layer arguments that are functions (`Elementwise`, `ElementwiseNumerical`,
`pos_emb_decay_fn`) are named by a key of `stax_spec.FUNCTIONS`; `stax_spec.build` builds a
spec with neural-tangents' stax here and with kdjax's in the tests.
"""

from __future__ import annotations

import json
import os
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import stax_spec  # noqa: E402  # next to this script, shared with the tests
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# The six original networks, in the order their inputs were drawn.
DENSE = {"W_std": 1.6, "b_std": 0.1}
CONV = {"channels": 64, "filter_shape": [3, 3], "padding": "SAME", **DENSE}
HEAD = ["Dense", {"width": 10, **DENSE, "parameterization": "ntk"}]
POOL = ["AvgPool", {"window_shape": [2, 2], "strides": [2, 2], "padding": "VALID"}]


def _fc(nonlinearity, depth, parameterization="ntk"):
  dense = ["Dense", {"width": 512, **DENSE, "parameterization": parameterization}]
  head = ["Dense", {"width": 10, **DENSE, "parameterization": parameterization}]
  return [layer for _ in range(depth) for layer in (dense, [nonlinearity, {}])] + [head]


LEGACY = [
  ("fc3_relu", _fc("Relu", 3), (7, 24), (5, 24)),
  ("fc1_relu_standard", _fc("Relu", 1, "standard"), (7, 24), (5, 24)),
  ("fc2_erf", _fc("Erf", 2), (7, 24), (5, 24)),
  (
    "conv2_relu_flatten",
    [["Conv", CONV], ["Relu", {}]] * 2 + [["Flatten", {}], HEAD],
    (4, 8, 8, 3),
    (3, 8, 8, 3),
  ),
  (
    "conv3_relu_avgpool_flatten",
    [["Conv", CONV], ["Relu", {}], POOL] * 3 + [["Flatten", {}], HEAD],
    (4, 8, 8, 3),
    (3, 8, 8, 3),
  ),
  (
    "conv2_relu_gap",
    [["Conv", CONV], ["Relu", {}]] * 2 + [["GlobalAvgPool", {}], HEAD],
    (4, 8, 8, 3),
    (3, 8, 8, 3),
  ),
]


# Newer layers: the first Dense makes the input Gaussian, the last mixes units.
IN = ["Dense", {"width": 8, "W_std": 1.5, "b_std": 0.3}]
OUT = ["Dense", {"width": 1, "W_std": 1.2, "b_std": 0.2}]
CONV_IN = [
  "Conv",
  {"channels": 8, "filter_shape": [3, 2], "padding": "SAME", "W_std": 1.5, "b_std": 0.3},
]
CONV_MID = [
  "Conv",
  {"channels": 8, "filter_shape": [2, 2], "padding": "SAME", "W_std": 1.3, "b_std": 0.1},
]


def _fc_case(*layers):
  return {"input": "fc", "spec": [IN, *layers, OUT]}


def _img_case(*layers, head="GlobalAvgPool"):
  """Conv, the layers, a second conv and a pooling (pixel pairs) or Flatten head."""
  return {"input": "img", "spec": [CONV_IN, *layers, CONV_MID, ["Relu", {}], [head, {}], OUT]}


ELEMENTWISE = {
  "gelu": [["Gelu", {}]],
  "sin": [["Sin", {"a": 1.3, "b": 0.7, "c": 0.4}]],
  "cos": [["Cos", {"a": 0.9, "b": 1.1, "c": -0.2}]],
  "rbf": [["Rbf", {"gamma": 0.6}]],
  "abs": [["Abs", {}]],
  "sign": [["Sign", {}], ["Dense", {"width": 8, "W_std": 1.1, "b_std": 0.2}], ["Relu", {}]],
  "exp": [["Exp", {"a": 0.8, "b": 0.5}]],
  "gaussian": [["Gaussian", {"a": 1.2, "b": -0.7}]],
  "sigmoid_like": [["Sigmoid_like", {}]],
  "erf_abc": [["Erf", {"a": 1.3, "b": 0.8, "c": 0.2}]],
  "monomial0": [["Monomial", {"degree": 0}]],
  "monomial2": [["Monomial", {"degree": 2}]],
  "monomial3": [["Monomial", {"degree": 3}]],
  "monomial4": [["Monomial", {"degree": 4}]],
  "monomial5": [["Monomial", {"degree": 5}]],
  "rectified_monomial0": [["RectifiedMonomial", {"degree": 0}]],
  "rectified_monomial1": [["RectifiedMonomial", {"degree": 1}]],
  "rectified_monomial2": [["RectifiedMonomial", {"degree": 2}]],
  "rectified_monomial3": [["RectifiedMonomial", {"degree": 3}]],
  "polynomial": [["Polynomial", {"coef": [0.3, -0.5, 0.2, 0.7]}]],
  "hermite1": [["Hermite", {"degree": 1}]],
  "hermite3": [["Hermite", {"degree": 3}]],
  "elementwise_erf": [
    ["Elementwise", {"fn": "erf", "nngp_fn": "erf_nngp", "d_nngp_fn": "erf_d_nngp"}]
  ],
  "elementwise_erf_autodiff": [["Elementwise", {"fn": "erf", "nngp_fn": "erf_nngp"}]],
  "gabor": [["Gabor", {}]],
  "exp_normalized": [["ExpNormalized", {"gamma": 0.8, "shift": -0.5}]],
  "exp_normalized_clip": [["ExpNormalized", {"do_clip": True}]],
  "numerical_tanh": [["ElementwiseNumerical", {"fn": "tanh", "deg": 25}]],
  "numerical_sin": [["ElementwiseNumerical", {"fn": "sin", "deg": 30}]],
}
# Not RectifiedMonomial: neural-tangents 0.6.5 gives NaN everywhere with pixel pairs.
IMG_ELEMENTWISE = (
  "gelu",
  "sin",
  "rbf",
  "sign",
  "gaussian",
  "monomial3",
  "abs",
  "polynomial",
  "numerical_tanh",
)


RELU = ["Relu", {}]


def _dense(width, W_std=1.3, b_std=0.1, **kwargs):
  return ["Dense", {"width": width, "W_std": W_std, "b_std": b_std, **kwargs}]


def _conv(filter_shape, padding="SAME", strides=None, **kwargs):
  conv = {
    "channels": 8,
    "filter_shape": filter_shape,
    "padding": padding,
    "W_std": 1.4,
    "b_std": 0.2,
    **kwargs,
  }
  return ["Conv", conv if strides is None else {**conv, "strides": strides}]


# Normalisation, pooling, padding, fan-in, repeat and the standard parameterization's s.
OTHER_FC = {
  "layernorm": [["LayerNorm", {"eps": 0.1}], RELU],
  "dropout": [["Dropout", {"rate": 0.7}], _dense(8), RELU],
  "dropout_test_mode": [["Dropout", {"rate": 0.7, "mode": "test"}], RELU],
  "fan_in_prod": [
    ["FanOut", {"num": 2}],
    ["parallel", {"layers": [_dense(8), ["serial", {"layers": [RELU, _dense(8, 1.1, 0.3)]}]]}],
    ["FanInProd", {}],
  ],
  "fan_in_concat": [
    RELU,
    ["FanOut", {"num": 2}],
    [
      "parallel",
      {"layers": [_dense(8), ["serial", {"layers": [_dense(16, 1.1, 0.3), ["Erf", {}]]}]]},
    ],
    ["FanInConcat", {}],
  ],
  "repeat": [RELU, ["repeat", {"layer": ["serial", {"layers": [_dense(8), RELU]}], "n": 3}]],
}
OTHER_IMG = {
  "sum_pool": [
    RELU,
    ["SumPool", {"window_shape": [2, 2], "strides": [1, 1], "padding": "SAME"}],
    _conv([2, 2]),
    RELU,
    ["GlobalSumPool", {}],
  ],
  "avg_pool_normalize_edges": [
    RELU,
    [
      "AvgPool",
      {"window_shape": [3, 2], "strides": [2, 1], "padding": "SAME", "normalize_edges": True},
    ],
    ["Flatten", {}],
  ],
  "circular": [
    RELU,
    ["AvgPool", {"window_shape": [2, 2], "strides": [2, 1], "padding": "CIRCULAR"}],
    _conv([2, 3], "CIRCULAR"),
    RELU,
    ["GlobalAvgPool", {}],
  ],
  "circular_flatten": [RELU, _conv([3, 2], "CIRCULAR", strides=[2, 1]), RELU, ["Flatten", {}]],
  "layernorm_img": [
    ["LayerNorm", {"axis": [1, 2, 3]}],
    RELU,
    _conv([2, 2]),
    RELU,
    ["GlobalAvgPool", {}],
  ],
  "layernorm_channels_img": [["LayerNorm", {}], ["Gelu", {}], _conv([2, 2]), RELU, ["Flatten", {}]],
  "conv_transpose": [
    RELU,
    [
      "ConvTranspose",
      {
        "channels": 8,
        "filter_shape": [3, 2],
        "strides": [2, 1],
        "padding": "SAME",
        "W_std": 1.2,
        "b_std": 0.1,
      },
    ],
    RELU,
    ["GlobalAvgPool", {}],
  ],
  "conv_transpose_flatten": [
    RELU,
    [
      "ConvTranspose",
      {
        "channels": 8,
        "filter_shape": [2, 3],
        "strides": [2, 2],
        "padding": "VALID",
        "W_std": 1.2,
        "b_std": 0.1,
      },
    ],
    RELU,
    ["Flatten", {}],
  ],
  "dropout_img": [["Dropout", {"rate": 0.8}], _conv([2, 2]), RELU, ["GlobalAvgPool", {}]],
}
STANDARD = {
  "standard_s": {
    "input": "fc",
    "spec": [
      _dense(8, 1.4, 0.2, parameterization="standard", s=[1, 2]),
      RELU,
      _dense(8, 1.2, 0.1, parameterization="standard", s=[2, 3]),
      RELU,
      _dense(1, 1.1, 0.2, parameterization="standard", s=[3, 1]),
    ],
  },
  "conv_standard_s": {
    "input": "img",
    "spec": [
      _conv([3, 2], parameterization="standard", s=[1, 2]),
      RELU,
      _conv([2, 2], parameterization="standard", s=[2, 1]),
      RELU,
      ["GlobalAvgPool", {}],
      _dense(1, 1.1, 0.2, parameterization="standard"),
    ],
  },
}


# batch_axis / channel_axis: the shared inputs transposed, `{input: (source, permutation)}`:
# NCHW images, channels-first-batch-second images, batch-second images, [features, batch].
LAYOUTS = {
  "nchw": ("img", (0, 3, 1, 2)),
  "cnhw": ("img", (3, 0, 1, 2)),
  "hnwc": ("img", (1, 0, 2, 3)),
  "cn": ("fc", (1, 0)),
}
NCHW = {"channel_axis": 1}
CNHW = {"batch_axis": 1, "channel_axis": 0}
LAYOUT_CASES = {
  "nchw_avg_pool_gap": {
    "input": "nchw",
    "spec": [
      _dense(8, 1.5, 0.3, **NCHW),
      RELU,
      ["AvgPool", {"window_shape": [2, 2], "strides": [1, 1], "padding": "SAME", **NCHW}],
      _dense(8, **NCHW),
      ["Erf", {}],
      ["GlobalAvgPool", NCHW],
      OUT,
    ],
  },
  "nchw_layernorm_sum_pool_flatten": {
    "input": "nchw",
    "spec": [
      _dense(8, 1.5, 0.3, **NCHW),
      ["LayerNorm", {"axis": [1, 3], "eps": 0.1, **NCHW}],
      ["Gelu", {}],
      ["SumPool", {"window_shape": [2, 1], "strides": [2, 1], "padding": "VALID", **NCHW}],
      _dense(8, **NCHW),
      ["LayerNorm", {"axis": 1, **NCHW}],
      RELU,
      ["Flatten", {}],
      OUT,
    ],
  },
  "nchw_concat_flatten_batch_last": {
    "input": "nchw",
    "spec": [
      _dense(8, 1.5, 0.3, **NCHW),
      ["FanOut", {"num": 2}],
      ["parallel", {"layers": [RELU, ["serial", {"layers": [_dense(4, **NCHW), ["Erf", {}]]}]]}],
      ["FanInConcat", {"axis": 1}],
      ["Flatten", {"batch_axis": 0, "batch_axis_out": 1}],
      _dense(8, batch_axis=1, channel_axis=0),
      RELU,
      _dense(1, 1.2, 0.2, batch_axis=1, channel_axis=0),
    ],
  },
  "cnhw_pool_gap": {
    "input": "cnhw",
    "spec": [
      _dense(8, 1.5, 0.3, **CNHW),
      RELU,
      ["AvgPool", {"window_shape": [2, 2], "strides": [2, 1], **CNHW}],
      ["GlobalSumPool", CNHW],
      _dense(1, 1.2, 0.2, **CNHW),
    ],
  },
  "hnwc_gap": {
    "input": "hnwc",
    "spec": [
      _dense(8, 1.5, 0.3, batch_axis=1),
      RELU,
      ["GlobalAvgPool", {"batch_axis": 1}],
      OUT,
    ],
  },
  "nchw_conv_pool_gap": {
    "input": "nchw",
    "spec": [
      _conv([3, 2], dimension_numbers=["NCHW", "OIHW", "NCHW"]),
      RELU,
      ["AvgPool", {"window_shape": [2, 2], "strides": [1, 1], "padding": "SAME", **NCHW}],
      _conv([2, 2], "CIRCULAR", strides=[2, 1], dimension_numbers=["NCHW", "OIHW", "NCHW"]),
      RELU,
      ["GlobalAvgPool", NCHW],
      OUT,
    ],
  },
  "cnhw_conv_transpose_flatten": {
    "input": "cnhw",
    "spec": [
      _conv([2, 2], dimension_numbers=["CNHW", "IOHW", "CNHW"]),
      RELU,
      [
        "ConvTranspose",
        {
          "channels": 8,
          "filter_shape": [3, 2],
          "strides": [2, 1],
          "padding": "SAME",
          "W_std": 1.2,
          "b_std": 0.1,
          "dimension_numbers": ["CNHW", "HWIO", "CNHW"],
        },
      ],
      RELU,
      ["Flatten", {"batch_axis": 1}],
      OUT,
    ],
  },
  "cn_dense": {
    "input": "cn",
    "spec": [
      _dense(16, 1.5, 0.3, **CNHW),
      RELU,
      _dense(16, **CNHW),
      ["Erf", {}],
      _dense(1, 1.2, 0.2, **CNHW),
    ],
  },
}


def _attention(mechanism="SOFTMAX", **kwargs):
  args = {
    "n_chan_out": 8,
    "n_chan_key": 8,
    "n_chan_val": 8,
    "n_heads": 2,
    "W_key_std": 1.3,
    "W_value_std": 1.1,
    "W_query_std": 0.9,
    "W_out_std": 1.2,
    "b_std": 0.2,
    "attention_mechanism": mechanism,
  }
  return ["GlobalSelfAttention", {**args, **kwargs}]


# GlobalSelfAttention (linear scaling), mechanisms and positional embeddings.
ATTENTION_CASES = {
  "attention_softmax": {
    "input": "img",
    "spec": [CONV_IN, _attention(), RELU, ["GlobalAvgPool", {}], OUT],
  },
  "attention_identity_sum": {
    "input": "img",
    "spec": [CONV_IN, _attention("IDENTITY", pos_emb_type="SUM"), RELU, ["Flatten", {}], OUT],
  },
  "attention_softmax_concat_values": {
    "input": "img",
    "spec": [
      CONV_IN,
      _attention(pos_emb_type="CONCAT", n_chan_pos_emb=4, W_pos_emb_std=0.8, val_pos_emb=True),
      RELU,
      ["GlobalAvgPool", {}],
      OUT,
    ],
  },
  "attention_relu_decay": {
    "input": "img",
    "spec": [
      CONV_IN,
      _attention(
        "RELU",
        pos_emb_type="SUM",
        pos_emb_p_norm=1,
        pos_emb_decay_fn="exp_decay",
        val_pos_emb=True,
        b_std=None,
      ),
      ["Erf", {}],
      ["GlobalAvgPool", {}],
      OUT,
    ],
  },
  "attention_abs_inputs_nchw": {
    "input": "nchw",
    "spec": [
      _attention("ABS", pos_emb_type="CONCAT", channel_axis=1),
      _dense(8, channel_axis=1),
      _attention(channel_axis=1),
      ["GlobalAvgPool", {"channel_axis": 1}],
      OUT,
    ],
  },
}


def cases() -> dict:
  """All newer-layer cases, `{name: {"input": ..., "spec": [...]}}`."""
  out = {name: _fc_case(*layers) for name, layers in ELEMENTWISE.items()}
  for name in IMG_ELEMENTWISE:
    out[f"{name}_img"] = _img_case(*ELEMENTWISE[name])
    out[f"{name}_img_flatten"] = _img_case(*ELEMENTWISE[name], head="Flatten")
  out.update({name: _fc_case(*layers) for name, layers in OTHER_FC.items()})
  out.update(
    {name: {"input": "img", "spec": [CONV_IN, *layers, OUT]} for name, layers in OTHER_IMG.items()}
  )
  out.update(STANDARD)
  out.update(LAYOUT_CASES)
  out.update(ATTENTION_CASES)
  return out


def kernels(spec, x1, x2) -> dict:
  _, _, kernel_fn = stax_spec.build(stax, spec)
  k12 = kernel_fn(x1, x2, ("nngp", "ntk"))
  k11 = kernel_fn(x1, None, ("nngp", "ntk"))
  out = {"nngp": k12.nngp, "ntk": k12.ntk, "nngp_11": k11.nngp, "ntk_11": k11.ntk}
  out = {key: np.asarray(value, np.float64) for key, value in out.items()}
  for key, value in out.items():
    # neural-tangents' RectifiedMonomial is 0 * inf on the diagonal of x1 vs
    # itself (sin(theta) = 0); the test checks kdjax's finite limit there.
    off_diagonal = value[~np.eye(*value.shape, dtype=bool)] if key.endswith("_11") else value
    if not np.all(np.isfinite(off_diagonal)):
      raise ValueError(f"neural-tangents gave non-finite {key} for {spec}")
  return out


# One GlobalSelfAttention layer's finite apply_fn: neural-tangents' parameters and outputs.
ATTENTION_APPLY = {
  "identity": _attention("IDENTITY")[1],
  "softmax_concat_values": _attention(
    pos_emb_type="CONCAT", n_chan_pos_emb=3, W_pos_emb_std=0.8, val_pos_emb=True
  )[1],
  "relu_sum_decay": _attention(
    "RELU", pos_emb_type="SUM", pos_emb_p_norm=1, pos_emb_decay_fn="exp_decay"
  )[1],
}


def attention_apply(x) -> dict:
  """`attention_apply.npz`: per case, the parameters NT's init_fn draws and apply_fn's output."""
  out = {"x": x, "specs": json.dumps(ATTENTION_APPLY)}
  for name, kwargs in ATTENTION_APPLY.items():
    init_fn, apply_fn, _ = stax_spec.build_layer(stax, "GlobalSelfAttention", kwargs)
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    _, keys, values, w_out, b, pos_emb = params
    arrays = {"keys": keys, "values": values, "w_out": w_out, "b": b, "pos_emb": pos_emb}
    arrays["out"] = apply_fn(params, x)
    for key, value in arrays.items():
      if value is not None:
        out[f"{name}.{key}"] = np.asarray(value, np.float64)
  return out


def main():
  rng = np.random.default_rng(0)
  rng.normal()  # The original generator drew one value before the first case.
  for name, spec, shape1, shape2 in LEGACY:
    x1, x2 = rng.normal(size=shape1), rng.normal(size=shape2)
    np.savez(
      os.path.join(HERE, f"{name}.npz"),
      x1=x1,
      x2=x2,
      spec=json.dumps(spec),
      **kernels(spec, x1, x2),
    )

  rng = np.random.default_rng(1)
  inputs = {
    "fc.x1": rng.normal(size=(5, 6)),
    "fc.x2": rng.normal(size=(4, 6)),
    "img.x1": rng.normal(size=(3, 5, 4, 2)),
    "img.x2": rng.normal(size=(2, 5, 4, 2)),
  }
  for name, (source, permutation) in LAYOUTS.items():
    for x in ("x1", "x2"):
      inputs[f"{name}.{x}"] = np.transpose(inputs[f"{source}.{x}"], permutation)
  all_cases = cases()
  values = {}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # neural-tangents warns for Hermite, autodiff, quadrature.
    for name, case in all_cases.items():
      print(name, flush=True)
      kind = case["input"]
      for key, value in kernels(case["spec"], inputs[f"{kind}.x1"], inputs[f"{kind}.x2"]).items():
        values[f"{name}.{key}"] = value
  np.savez_compressed(
    os.path.join(HERE, "layers.npz"), specs=json.dumps(all_cases), **inputs, **values
  )
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # linear scaling ignores the query weights (it says so).
    np.savez_compressed(
      os.path.join(HERE, "attention_apply.npz"), **attention_apply(inputs["img.x1"])
    )
  print(f"wrote {len(LEGACY)} network files and {len(all_cases)} layer cases to {HERE}")


if __name__ == "__main__":
  main()
