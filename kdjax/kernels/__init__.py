"""Infinite-width NNGP/NTK kernels (neural-tangents compatible `stax`),
the empirical NTK of finite networks, and tiled / sharded Gram matrices."""

from kdjax.kernels import stax
from kdjax.kernels.empirical import empirical_ntk_fn
from kdjax.kernels.gram import sharded_kernel_fn, tiled_kernel_fn

__all__ = ["stax", "empirical_ntk_fn", "tiled_kernel_fn", "sharded_kernel_fn"]

from kdjax.kernels import predict  # noqa: E402  (infinite-width training dynamics)

__all__ += ["predict"]

from kdjax.kernels.monte_carlo import monte_carlo_kernel_fn  # noqa: E402

__all__ += ["monte_carlo_kernel_fn"]
