"""The tfds experiment configs (CIFAR KD) run end to end on tfds.testing.mock_data."""

import importlib

import pytest

from kdjax.jobs import workdir as workdir_lib
from kdjax.train import train_job

tfds = pytest.importorskip("tensorflow_datasets")


def _get_config(name, arg):
  module = importlib.import_module(f"experiments.{name}")
  return module, module.get_config(arg)


@pytest.mark.parametrize(
  "name, classes",
  [
    pytest.param("kd_cifar10", 10, marks=pytest.mark.slow),
    pytest.param("kd_cifar100", 100, marks=pytest.mark.slow),
  ],
)
def test_cifar_kd_config_runs_on_mock_data(tmp_path, name, classes):
  module, config = _get_config(name, "runlocal")
  assert config.model.num_classes == classes and config.augment == "crop_flip"
  with tfds.testing.mock_data(num_examples=64):
    summary = train_job.run(config, str(tmp_path))
  assert {"test_accuracy", "teacher_test_accuracy", "train_loss"} <= set(summary)
  records = workdir_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in records] == [2, 4] and "test_accuracy" in records[-1]
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path / "teacher"))] == [2, 4]
  # Full-size configs: resnet32x4 teacher, resnet8x4 student, 240 epochs of batch 64.
  full = module.get_config(None)
  assert (full.model.name, full.teacher.model.name) == ("resnet8x4", "resnet32x4")
  assert full.num_steps == 240 * 50000 // 64
  assert {p["name"] for p in module.sweep()} >= {"kd_t4", "student_only"}
