"""Input pipelines: embedded offline datasets and tfds datasets behind one interface,
preprocessing for kernel methods, and deterministic data-parallel batches.

API: `load(name) -> Dataset` (embedded `mnist5k` and `digits`, or a tfds name),
`standardize_images`, `fit_zca` / `ZcaWhitening`, `regression_targets`,
`class_balanced_indices`, and `Batches` for deterministic data-parallel batches;
`toy2d`: the exact 2-D distributions of diffusion distillation.
"""

from kdjax.data import text, toy2d
from kdjax.data.batches import Batches, batch_indices
from kdjax.data.datasets import DATASETS, EMBEDDED, TFDS, Dataset, load
from kdjax.data.preprocess import (
  PREPROCESSING,
  ZcaWhitening,
  class_balanced_indices,
  fit_zca,
  preprocess_dataset,
  regression_targets,
  standardize_images,
)

__all__ = [
  "text",
  "toy2d",
  "Batches",
  "batch_indices",
  "DATASETS",
  "EMBEDDED",
  "TFDS",
  "Dataset",
  "load",
  "PREPROCESSING",
  "ZcaWhitening",
  "class_balanced_indices",
  "fit_zca",
  "preprocess_dataset",
  "regression_targets",
  "standardize_images",
]
