"""Kernel ridge regression: one Cholesky factorisation, or preconditioned CG for large n.

`kdjax.krr.predict(k_test_train, k_train_train, y_train, *, reg=1e-6)` and
`solve`, `posterior`, `regularized` factor `K + reg tr(K)/n I` once (`cholesky`; see that
module for the checks on bad kernels and what happens under `jax.jit`). `solve_cg` and
`predict_cg` solve the same system by Nyström-preconditioned conjugate gradients over a
Gram matrix held as row blocks sharded over the mesh, or recomputed block by block from a
`kernel_fn` (`BlockGram`), for n where an n x n Cholesky does not fit (`cg`).
"""

from kdjax.krr.cg import BlockGram, CGInfo, predict_cg, row_sharded, solve_cg
from kdjax.krr.cholesky import posterior, predict, regularized, solve

__all__ = [
  "regularized",
  "solve",
  "predict",
  "posterior",
  "solve_cg",
  "predict_cg",
  "BlockGram",
  "CGInfo",
  "row_sharded",
]
