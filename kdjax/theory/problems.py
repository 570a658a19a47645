"""Small regression/classification problems and an RBF kernel for the theory experiments.

All data are offline: a synthetic 1-D function, scikit-learn's bundled ``diabetes`` (442
patients, 10 features) and ``digits`` (1,797 8x8 images), and ``make_moons``. Splits are
random permutations from ``seed``; features are standardised with training statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Problem", "rbf_kernel", "median_distance", "load_problem"]


class Problem(NamedTuple):
  """Train / validation / test arrays (NumPy float64).

  ``y_*`` are the observed targets (``[n]`` or one-hot ``[n, classes]``); ``clean_train``
  and ``clean_test`` the noise-free function where it is known (synthetic data), else
  the observed targets; ``labels_*`` integer classes for classification (else None).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  clean_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  clean_test: np.ndarray
  labels_train: np.ndarray | None = None
  labels_test: np.ndarray | None = None


def rbf_kernel(x1, x2, *, lengthscale, scale=1.0) -> np.ndarray:
  r"""``k(x, x') = scale * exp(-|x - x'|^2 / (2 lengthscale^2))``; ``[n1, d], [n2, d] -> [n1, n2]``.

  NumPy float64 (data preparation, not traced).
  """
  x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
  sq = np.sum(x1**2, -1)[:, None] + np.sum(x2**2, -1)[None, :] - 2 * x1 @ x2.T
  return scale * np.exp(-np.maximum(sq, 0.0) / (2 * lengthscale**2))


def median_distance(x) -> float:
  """Median pairwise Euclidean distance of the rows of ``x`` (the median heuristic)."""
  x = np.asarray(x)
  d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
  return float(np.median(d[np.triu_indices(len(x), 1)]))


def _clean_function(x):
  return np.sin(2 * np.pi * x) + 0.5 * np.cos(5 * np.pi * x)


def _split(n, sizes, seed):
  perm = np.random.default_rng(seed).permutation(n)
  bounds = np.cumsum([0] + list(sizes))
  if bounds[-1] > n:
    raise ValueError(f"data: asked for {bounds[-1]} examples, only {n} available")
  return [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _standardise(train, *others):
  mean, std = train.mean(0), train.std(0) + 1e-12
  return [(a - mean) / std for a in (train,) + others]


def load_problem(name, *, seed, n_train, n_val=0, n_test=500, noise=0.3, label_noise=0.0):
  """Returns a :class:`Problem`.

  Args:
    name: ``synthetic`` (1-D ``sin(2 pi x) + cos(5 pi x) / 2`` on [-1, 1] plus Gaussian
      noise of std ``noise``), ``diabetes`` (standardised target), ``digits`` (one-hot
      targets minus 1/10, pixels / 16; ``label_noise`` of the training labels replaced
      by uniformly random classes) or ``moons`` (binary {0, 1} labels, 2-D, Gaussian input
      noise ``noise``, ``label_noise`` flipped training labels).
    seed: split/noise seed. n_train, n_val, n_test: split sizes.
  """
  rng = np.random.default_rng(seed + 1)
  if name == "synthetic":
    x = rng.uniform(-1, 1, size=(n_train + n_val, 1))
    x_test = np.linspace(-1, 1, n_test)[:, None]
    clean = _clean_function(x[:, 0])
    y = clean + noise * rng.normal(size=len(clean))
    return Problem(
      x[:n_train],
      y[:n_train],
      clean[:n_train],
      x[n_train:],
      y[n_train:],
      x_test,
      _clean_function(x_test[:, 0]),
      _clean_function(x_test[:, 0]),
    )
  if name == "diabetes":
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    tr, va, te = _split(len(y), (n_train, n_val, n_test), seed)
    x_tr, x_va, x_te = _standardise(x[tr], x[va], x[te])
    y_tr, y_va, y_te = [(y[i] - y[tr].mean()) / y[tr].std() for i in (tr, va, te)]
    return Problem(x_tr, y_tr, y_tr, x_va, y_va, x_te, y_te, y_te)
  if name == "digits":
    from sklearn.datasets import load_digits

    x, labels = load_digits(return_X_y=True)
    tr, va, te = _split(len(labels), (n_train, n_val, n_test), seed)
    noisy = labels[tr].copy()
    flip = rng.uniform(size=len(tr)) < label_noise
    noisy[flip] = rng.integers(0, 10, size=int(flip.sum()))
    onehot = lambda l: np.eye(10)[l] - 0.1
    return Problem(
      x[tr] / 16,
      onehot(noisy),
      onehot(labels[tr]),
      x[va] / 16,
      onehot(labels[va]),
      x[te] / 16,
      onehot(labels[te]),
      onehot(labels[te]),
      noisy,
      labels[te],
    )
  if name == "moons":
    from sklearn.datasets import make_moons

    x, labels = make_moons(n_train + n_val + n_test, noise=noise, random_state=seed)
    noisy = labels[:n_train].copy()
    flip = rng.uniform(size=n_train) < label_noise
    noisy[flip] = 1 - noisy[flip]
    x_tr, x_va, x_te = x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :]
    y = lambda l: l.astype(np.float64)
    return Problem(
      x_tr,
      y(noisy),
      y(labels[:n_train]),
      x_va,
      y(labels[n_train : n_train + n_val]),
      x_te,
      y(labels[n_train + n_val :]),
      y(labels[n_train + n_val :]),
      noisy,
      labels[n_train + n_val :],
    )
  raise ValueError(f"data.name must be one of synthetic, diabetes, digits, moons; got {name!r}")
