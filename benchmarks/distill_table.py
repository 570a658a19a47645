"""Dataset distillation table: random real vs KIP-FC / RFAD / FRePo / DM / DC / DSA vs
closed-form vs full data, judged by the same finite-network protocol
(kdjax.distill.evaluation) and by KRR; and the time per step of each method as a function
of the images per class.

  .venv/bin/python -m benchmarks.distill_table --datasets=mnist5k --per_class=1,10
  .venv/bin/python -m benchmarks.distill_table --methods=dm,dc,dsa --timing
  .venv/bin/python -m benchmarks.distill_table --methods=mtt --per_class=1 --seeds=3

For each dataset and images-per-class it runs each method's job in a temporary workdir.
The methods and their configs are :data:`CONFIGS` (``experiments/<method>_<dataset>.py``);
every method but ``kip`` is a method of the ``distill`` job, whose summary holds the KRR
accuracy with the method's kernel (for DM, DC, DSA: one random ConvNet's embedding) and
the finite-ConvNet accuracy (mean +- std over the protocol's seeds) of the distilled set
and of the random real set it started from (the first of them prints that random real
row; ``--seeds=N`` runs each of these rows at distillation seeds 0..N-1 and prints the mean
over seeds, +- the std over seeds); ``kip``: the KIP job (the FC NTK: Nguyen, Chen & Lee,
2021), its KRR accuracy with that kernel, and finite ConvNets trained on its support set by
the same protocol. Every
distillation prints its seconds per step (wall seconds of the steps incl. compilation /
steps) and its total wall seconds; every row ends with the 1-minute load average.
``closed_form`` (Chen, Huang & Weng, 2024; one point per class, so only at 1/class)
distils the linear ridge model on pixels, whose KRR accuracy equals the full-data linear
ridge; ``full`` trains the same finite ConvNets on all training images (the ceiling).
The protocol is the ``evaluation`` block of ``experiments/rfad_<dataset>.py``
(``--protocol=field``: the papers' field protocol, ``experiments.common.field_evaluation``).

``--timing`` prints, instead of the table, one row per dataset and distill-job method: the
seconds per step at each ``--per_class`` (mean over ``--timing_steps`` steps after the
first two, compilation excluded) and, in brackets, the first two steps' seconds (their
compilation).
"""

from __future__ import annotations

import importlib
import os
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from experiments import common as experiments_common
from kdjax.distill import closed_form, evaluation, job, mtt, runner, support
from kdjax.jobs import data_loading

# method -> its config module (``{dataset}`` filled in), whose get_config takes
# ``per_class[,protocol=field]``. Every method but kip is a ``method=`` of the distill job:
# a new one needs only its line here.
CONFIGS = {
  "rfad": "experiments.rfad_{dataset}",
  "frepo": "experiments.frepo_{dataset}",
  "dm": "experiments.dm_{dataset}",
  "dc": "experiments.dc_{dataset}",
  "dsa": "experiments.dsa_{dataset}",
  "mtt": "experiments.mtt_{dataset}",
  "datm": "experiments.datm_{dataset}",
  "rcig": "experiments.rcig_{dataset}",
  "kip": "experiments.kip_{dataset}",
}
JOB_METHODS = tuple(m for m in CONFIGS if m != "kip")  # the distill job's
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
  "[METHOD:]key=value overrides of the configs. 'dm:num_steps=300' applies to the dm rows "
  "only (any METHOD, kip too); an unprefixed key whose first part is a method's block "
  "('rfad.num_models=2', 'dc.inner_steps=2') to the configs that have that block; any other "
  "unprefixed key ('evaluation.seeds=1') to every distill-job method (not kip). An override "
  "that no requested row uses is an error.",
)
_KIP_OVERRIDES = flags.DEFINE_list(
  "kip_overrides", [], "key=value overrides of the KIP configs (as kip:key=value overrides)."
)
_PROTOCOL = flags.DEFINE_enum(
  "protocol",
  "pinned",
  ["pinned", "field"],
  "The finite-network protocol: the configs' pinned CPU one, or the papers' field protocol "
  "(width 128, DSA, 1,000 epochs: for accelerators).",
)
_SEEDS = flags.DEFINE_integer(
  "seeds",
  1,
  "Distillation seeds (config.seed 0..N-1) of every distill-job row: the row's finite "
  "column is the mean over seeds of each seed's protocol mean, +- their std over seeds "
  "(one seed: the protocol's std over its networks).",
)
_TIMING = flags.DEFINE_bool(
  "timing",
  False,
  "Print the seconds per step of each distill-job method at each --per_class instead of "
  "the table (no evaluation).",
)
_TIMING_STEPS = flags.DEFINE_integer(
  "timing_steps", 10, "Timed steps per --timing point, after the first two (compiling) ones."
)


