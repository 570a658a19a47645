"""Dataset distillation table: random real vs KIP-FC / RFAD / FRePo / DM / DC / DSA vs
closed-form vs full data, judged by the same finite-network protocol
(kdjax.distill.evaluation) and by KRR.

  .venv/bin/python -m benchmarks.distill_table --datasets=mnist5k --per_class=1,10

For each dataset and images-per-class it runs each method's job in a temporary workdir:
``rfad`` / ``frepo`` / ``dm`` / ``dc`` / ``dsa``: the ``distill`` job
(``experiments/<method>_<dataset>.py``), whose summary holds the KRR accuracy with the
method's kernel (for DM, DC, DSA: one random ConvNet's embedding) and the finite-ConvNet accuracy
(mean +- std over the protocol's seeds) of the distilled set and of the random real set it
started from (the first of them prints that random real row); ``kip``: the KIP job
(``experiments/kip_<dataset>.py``, the FC NTK: Nguyen, Chen & Lee, 2021), its KRR accuracy
with that kernel, and finite ConvNets trained on its support set by the same protocol.
Every distillation prints its wall seconds (incl. compilation; seconds per step show how
the cost grows with the support size); every row ends with the 1-minute load average.
``closed_form`` (Chen, Huang & Weng, 2024; one point per class, so only at 1/class)
distils the linear ridge model on pixels, whose KRR accuracy equals the full-data linear
ridge; ``full`` trains the same finite ConvNets on all training images (the ceiling).
The protocol is the ``evaluation`` block of ``experiments/rfad_<dataset>.py``.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from experiments import common as experiments_common
from kdjax.distill import closed_form, evaluation, job, runner
from kdjax.jobs import data_loading

JOB_METHODS = ("rfad", "frepo", "dm", "dc", "dsa")  # the distill job's
METHODS = JOB_METHODS + ("kip", "closed_form", "full")

_DATASETS = flags.DEFINE_list("datasets", ["mnist5k", "digits"], "Embedded datasets.")
_PER_CLASS = flags.DEFINE_list("per_class", ["1", "10", "50"], "Images per class.")
_METHODS = flags.DEFINE_list(
  "methods",
  ["rfad", "frepo", "kip", "closed_form", "full"],
  f"Rows besides random real (which the first distill-job method reports): "
  f"{', '.join(METHODS)} (dm, dc, dsa: not by default).",
)
_STEPS = flags.DEFINE_integer(
  "num_steps", 0, "Distillation steps of every method (0: the config's)."
)
_OVERRIDES = flags.DEFINE_list(
  "overrides",
  [],
  "key=value overrides of the distill-job configs and the protocol, e.g. evaluation.seeds=1.",
)
_KIP_OVERRIDES = flags.DEFINE_list(
  "kip_overrides", [], "key=value overrides of the KIP configs, e.g. kip.target_batch_size=120."
)


def _config(dataset: str, per_class: int, method: str = "rfad"):
  """``experiments/<method>_<dataset>.py`` at ``per_class`` with the command's overrides."""
  config = importlib.import_module(f"experiments.{method}_{dataset}").get_config(str(per_class))
  if _STEPS.value:
    config.num_steps = _STEPS.value
  for item in _KIP_OVERRIDES.value if method == "kip" else _OVERRIDES.value:
    key, _, value = item.partition("=")
    *path, name = key.split(".")
    section = config
    for part in path:
      section = section[part]
    # Typed like the config's value (booleans too), by the configs' own arg parser.
    section[name] = experiments_common.parse_arg(f"{name}={value}", **{name: section[name]})[name]
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


def _job_rows(dataset, per_class, method, random_real):
  """The ``distill`` job's rows (``method`` one of JOB_METHODS), random real first if asked."""
  config = _config(dataset, per_class, method)
  with tempfile.TemporaryDirectory() as workdir:
    s = job.run(config, workdir)
  if random_real:
    _row(
      dataset,
      per_class,
      f"random real (KRR: {method}'s kernel)",
      s["test_accuracy_init"],
      {"mean": s["transfer_test_accuracy_init"], "std": s["transfer_test_accuracy_init_std"]},
      None,
    )
  per_step = s["distill_seconds"] / s["distill_timed_steps"]  # a resumed run times its own
  _row(
    dataset,
    per_class,
    f"{method} ({config.num_steps} steps, {per_step:.2f} s/step incl. compilation)",
    s["test_accuracy"],
    {"mean": s["transfer_test_accuracy"], "std": s["transfer_test_accuracy_std"]},
    s["distill_seconds"],
  )


