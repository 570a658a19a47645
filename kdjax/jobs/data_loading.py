"""The dataset a config's ``dataset`` block names, loaded and preprocessed.

Every image job reads the same keys: ``dataset.name`` (embedded ``mnist5k``/``digits`` or a
tfds name), ``data_dir``, ``max_train``, ``max_test`` ('' and 0 mean the default and all),
``preprocess`` and ``zca_strength`` (``kdjax.data.preprocess_dataset``).
"""

from __future__ import annotations

from typing import Any

from kdjax import data

__all__ = ["dataset_spec", "load_spec", "load_dataset"]


def dataset_spec(dataset_config: Any) -> tuple:
  """The hashable ``(name, data_dir, max_train, max_test, preprocess, zca_strength)`` of a
  ``dataset`` block, with '' and 0 turned into None (a cache key for :func:`load_spec`).

  Raises:
    ValueError: naming the key: an unknown ``name``, or a ``data_dir`` for an embedded
      dataset (which would ignore it).
  """
  c = dataset_config
  if c.name not in data.DATASETS:
    raise ValueError(f"config.dataset.name must be one of {list(data.DATASETS)}, got {c.name!r}")
  if c.data_dir and c.name in data.EMBEDDED:
    raise ValueError(
      f"config.dataset.data_dir={c.data_dir!r} is for the tfds datasets {list(data.TFDS)}: "
      f"{c.name!r} is embedded and would ignore it (leave data_dir '')"
    )
  return (
    c.name,
    c.data_dir or None,
    c.max_train or None,
    c.max_test or None,
    c.preprocess,
    float(c.zca_strength),
  )


def load_spec(
  name: str,
  data_dir: str | None,
  max_train: int | None,
  max_test: int | None,
  preprocess: str,
  zca_strength: float,
) -> data.Dataset:
  """``kdjax.data.load`` followed by ``kdjax.data.preprocess_dataset``."""
  ds = data.load(name, data_dir=data_dir, max_train=max_train, max_test=max_test)
  return data.preprocess_dataset(ds, preprocess, zca_strength=zca_strength)


def load_dataset(dataset_config: Any) -> data.Dataset:
  """Loads and preprocesses the dataset of a ``dataset`` config block (uncached)."""
  return load_spec(*dataset_spec(dataset_config))