def parse_overrides(
  items: list[str], kip_items: list[str] = ()
) -> list[tuple[str | None, str, str]]:
  """``(method or None, dotted key, value text)`` of ``--overrides`` (``[METHOD:]key=value``)
  and ``--kip_overrides`` (``key=value``, method ``kip``); ValueError names a bad one."""
  parsed = []
  for item, default in [(i, None) for i in items] + [(i, "kip") for i in kip_items]:
    head, has_value, value = item.partition("=")
    method, colon, key = head.rpartition(":")
    if not has_value or not key or (colon and method not in CONFIGS):
      raise ValueError(
        f"override {item!r}: expected [METHOD:]key=value with METHOD one of {list(CONFIGS)}"
      )
    parsed.append((method or default, key.strip(), value.strip()))
  return parsed


def applies(override: tuple, method: str, config) -> bool:
  """Whether ``override`` (from :func:`parse_overrides`) applies to ``method``'s ``config``."""
  scope, key, _ = override
  if scope is not None:
    return scope == method
  block = key.split(".")[0]
  if method == "kip":
    return False
  return block not in CONFIGS or block in config


def config_for(
  dataset: str,
  per_class: int,
  method: str,
  *,
  overrides: list = (),
  protocol: str = "pinned",
  num_steps: int = 0,
  used: set | None = None,
):
  """``experiments/<method>_<dataset>.py`` at ``per_class`` (and ``protocol``, not for kip)
  with ``num_steps`` (0: the config's) and those of ``overrides`` (:func:`parse_overrides`)
  that :func:`applies` to it; their indices are added to ``used``. ValueError names an
  override whose key the config lacks."""
  arg = f"{per_class}" if method == "kip" else f"{per_class},protocol={protocol}"
  config = importlib.import_module(CONFIGS[method].format(dataset=dataset)).get_config(arg)
  if num_steps:
    config.num_steps = num_steps
  for index, override in enumerate(overrides):
    if not applies(override, method, config):
      continue
    _, key, value = override
    *path, name = key.split(".")
    section = config
    try:
      for part in path:
        section = section[part]
      current = section[name]
    except (KeyError, AttributeError):
      raise ValueError(
        f"override {key}={value}: experiments/{method}_{dataset}.py has no key {key}"
      ) from None
    # Typed like the config's value (booleans too), by the configs' own arg parser.
    section[name] = experiments_common.parse_arg(f"{name}={value}", **{name: current})[name]
    if used is not None:
      used.add(index)
  return config


def _config(dataset: str, per_class: int, method: str = "rfad", used: set | None = None):
  """:func:`config_for` with the command's flags."""
  return config_for(
    dataset,
    per_class,
    method,
    overrides=parse_overrides(_OVERRIDES.value, _KIP_OVERRIDES.value),
    protocol=_PROTOCOL.value,
    num_steps=_STEPS.value,
    used=used,
  )


def _check_overrides(datasets, per_class, methods):
  """A ValueError for an override no requested row would use (e.g. a mistyped method)."""
  used = set()
  for dataset in datasets:
    for n in per_class:
      for method in methods:
        if method in CONFIGS:
          _config(dataset, n, method, used)
  overrides = _OVERRIDES.value + _KIP_OVERRIDES.value
  unused = [item for i, item in enumerate(overrides) if i not in used]
  if unused:
    raise ValueError(f"overrides {unused} apply to none of the requested methods {methods}")


def _row(dataset, per_class, method, krr, finite, seconds, steps=None):
  finite_text = f"{100 * finite['mean']:.1f} +- {100 * finite['std']:.1f}" if finite else "-"
  krr_text = f"{100 * krr:.1f}" if krr is not None else "-"
  seconds_text = f"{seconds:.0f}" if seconds is not None else "-"
  per_step = f"{seconds / steps:.3g}" if seconds is not None and steps else "-"
  load = os.getloadavg()[0]
  print(
    f"| {dataset} | {per_class} | {method} | {krr_text} | {finite_text} | {per_step} "
    f"| {seconds_text} | {load:.1f} |",
    flush=True,
  )


