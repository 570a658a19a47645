"""Infinite-width NNGP and NTK kernels with neural-tangents' `stax` API.

Every layer is a triple `(init_fn, apply_fn, kernel_fn)`:

* `init_fn(key, input_shape) -> (output_shape, params)` and
  `apply_fn(params, inputs)` build the finite-width network;
* `kernel_fn(x1, x2=None, get=('nngp', 'ntk'))` gives the kernels of the same
  architecture in the limit of infinite width (channels), the NNGP
  `E[f(x1) f(x2)]` of one output unit at initialisation and the NTK
  `<df(x1)/dtheta, df(x2)/dtheta>`; a single array when `get` is a string.

Names, arguments and semantics are those of neural-tangents 0.6.5, whose
values the tests reproduce to float64 precision. Images are NHWC unless a layer's
`batch_axis` / `channel_axis` say otherwise (see `layout`). Covariances
between pixels are only propagated where they are needed: when no layer mixes
pixels before a `Flatten` head, only same-pixel covariances (`[n1, n2, H, W]`)
are kept; a pooling layer downstream makes the kernel keep the full
pixel-by-pixel covariance (`[n1, n2, H, W, H, W]`).

Modules: `covariance` (the covariance state), `layer` (the layer triple, the
jitted `kernel_fn` and output type), `combinators` (`serial`, `parallel`,
`repeat`), `branching` (`FanOut`, `FanIn*`), `linear` (`Dense`, `Conv`),
`pooling`, `normalization` (`LayerNorm`, `Dropout`), `elementwise` (pointwise
nonlinearities: `Elementwise`, `ElementwiseNumerical` and the closed forms),
`polynomial`, `attention` (`GlobalSelfAttention`), `windows` (window
sums shared by convolutions and pooling), `layout` (`batch_axis` /
`channel_axis`).

References:
  Neal, 1996, "Bayesian Learning for Neural Networks".
  Lee et al., 2018, "Deep Neural Networks as Gaussian Processes".
  Jacot, Gabriel, Hongler, 2018, "Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks".
  Novak et al., 2019, "Bayesian Deep Convolutional Networks with Many Channels
    are Gaussian Processes".
  Arora et al., 2019, "On Exact Computation with an Infinitely Wide Neural Net".
  Novak et al., 2020, "Neural Tangents: Fast and Easy Infinite Neural Networks
    in Python".
"""

from kdjax.kernels.stax.attention import GlobalSelfAttention
from kdjax.kernels.stax.branching import FanInConcat, FanInProd, FanInSum, FanOut
from kdjax.kernels.stax.combinators import parallel, repeat, serial
from kdjax.kernels.stax.elementwise import (
  ABRelu,
  Abs,
  Cos,
  Elementwise,
  ElementwiseNumerical,
  Erf,
  Exp,
  ExpNormalized,
  Gabor,
  Gaussian,
  Gelu,
  LeakyRelu,
  Rbf,
  Relu,
  Sigmoid_like,
  Sign,
  Sin,
)
from kdjax.kernels.stax.layer import Kernel, KernelFn
from kdjax.kernels.stax.linear import Conv, ConvTranspose, Dense, Identity
from kdjax.kernels.stax.normalization import Dropout, LayerNorm
from kdjax.kernels.stax.polynomial import Hermite, Monomial, Polynomial, RectifiedMonomial
from kdjax.kernels.stax.pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool

__all__ = [
  "serial",
  "parallel",
  "repeat",
  "FanOut",
  "FanInSum",
  "FanInProd",
  "FanInConcat",
  "Identity",
  "Dense",
  "Conv",
  "ConvTranspose",
  "AvgPool",
  "SumPool",
  "GlobalAvgPool",
  "GlobalSumPool",
  "Flatten",
  "LayerNorm",
  "Dropout",
  "GlobalSelfAttention",
  "ABRelu",
  "Relu",
  "LeakyRelu",
  "Abs",
  "Erf",
  "Sigmoid_like",
  "Gelu",
  "Sin",
  "Cos",
  "Rbf",
  "Exp",
  "Gaussian",
  "Sign",
  "Gabor",
  "ExpNormalized",
  "Monomial",
  "RectifiedMonomial",
  "Polynomial",
  "Hermite",
  "Elementwise",
  "ElementwiseNumerical",
  "Kernel",
  "KernelFn",
]
