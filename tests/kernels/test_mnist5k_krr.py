"""End to end: FC2-ReLU NTK kernel ridge regression on the embedded mnist5k split."""

import numpy as np

from kdjax import data, krr
from kdjax.kernels import stax


def test_fc2_relu_ntk_krr_reproduces_the_baseline():
  # The baseline: all 4,000 training digits, W_std=sqrt(2), b_std=0.1,
  # reg=1e-6 tr(K)/n, standardised pixels, one-hot minus 0.1 -> 95.2% test.
  ds = data.load("mnist5k")
  x_train = data.standardize_images(ds.x_train).reshape(len(ds.x_train), -1)
  x_test = data.standardize_images(ds.x_test).reshape(len(ds.x_test), -1)
  y_train = data.regression_targets(ds.y_train, ds.num_classes)
  _, _, kernel_fn = stax.serial(
    stax.Dense(512, 2**0.5, 0.1),
    stax.Relu(),
    stax.Dense(512, 2**0.5, 0.1),
    stax.Relu(),
    stax.Dense(10, 2**0.5, 0.1),
  )
  k_train = kernel_fn(x_train, None, "ntk")
  k_test = kernel_fn(x_test, x_train, "ntk")
  assert k_train.dtype == np.float32
  predictions = krr.predict(k_test, k_train, y_train, reg=1e-6)
  accuracy = float(np.mean(np.argmax(np.asarray(predictions), 1) == ds.y_test))
  assert 0.945 <= accuracy <= 0.96, accuracy
  # A 10x smaller training set is clearly worse: the test can fail.
  small = np.arange(400)
  k_small = np.asarray(k_train)[np.ix_(small, small)]
  small_predictions = krr.predict(np.asarray(k_test)[:, small], k_small, y_train[small], reg=1e-6)
  small_accuracy = float(np.mean(np.argmax(np.asarray(small_predictions), 1) == ds.y_test))
  assert small_accuracy < accuracy - 0.03, (small_accuracy, accuracy)