def over_seeds(summaries: list[dict], key: str) -> dict:
  """``{'mean', 'std'}`` of the finite accuracy ``key`` over the distillation seeds'
  ``summaries``: the mean of their protocol means, +- their std over seeds (population,
  ddof 0); a single seed keeps its protocol's std over networks (``key + '_std'``)."""
  means = [s[key] for s in summaries]
  if len(means) == 1:
    return {"mean": means[0], "std": summaries[0][f"{key}_std"]}
  return {"mean": float(np.mean(means)), "std": float(np.std(means))}


def _job_rows(dataset, per_class, method, random_real):
  """The ``distill`` job's rows (``method`` one of JOB_METHODS) over ``--seeds``
  distillation seeds, random real first if asked."""
  summaries = []
  for seed in range(_SEEDS.value):
    config = _config(dataset, per_class, method)
    config.seed = seed
    with tempfile.TemporaryDirectory() as workdir:
      summaries.append(job.run(config, workdir))
  s, seeds = summaries[0], f", {len(summaries)} seeds" if len(summaries) > 1 else ""
  if random_real:
    _row(
      dataset,
      per_class,
      f"random real (KRR: {method}'s kernel{seeds})",
      float(np.mean([t["test_accuracy_init"] for t in summaries])),
      over_seeds(summaries, "transfer_test_accuracy_init"),
      None,
    )
  # MTT/DATM's expert buffer is named with its own cost (whichever run trained it).
  buffer = f", buffer {s['experts_seconds']:.0f} s" if "experts_seconds" in s else ""
  _row(  # a resumed run times its own steps: seconds / timed steps
    dataset,
    per_class,
    f"{method} ({config.num_steps} steps{buffer}{seeds})",
    float(np.mean([t["test_accuracy"] for t in summaries])),
    over_seeds(summaries, "transfer_test_accuracy"),
    sum(t["distill_seconds"] for t in summaries),
    sum(t["distill_timed_steps"] for t in summaries),
  )


def time_steps(config, steps: int, warmup: int = 2) -> tuple[float, float]:
  """``(first, per_step)``: the seconds of the first ``warmup`` distillation steps of
  ``config`` (their compilations: the second step sees the first's output shardings, and
  DC's network training starts there) and the mean seconds of the next ``steps`` steps
  (a mean: DC/DSA's steps alternate with and without inner training), on the config's
  target batches, without a workdir or an evaluation."""
  job.validate(config)
  problem = support.support_problem(config, config.method)
  init, step_fn, _ = job._method(config, problem.mesh, problem.ds.num_classes)  # noqa: SLF001
  state = init(problem.x0, problem.y0)
  times = []
  for i in range(warmup + steps):
    batch = problem.batches.batch(i)
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch["image"], batch["label"])
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  return sum(times[:warmup]), statistics.mean(times[warmup:]) if steps else float("nan")


def _timing(datasets, per_class, methods):
  columns = " | ".join(f"s/step at {n}/class (first 2 steps)" for n in per_class)
  print(f"| dataset | method | {columns} | load |")
  print("|---|---|" + "---|" * len(per_class) + "---|")
  for dataset in datasets:
    # MTT/DATM's steps need their expert buffer: their tables' s/step column times them.
    for method in (m for m in methods if m in JOB_METHODS and m not in mtt.METHODS):
      cells = []
      for n in per_class:
        first, per_step = time_steps(_config(dataset, n, method), _TIMING_STEPS.value)
        cells.append(f"{per_step:.3g} ({first:.0f})")
      print(
        f"| {dataset} | {method} | {' | '.join(cells)} | {os.getloadavg()[0]:.1f} |", flush=True
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
  _row(
    dataset,
    per_class,
    f"kip {config.kernel.name} NTK ({config.num_steps} steps; KRR "
    f"{100 * s['test_accuracy_init']:.1f} at the random real start)",
    s["test_accuracy"],
    finite,
    s["kip_seconds"],
    s["kip_timed_steps"],
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
  if _SEEDS.value < 1:
    raise ValueError(f"--seeds must be >= 1, got {_SEEDS.value}")
  per_class_list = [int(n) for n in _PER_CLASS.value]
  _check_overrides(_DATASETS.value, per_class_list, _METHODS.value)
  print(common.describe_devices())
  if _TIMING.value:
    _timing(_DATASETS.value, per_class_list, _METHODS.value)
    return
  print("| dataset | per class | method | KRR % | finite ConvNet % | s/step | seconds | load |")
  print("|---|---|---|---|---|---|---|---|")
  for dataset in _DATASETS.value:
    base = _config(dataset, 1)
    ds = data_loading.load_dataset(base.dataset)
    protocol = job.protocol(base)
    for per_class in per_class_list:
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
