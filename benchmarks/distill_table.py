"""Dataset distillation table: random real vs RFAD / FRePo vs closed-form vs full data, judged
by the same finite-network protocol (kdjax.distill.evaluation) and by KRR.

  .venv/bin/python -m benchmarks.distill_table --datasets=mnist5k --per_class=1,10

For each dataset and images-per-class it runs the ``distill`` job (``experiments/rfad_
<dataset>.py``; ``frepo``: ``experiments/frepo_mnist5k.py``, mnist5k only) in a temporary
workdir; its summary holds the KRR accuracy with the method's kernel and the finite-ConvNet
accuracy (mean +- std over the protocol's seeds) of the distilled set and of the random real
set it started from, and the distillation's wall seconds (seconds per step show how the cost
grows with the support size). Every row ends with the 1-minute load average. ``closed_form``
(Chen, Huang & Weng, 2024; one point per class, so only at 1/class) distils the linear
ridge model on pixels, whose KRR accuracy equals the full-data linear ridge; ``full``
trains the same finite ConvNets on all training images (the ceiling).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from kdjax import data
from kdjax.distill import closed_form, evaluation, job

_DATASETS = flags.DEFINE_list("datasets", ["mnist5k", "digits"], "Embedded datasets.")
_PER_CLASS = flags.DEFINE_list("per_class", ["1", "10", "50"], "Images per class.")
_METHODS = flags.DEFINE_list(
  "methods",
  ["rfad", "closed_form", "full"],
  "Rows besides random real (which the rfad job reports): rfad, frepo, closed_form, full.",
)
_STEPS = flags.DEFINE_integer("num_steps", 0, "RFAD steps (0: the config's).")
_OVERRIDES = flags.DEFINE_list("overrides", [], "key=value config overrides, e.g. rfad.width=32.")


def _config(dataset: str, per_class: int, method: str = "rfad"):
  config = importlib.import_module(f"experiments.{method}_{dataset}").get_config(str(per_class))
  if _STEPS.value:
    config.num_steps = _STEPS.value
  for item in _OVERRIDES.value:
    key, value = item.split("=")
    *path, name = key.split(".")
    section = config
    for part in path:
      section = section[part]
    section[name] = type(section[name])(value)
  return config


def _row(dataset, per_class, method, krr, finite, seconds):
  finite_text = f"{100 * finite['mean']:.1f} +- {100 * finite['std']:.1f}" if finite else "-"
  krr_text = f"{100 * krr:.1f}" if krr is not None else "-"
  seconds_text = f"{seconds:.0f}" if seconds is not None else "-"
  load = os.getloadavg()[0]
  print(
    f"| {dataset} | {per_class} | {method} | {krr_text} | {finite_text} | {seconds_text} "
    f"| {load:.1f} |",
    flush=True,
  )


def main(argv):
  del argv
  print(common.describe_devices())
  print("| dataset | per class | method | KRR % | finite ConvNet % | seconds | load |")
  print("|---|---|---|---|---|---|---|")
  for dataset in _DATASETS.value:
    base = _config(dataset, 1)
    ds = data.preprocess_dataset(
      data.load(dataset), base.dataset.preprocess, zca_strength=base.dataset.zca_strength
    )
    protocol = job.protocol(base)
    for per_class in map(int, _PER_CLASS.value):
      for method in ("rfad", "frepo"):
        if method not in _METHODS.value or (method == "frepo" and dataset != "mnist5k"):
          continue
        config = _config(dataset, per_class, method)
        with tempfile.TemporaryDirectory() as workdir:
          s = job.run(config, workdir)
        if method == "rfad" or "rfad" not in _METHODS.value:
          _row(
            dataset,
            per_class,
            "random real",
            s["test_accuracy_init"],
            {"mean": s["transfer_test_accuracy_init"], "std": s["transfer_test_accuracy_init_std"]},
            None,
          )
        per_step = s["distill_seconds"] / config.num_steps
        _row(
          dataset,
          per_class,
          f"{method} ({config.num_steps} steps, {per_step:.2f} s/step incl. compilation)",
          s["test_accuracy"],
          {"mean": s["transfer_test_accuracy"], "std": s["transfer_test_accuracy_std"]},
          s["distill_seconds"],
        )
      if "closed_form" in _METHODS.value and per_class == 1:
        t0 = time.time()
        x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
        support, labels = closed_form.distill(x, np.eye(ds.num_classes)[ds.y_train], reg=10.0)
        seconds = time.time() - t0
        x_test = ds.x_test.reshape(len(ds.x_test), -1)
        krr = float(np.mean(np.argmax(x_test @ np.linalg.pinv(support) @ labels, 1) == ds.y_test))
        images = np.asarray(support, np.float32).reshape((-1,) + ds.x_train.shape[1:])
        finite = evaluation.evaluate(
          images,
          np.asarray(labels, np.float32),
          ds.x_test,
          ds.y_test,
          evaluation.Protocol(**{**protocol.__dict__, "loss": "mse"}),
          num_classes=ds.num_classes,
        )
        _row(dataset, 1, "closed-form linear ridge", krr, finite, seconds)
    if "full" in _METHODS.value:
      finite = evaluation.evaluate(
        ds.x_train, ds.y_train, ds.x_test, ds.y_test, protocol, num_classes=ds.num_classes
      )
      _row(dataset, "all", "full data", None, finite, None)


if __name__ == "__main__":
  app.run(main)