def _kip_row(dataset, per_class, ds, base_dataset, protocol):
  """KIP-FC: the KIP job (its own MLP check off), then ConvNets on its support set."""
  config = _config(dataset, per_class, "kip")
  spec, base_spec = (
    data_loading.dataset_spec(config.dataset),
    data_loading.dataset_spec(base_dataset),
  )
  if spec != base_spec:
    raise ValueError(
      f"experiments/kip_{dataset}.py's dataset {spec} must equal experiments/rfad_{dataset}.py's "
      f"{base_spec}: the table scores every method on one preprocessed test set"
    )
  config.evaluation.enabled = False  # the table's finite column is the shared protocol's
  with tempfile.TemporaryDirectory() as workdir:
    s = runner.run(config, workdir)
    with np.load(os.path.join(workdir, "support.npz")) as f:
      x, y = f["x"], f["y"]
  finite_protocol, labels = job.finite_task(protocol, y, learned=config.kip.learn_labels)
  finite = evaluation.evaluate(
    x,
    labels,
    ds.x_test,
    ds.y_test,
    finite_protocol,
    num_classes=ds.num_classes,
    seed=config.seed,
  )
  per_step = s["kip_seconds"] / s["kip_timed_steps"]  # a resumed run times its own
  _row(
    dataset,
    per_class,
    f"kip {config.kernel.name} NTK ({config.num_steps} steps, {per_step:.3f} s/step incl. "
    f"compilation; KRR {100 * s['test_accuracy_init']:.1f} at the random real start)",
    s["test_accuracy"],
    finite,
    s["kip_seconds"],
  )


def _closed_form_row(dataset, ds, protocol):
  """Closed-form linear ridge distillation (one point per class)."""
  t0 = time.time()
  x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
  support, labels = closed_form.distill(x, np.eye(ds.num_classes)[ds.y_train], reg=10.0)
  seconds = time.time() - t0
  x_test = ds.x_test.reshape(len(ds.x_test), -1)
  krr = float(np.mean(np.argmax(x_test @ np.linalg.pinv(support) @ labels, 1) == ds.y_test))
  images = np.asarray(support, np.float32).reshape((-1,) + ds.x_train.shape[1:])
  # Its labels are real-valued ridge targets: regressed like learned labels.
  finite_protocol, targets = job.finite_task(protocol, labels, learned=True)
  finite = evaluation.evaluate(
    images, targets, ds.x_test, ds.y_test, finite_protocol, num_classes=ds.num_classes
  )
  _row(dataset, 1, "closed-form linear ridge", krr, finite, seconds)


def main(argv):
  del argv
  unknown = sorted(set(_METHODS.value) - set(METHODS))
  if unknown:
    raise ValueError(f"--methods: unknown {unknown}; known: {list(METHODS)}")
  print(common.describe_devices())
  print("| dataset | per class | method | KRR % | finite ConvNet % | seconds | load |")
  print("|---|---|---|---|---|---|---|")
  for dataset in _DATASETS.value:
    base = _config(dataset, 1)
    ds = data_loading.load_dataset(base.dataset)
    protocol = job.protocol(base)
    for per_class in map(int, _PER_CLASS.value):
      job_methods = [m for m in JOB_METHODS if m in _METHODS.value]
      for method in job_methods:
        _job_rows(dataset, per_class, method, random_real=method == job_methods[0])
      if "kip" in _METHODS.value:
        _kip_row(dataset, per_class, ds, base.dataset, protocol)
      if "closed_form" in _METHODS.value and per_class == 1:
        _closed_form_row(dataset, ds, protocol)
    if "full" in _METHODS.value:
      finite = evaluation.evaluate(
        ds.x_train, ds.y_train, ds.x_test, ds.y_test, protocol, num_classes=ds.num_classes
      )
      _row(dataset, "all", "full data", None, finite, None)


if __name__ == "__main__":
  app.run(main)
