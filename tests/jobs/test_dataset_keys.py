"""Keys of a ``dataset`` block that the dataset would ignore are errors naming the key."""

import pytest

from experiments import common, lm_kd_lm1b, lm_kd_pystdlib
from kdjax.jobs import datasets
from kdjax.train import lm_job
from launch import cli


def test_image_dataset_block_refuses_a_data_dir_for_an_embedded_dataset_and_unknown_names():
  for name in ("mnist5k", "digits"):
    block = common.dataset(name)
    assert datasets.dataset_spec(block)[:2] == (name, None)
    block.data_dir = "/data/tfds"  # silently ignored before
    with pytest.raises(ValueError, match=rf"^config.dataset.data_dir='/data/tfds' .* {name!r} is"):
      datasets.dataset_spec(block)
  block = common.dataset("mnist")
  block.data_dir = "/data/tfds"
  assert datasets.dataset_spec(block)[:2] == ("mnist", "/data/tfds")
  with pytest.raises(ValueError, match=r"^config.dataset.name must be one of \['mnist5k'"):
    datasets.dataset_spec(common.dataset("imagenet21k"))


@pytest.mark.parametrize(
  "key, value",
  [
    ("data_dir", "/data/tfds"),  # the case: pystdlib is embedded
    ("max_documents", 100),
    ("spm_model", "spm/x.model"),  # the byte tokenizer
    ("spm_vocab_size", 8192),
    ("spm_train_documents", 1000),
  ],
)
def test_lm_dataset_block_refuses_keys_the_corpus_or_tokenizer_ignores(key, value):
  config = lm_kd_pystdlib.get_config("runlocal")
  config.dataset[key] = value
  with pytest.raises(ValueError, match=rf"^config.dataset.{key}={value!r} would be ignored"):
    lm_job._check_dataset_keys(config.dataset)  # pylint: disable=protected-access


def test_shipped_lm_configs_set_no_ignored_key_and_the_launcher_error_is_one_line(tmp_path):
  for module in (lm_kd_pystdlib, lm_kd_lm1b):
    for arg in (None, "runlocal"):
      lm_job._check_dataset_keys(module.get_config(arg).dataset)  # pylint: disable=protected-access
  config = lm_kd_pystdlib.get_config("runlocal")
  config.dataset.data_dir = "/data/tfds"
  with pytest.raises(SystemExit, match=r"^error: config.dataset.data_dir='/data/tfds' would"):
    cli.run_job(config, str(tmp_path / "run"))  # before the corpus is read or the workdir made
  assert not (tmp_path / "run").exists()
