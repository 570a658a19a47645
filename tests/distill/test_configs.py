"""Every experiments/kip_*.py config builds its kernel and sweep; short runs of each kind;
frepo_digits.py (the other distill configs are tested with their job)."""

import glob
import importlib
import os

import numpy as np
import pytest

from kdjax.distill import runner
from launch import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(name):
  return importlib.import_module(f"experiments.{name}")


def shorten(c, per_class=1, batch=16):
  c.kip.per_class, c.num_steps, c.kip.target_batch_size = per_class, 2, batch
  c.eval_every = c.log_every = c.checkpoint_every = 1
  c.evaluation.enabled = False
  return c


def names():
  return sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "kip_*.py"))
  )


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("kernel", ["fc", "conv"])
def test_config_kernel_and_sweep(name, kernel):
  module = load(name)
  c = module.get_config(f"1,{kernel}" if name != "kip_mnist5k" else "1")
  assert c.job == "kip" and isinstance(c.seed, int) and c.kip.per_class == 1
  runner.build_kernel(c.kernel)
  for point in module.sweep():
    sweep.apply_point(c, point)  # raises on a key the config does not have


@pytest.mark.slow
def test_digits_conv_kernel_run(tmp_path):
  summary = runner.run(shorten(load("kip_digits").get_config("1,conv")), str(tmp_path))
  assert summary["num_support"] == 10 and 0 <= summary["test_accuracy"] <= 1
  assert np.load(tmp_path / "support.npz")["x"].shape == (10, 8, 8, 1)


@pytest.mark.slow
def test_tfds_mnist_config_runs_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=80):
    summary = runner.run(shorten(load("kip_mnist").get_config("1")), str(tmp_path))
  assert summary["num_support"] == 10 and summary["num_steps"] == 2


@pytest.mark.slow
def test_tfds_cifar10_zca_config_runs_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=80):
    summary = runner.run(shorten(load("kip_cifar10").get_config("1")), str(tmp_path))
  assert summary["num_support"] == 10 and 0 <= summary["test_accuracy"] <= 1


@pytest.mark.parametrize("name", names())
def test_bad_arg_says_what_it_means(name):
  with pytest.raises(
    ValueError,
    match=r"'7x': per_class \(images per class\) must be an "
    r"integer such as 10",
  ):
    load(name).get_config("7x")
  assert load(name).get_config("1,runlocal").num_steps == 6


def test_frepo_digits_config_mirrors_rfad_digits():
  from experiments import frepo_digits, rfad_digits
  from kdjax.distill import job

  for arg in ("1", "50", "10,runlocal"):
    job.validate(frepo_digits.get_config(arg))
  c, rfad_c = frepo_digits.get_config("10"), rfad_digits.get_config("10")
  assert c.method == "frepo" and c.dataset.name == "digits" and c.frepo.per_class == 10
  assert c.evaluation == rfad_c.evaluation  # the table judges both by one protocol
  assert c.frepo.depth == rfad_c.rfad.depth == 2  # 8x8 -> 2x2 feature maps
  for point in frepo_digits.sweep():
    sweep.apply_point(c, point)
