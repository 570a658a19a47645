"""`batch_axis` / `channel_axis` (neural-tangents' layouts) in kdjax.kernels.stax.

The kernels of networks on NCHW, channels-first and batch-second inputs are
checked against neural-tangents 0.6.5 values in `test_stax_layers.py` (the
`LAYOUT_CASES` of `reference/generate.py`). Here: the finite networks in those
layouts compute the NHWC network's function on transposed inputs, and
mismatched or bad axes are ValueErrors naming the argument.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.kernels import gram, stax


def _network(batch_axis, channel_axis, concat_axis, layernorm_axis, batch_axis_out=0):
  """Dense, pooling, LayerNorm, concatenation, Flatten and a head, in one layout."""
  axes = {"batch_axis": batch_axis, "channel_axis": channel_axis}
  return stax.serial(
    stax.Dense(6, 1.3, 0.2, **axes),
    stax.Relu(),
    stax.AvgPool((2, 2), (1, 1), "SAME", **axes),
    stax.LayerNorm(axis=layernorm_axis, **axes),
    stax.FanOut(2),
    stax.parallel(stax.Identity(), stax.Dense(3, **axes)),
    stax.FanInConcat(axis=concat_axis),
    stax.SumPool((2, 1), **axes),
    stax.Flatten(batch_axis=batch_axis, batch_axis_out=batch_axis_out),
  )


# (layout of [n, H, W, C] inputs, network arguments, permutation of the flat output).
LAYOUTS = {
  "nhwc": ((0, 1, 2, 3), (0, -1, -1, (2, 3)), None),
  "nchw": ((0, 3, 1, 2), (0, 1, 1, (1, 3)), None),
  "cnhw_batch_last_out": ((3, 0, 1, 2), (1, 0, 0, (0, 3), 1), (1, 0)),
}


def test_finite_networks_in_other_layouts_compute_the_nhwc_function():
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  init_ref, apply_ref, _ = _network(*LAYOUTS["nhwc"][1])
  shape_ref, params = init_ref(jax.random.key(1), x.shape)
  want = jax.jit(apply_ref)(params, x)
  # Flatten orders the units by layout; compare their sets per example via sorting.
  want = np.sort(np.asarray(want), axis=1)
  for name in ("nchw", "cnhw_batch_last_out"):
    perm, args, out_perm = LAYOUTS[name]
    init_fn, apply_fn, _ = _network(*args)
    xt = jnp.transpose(x, perm)
    shape, params_t = init_fn(jax.random.key(1), xt.shape)
    got = np.asarray(jax.jit(apply_fn)(params, xt))
    assert shape == got.shape, name
    got = got if out_perm is None else got.T
    assert shape_ref == got.shape, name
    # The same parameters (Dense weights do not depend on the layout).
    jax.tree.map(np.testing.assert_array_equal, params_t, params)
    np.testing.assert_allclose(np.sort(got, axis=1), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_kernel_fn_reads_inputs_in_the_first_layers_layout():
  """The same kernel for NHWC inputs and their NCHW / batch-second transposes."""
  x1 = np.random.default_rng(0).normal(size=(3, 4, 3, 2))
  x2 = np.random.default_rng(1).normal(size=(2, 4, 3, 2))

  def network(batch_axis, channel_axis):
    axes = {"batch_axis": batch_axis, "channel_axis": channel_axis}
    return stax.serial(
      stax.Dense(5, 1.2, 0.1, **axes), stax.Relu(), stax.Flatten(batch_axis), stax.Dense(1)
    )[2]

  want = network(0, -1)(x1, x2, "ntk")
  for perm, batch_axis, channel_axis in (((0, 3, 1, 2), 0, 1), ((1, 0, 2, 3), 1, -1)):
    got = network(batch_axis, channel_axis)(x1.transpose(perm), x2.transpose(perm), "ntk")
    np.testing.assert_allclose(got, want, rtol=1e-6)
  with pytest.raises(ValueError, match="apart from the batch axis 1"):
    network(1, -1)(x1.transpose(1, 0, 2, 3), x2.transpose(0, 3, 1, 2))


def test_a_leading_flatten_reads_its_batch_axis():
  """Flatten first: kernel_fn flattens the inputs along Flatten's batch_axis."""
  x = np.random.default_rng(2).normal(size=(3, 4, 2, 5))
  head = (stax.Dense(2, 1.3, 0.1), stax.Relu(), stax.Dense(1))
  want = stax.serial(stax.Flatten(), *head)[2](x, get="ntk")
  for perm, batch_axis in (((1, 0, 2, 3), 1), ((1, 0, 2, 3), -3), ((2, 3, 1, 0), -1)):
    got = stax.serial(stax.Flatten(batch_axis), *head)[2](x.transpose(perm), get="ntk")
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=str(batch_axis))
  # batch_axis_out=1: [P C, n] outputs, which the next layers must name.
  batch_last = {"batch_axis": 1, "channel_axis": 0}
  got = stax.serial(
    stax.Flatten(0, batch_axis_out=1),
    stax.Dense(2, 1.3, 0.1, **batch_last),
    stax.Relu(),
    stax.Dense(1, **batch_last),
  )[2](x, get="ntk")
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_conv_dimension_numbers_compute_the_nhwc_convolution():
  """Conv / ConvTranspose with NCHW inputs and an OIHW filter: the NHWC layer, transposed."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  for layer, args in ((stax.Conv, ((2, 1), "CIRCULAR")), (stax.ConvTranspose, ((2, 1), "SAME"))):
    init_ref, apply_ref, _ = layer(4, (3, 2), *args, 1.3, 0.2)
    init_fn, apply_fn, _ = layer(4, (3, 2), *args, 1.3, 0.2, ("NCHW", "OIHW", "NCHW"))
    shape_ref, (W, b) = init_ref(jax.random.key(1), x.shape)
    shape, (W_t, _) = init_fn(jax.random.key(1), (2, 3, 5, 4))
    assert W_t.shape == (4, 3, 3, 2) and shape == (2, 4) + shape_ref[1:3]
    np.testing.assert_array_equal(W_t, jnp.transpose(W, (3, 2, 0, 1)))
    got = apply_fn((W_t, b), jnp.transpose(x, (0, 3, 1, 2)))
    want = apply_ref((W, b), x)
    np.testing.assert_allclose(got, jnp.transpose(want, (0, 3, 1, 2)), rtol=1e-5, atol=1e-6)
  bad = [
    (("NCHW", "OIHW"), "must be three strings"),
    (("NCHW", "OIHW", "NHWC"), "output must be laid out like the input"),
    (("NCWH", "OIHW", "NCWH"), "filter's spatial axes in the input's order"),
    (("NCHW", "OIHD", "NCHW"), "do not describe 2-D convolutions"),
    (("NNHW", "OIHW", "NNHW"), "do not describe 2-D convolutions"),
  ]
  for dimension_numbers, message in bad:
    with pytest.raises(ValueError, match=message):
      stax.Conv(4, (3, 2), dimension_numbers=dimension_numbers)


NCHW_DENSE = stax.Dense(4, channel_axis=1)
KERNEL_ERRORS = [
  (stax.serial(NCHW_DENSE, stax.Dense(4)), "Dense: channel_axis=-1 is axis 3"),
  (
    stax.serial(NCHW_DENSE, stax.Conv(3, (2, 2))),
    "Conv: channel_axis=-1 is axis 3 .* set dimension_numbers",
  ),
  (stax.serial(stax.ConvTranspose(3, (2, 2)), NCHW_DENSE), "Dense: channel_axis=1 is axis 1"),
  (stax.serial(NCHW_DENSE, stax.GlobalAvgPool(batch_axis=1, channel_axis=1)), "batch_axis=1"),
  (stax.serial(NCHW_DENSE, stax.FanOut(2), stax.FanInConcat()), "channel axis only \\(1"),
  (stax.serial(NCHW_DENSE, stax.LayerNorm(channel_axis=1)), "include the channel axis \\(1\\)"),
  (stax.serial(NCHW_DENSE, stax.AvgPool((2, 2))), "AvgPool: channel_axis=-1"),
  (stax.serial(NCHW_DENSE, stax.Flatten(batch_axis=2)), "Flatten: batch_axis=2"),
  (stax.serial(stax.GlobalAvgPool(), stax.Flatten(batch_axis=1)), "Flatten: batch_axis=1"),
  (stax.Dense(4, batch_axis=1, channel_axis=-3), "are the same axis"),
  (stax.Dense(4, channel_axis=4), "channel_axis=4 is out of range"),
]


@pytest.mark.parametrize("network, message", KERNEL_ERRORS)
def test_mismatched_axes_are_value_errors_naming_the_argument(network, message):
  with pytest.raises(ValueError, match=message):
    network[2](np.ones((2, 3, 4, 5)))


def test_tiled_kernels_need_the_batch_first():
  _, _, kernel_fn = stax.Dense(3, batch_axis=1, channel_axis=0)
  with pytest.raises(ValueError, match="reads the batch at axis 1"):
    gram.tiled_kernel_fn(kernel_fn, 2)(np.ones((4, 5)))


def test_bad_axis_arguments_are_value_errors():
  cases = [
    (lambda: stax.Dense(3, batch_axis=0.5), "batch_axis must be an int"),
    (lambda: stax.AvgPool((2, 2), channel_axis="1"), "channel_axis must be an int"),
    (lambda: stax.GlobalSumPool(batch_axis=True), "batch_axis must be an int"),
    (lambda: stax.LayerNorm(channel_axis=None), "channel_axis must be an int"),
    (lambda: stax.Flatten(batch_axis_out=2), "batch_axis_out must be 0 or 1"),
    (lambda: stax.FanInConcat(axis=1.0), "axis must be an int"),
  ]
  for make, message in cases:
    with pytest.raises(ValueError, match=message):
      make()
