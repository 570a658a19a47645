"""Networks from the JSON specs of the reference files, for any stax-API module.

`generate.py` builds each spec with neural-tangents' `stax` (in its own venv) and the tests
build the same spec with `kdjax.kernels.stax`: one builder, so the two networks cannot
drift apart. A spec is a JSON list of `[layer name, kwargs]` in neural-tangents' names;
layer arguments that are functions (`Elementwise`, `ElementwiseNumerical`,
`pos_emb_decay_fn`) are named by a key of `FUNCTIONS`. Needs only jax (any version the
reference venv or the tests use).
"""

import jax
import jax.numpy as jnp


def _erf_nngp(cov12, var1, var2):
  """E[erf(u) erf(v)] (Williams, 1997), neural-tangents' `Elementwise` example."""
  return jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2))) * 2 / jnp.pi


def _erf_d_nngp(cov12, var1, var2):
  """E[erf'(u) erf'(v)], the derivative of `_erf_nngp` in `cov12`."""
  return 4 / jnp.pi / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2)


FUNCTIONS = {
  "tanh": jnp.tanh,
  "erf": jax.scipy.special.erf,
  "erf_nngp": _erf_nngp,
  "erf_d_nngp": _erf_d_nngp,
  "sin": jnp.sin,
  "exp_decay": lambda d: jnp.exp(-d / 3),
}


def build_layer(stax, name, kwargs):
  """One layer of `stax` (neural-tangents' or kdjax's) from its JSON `[name, kwargs]`."""
  kwargs = dict(kwargs)
  if name in ("serial", "parallel"):
    return getattr(stax, name)(*[build_layer(stax, *item) for item in kwargs["layers"]])
  if name == "repeat":
    return stax.repeat(build_layer(stax, *kwargs["layer"]), kwargs["n"])
  for key in ("fn", "nngp_fn", "d_nngp_fn", "pos_emb_decay_fn"):
    if key in kwargs:
      kwargs[key] = FUNCTIONS[kwargs[key]]
  for key in ("window_shape", "strides", "filter_shape", "s", "axis", "dimension_numbers"):
    if isinstance(kwargs.get(key), list):
      kwargs[key] = tuple(kwargs[key])
  if name == "Dense":
    return stax.Dense(kwargs.pop("width"), **kwargs)
  if name in ("Conv", "ConvTranspose"):
    return getattr(stax, name)(kwargs.pop("channels"), kwargs.pop("filter_shape"), **kwargs)
  return getattr(stax, name)(**kwargs)


def build(stax, spec):
  """The network `stax.serial(...)` of a JSON spec: `(init_fn, apply_fn, kernel_fn)`."""
  return stax.serial(*[build_layer(stax, *item) for item in spec])
