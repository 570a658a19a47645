"""Kernel ridge regression: one Cholesky factorisation, or preconditioned CG for large n.

`kdjax.krr.predict(k_test_train, k_train_train, y_train, *, reg=1e-6)` and
`solve`, `posterior`, `regularized` factor `K + reg tr(K)/n I` once (`cholesky`);
see that module for the checks on bad kernels and what happens under `jax.jit`.
"""
from kdjax.krr.cholesky import posterior, predict, regularized, solve

__all__ = ["regularized", "solve", "predict", "posterior"]
