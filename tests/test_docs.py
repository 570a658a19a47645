"""The docs check: README.md and docs/**/*.md say only what is true of this repository.

Every failure names the document, the line and the missing thing, e.g.
``docs/theory.md:42: python -m kdjax.theory.experiments: no module file kdjax/theory/...``.

What is checked, cheaply (no job runs, configs are only built):

* **Commands**: the lines of shell code blocks (```` ```bash ````, ```` ```sh ````, or no
  language) and inline code spans in prose that start with ``python``, ``make`` or
  ``.venv/bin/python``:
  - ``python -m MODULE``: a module of this repository (``a/b.py`` or ``a/b/__init__.py``)
    or an installed one (``pytest``);
  - ``--FLAG``: defined by that module (its absl ``flags.DEFINE_*``; ``--noFLAG`` for booleans);
  - ``--config=experiments/NAME.py[:arg]``: the file exists and its ``get_config(arg)``
    accepts ``arg``; ``--config.key=value``: the config has ``key``; ``launch.sweep``'s
    ``--only=a,b``: the config's ``sweep(arg)`` has those points; the keys of
    ``benchmarks.distill_table --overrides=k=v,...`` (``OVERRIDE_FLAGS``) exist;
  - ``make TARGET``: a target of the Makefile; ``launch/x.sh --flag``: the script (or
    ``launch/common.sh``) handles ``--flag``, and what follows ``--`` is checked as
    ``launch.main``'s arguments; repository paths in arguments exist.
* **Names in prose**: inline spans naming a repository path (``kdjax/jobs/loop.py``,
  ``experiments/kip_mnist5k.py:1``), a bare ``.py``/``.ipynb``/``.sh`` file name (``gram.py``:
  a file of a directory that its table row or paragraph names, e.g. ``kdjax/kernels/``, or
  of the repository when they name none), a dotted name (``kdjax.krr.predict``,
  ``benchmarks.common.time_call``: the module file exists and defines, imports or
  re-exports the name), or a config key (``--config.kip.learn_labels=True``,
  ``config.mode``: some config in ``experiments/`` has it).
* **Links**: relative links and images resolve; ``#anchors`` name a heading of the target.
* **Python blocks**: each runs in this file unless it is marked. A marker is an HTML comment
  (invisible on GitHub) on the line before the opening fence:
  - ``<!-- illustrative -->``: the block shows an API on the reader's own objects and is not
    run; its ``import`` lines are still resolved as dotted names;
  - ``<!-- docs-test: NAME -->``: the block is run by ``DOC_TESTS[NAME]`` below, which
    supplies what the block leaves to the reader and checks its results (the block itself
    runs verbatim); NAMEs in ``SLOW_DOC_TESTS`` run only with ``-m slow``;
  - no marker: the block runs verbatim, alone, in a fresh namespace, and must not raise.

Placeholders are not checked: upper-case words (``experiments/NAME.py``, ``DIR``, ``PORT``,
``benchmarks.NAME``), ``...``, ``<step>``, ``*`` and ``{0,1}``; ``[...]`` brackets around
optional arguments are dropped and their contents checked.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from tests.docs_check import (
  DOCS,
  PYTHON_LANGS,
  SHELL_LANGS,
  Block,
  _rel,
  check_command,
  check_imports,
  check_links,
  check_span,
  parse,
  shell_lines,
  span_dirs,
  spans,
)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_commands_paths_names_and_links(path):
  doc = parse(path)
  errors = check_links(doc)
  for block in doc.blocks:
    if block.lang in SHELL_LANGS:
      for line, command in shell_lines(block):
        errors += [f"{doc.name}:{line}: {e}" for e in check_command(command)]
    elif block.lang in PYTHON_LANGS:
      errors += [f"{block.where}: {e}" for e in check_imports(block)]
  dirs = span_dirs(doc)
  for line, text in spans(doc):
    errors += [f"{doc.name}:{line}: {e}" for e in check_span(text, dirs.get(line, frozenset()))]
  assert not errors, "\n".join(dict.fromkeys(errors))


def test_the_checks_catch_stale_text():
  """The checker finds what the docs tests are there to find."""
  assert check_command("python -m launch.main --config=experiments/kd_mnist5k.py --workdir=D") == []
  assert (
    check_command(
      "python -m launch.main --config=experiments/kd_mnist5k.py:runlocal "
      "--workdir=D --config.num_steps=3"
    )
    == []
  )
  assert check_command("python -m launch.main --config=experiments/nope.py --workdir=D")
  assert check_command("python -m launch.main --config=experiments/kd_mnist5k.py:bogus=1")
  assert check_command(
    "python -m launch.main --config=experiments/kd_mnist5k.py --workdir=D --config.no_such_key=1"
  )
  assert check_command("python -m launch.main --config=experiments/kd_mnist5k.py --bogus=1")
  assert check_command("python -m kdjax.no_such_module")
  assert check_command("python -m benchmarks.kd_mnist5k --no_such_flag=1")
  assert check_command("python -m benchmarks.lm_kd --notable --nosampling") == []
  assert check_command("python -m benchmarks.distill_table --overrides=evaluation.no_such_key=1")
  assert check_command("make no_such_target") and check_command("make test-all") == []
  assert check_command("launch/tpu_vm.sh --name x --no_such_option -- --config=a")
  assert check_span("kdjax.krr.predict") == [] and check_span("kdjax.krr.no_such_name")
  assert check_span("kdjax/no_such_file.py") and check_span("--config.no_such_key=1")
  assert check_span("no_such_file.py") and check_span("gram.py") == []
  assert check_span("gram.py", frozenset({"kdjax/kernels"})) == []
  assert check_span("gram.py", frozenset({"kdjax/krr"}))
  assert check_span("python -m benchmarks.NAME") == []  # a placeholder


# ----------------------------------------------------------------------------------------
# The Python blocks.


def _python_blocks() -> list[Block]:
  return [b for p in DOCS for b in parse(p).blocks if b.lang in PYTHON_LANGS]


def _run(block: Block, namespace: dict | None = None) -> dict:
  """Executes the block verbatim (tracebacks point at the document's lines)."""
  namespace = {"__name__": "__docs__", **(namespace or {})}
  code = "\n" * (block.line - 1) + block.code
  exec(compile(code, block.doc, "exec"), namespace)  # noqa: S102 (the docs' own code)
  return namespace


def _optax_kd_step(block: Block) -> None:
  """README: ``kd_loss`` in the reader's optax step; trained on a toy problem, the loss
  must halve and the accuracy exceed 90%."""
  import jax.numpy as jnp
  import optax

  rng = np.random.default_rng(0)
  num, dim, classes = 256, 8, 4
  x = jnp.asarray(rng.standard_normal((num, dim)), jnp.float32)
  teacher_params = {"w": jnp.asarray(rng.standard_normal((dim, classes)), jnp.float32)}
  y = jnp.argmax(x @ teacher_params["w"], axis=-1)
  namespace = _run(
    block,
    {
      "student_apply": lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"],
      "teacher_apply": lambda p, x: x @ p["w"],
      "optimizer": optax.adam(1e-2),
    },
  )
  params = {
    "w1": jnp.asarray(0.3 * rng.standard_normal((dim, 16)), jnp.float32),
    "w2": jnp.zeros((16, classes), jnp.float32),
  }
  opt_state = namespace["optimizer"].init(params)
  losses = []
  for _ in range(150):
    params, opt_state, loss = namespace["train_step"](params, opt_state, teacher_params, x, y)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
  accuracy = float(jnp.mean(jnp.argmax(namespace["student_apply"](params, x), -1) == y))
  assert accuracy > 0.9


def _log_softmax64(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _sequence_accumulation(block: Block) -> None:
  """docs/losses.md: micro-batch sums and counts give the full batch's mean JSD and its
  gradient (float64 NumPy formula and central differences)."""
  import jax
  import jax.numpy as jnp

  rng = np.random.default_rng(1)
  batch, time, vocab, hidden, beta = 6, 5, 7, 3, 0.5
  x = rng.standard_normal((batch, time, hidden)).astype(np.float32)
  teacher = (2 * rng.standard_normal((batch, time, vocab))).astype(np.float32)
  mask = rng.random((batch, time)) < 0.6
  mask[:2] = False
  w = rng.standard_normal((hidden, vocab)).astype(np.float32)
  cuts = [(0, 2), (2, 4), (4, 6)]  # unequal token counts (one micro-batch has none)
  micro_batches = [
    {"x": x[a:b], "teacher_logits": teacher[a:b], "mask": mask[a:b]} for a, b in cuts
  ]
  namespace = {
    "jax": jax,
    "jnp": jnp,
    "apply": lambda p, x: x @ p["w"],
    "params": {"w": jnp.asarray(w)},
    "micro_batches": micro_batches,
  }
  ns = _run(block, namespace)

  log_p = _log_softmax64(teacher)
  p = np.exp(log_p)

  def mean_jsd(w):  # the full batch's masked mean, float64
    log_q = _log_softmax64(x.astype(np.float64) @ w)
    q = np.exp(log_q)
    log_m = np.log(beta * p + (1 - beta) * q)
    jsd = beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)
    return (jsd * mask).sum() / mask.sum()

  w64, eps = w.astype(np.float64), 1e-6
  grad = np.zeros_like(w64)
  for i in np.ndindex(w64.shape):
    step = np.zeros_like(w64)
    step[i] = eps
    grad[i] = (mean_jsd(w64 + step) - mean_jsd(w64 - step)) / (2 * eps)
  np.testing.assert_allclose(float(ns["loss"]), mean_jsd(w64), rtol=1e-5)
  np.testing.assert_allclose(ns["grads"]["w"], grad, rtol=1e-3, atol=1e-6)


def _kernels(block: Block) -> None:
  """docs/kernels.md: the tiled and sharded Grams equal the one-shot kernel, KRR equals a
  float64 NumPy ridge solve, and the posterior mean equals the prediction."""
  import jax.numpy as jnp

  ns = _run(block)
  k, ntk = ns["k"], np.asarray(ns["ntk"], np.float64)
  assert k.ntk.shape == k.nngp.shape == ntk.shape == (5, 20)
  np.testing.assert_allclose(k.ntk, ntk, rtol=1e-6)
  np.testing.assert_allclose(ns["k_test_train"], ntk, rtol=1e-5)
  kernel_fn, x_train = ns["kernel_fn"], ns["x_train"]
  k_tt = np.asarray(ns["k_train_train"], np.float64)
  np.testing.assert_allclose(k_tt, kernel_fn(x_train, x_train, "ntk"), rtol=1e-5)
  np.testing.assert_allclose(k_tt, k_tt.T, rtol=1e-6)
  assert ns["ntk_emp"].shape == (5, 20) and np.all(np.isfinite(ns["ntk_emp"]))
  reg = 1e-6 * np.trace(k_tt) / len(k_tt)
  alpha = np.linalg.solve(k_tt + reg * np.eye(len(k_tt)), np.asarray(ns["y_train"], np.float64))
  expected = ntk @ alpha
  scale = np.abs(expected).max()
  np.testing.assert_allclose(ns["pred"], expected, atol=1e-3 * scale)
  np.testing.assert_allclose(ns["mean"], ns["pred"], atol=1e-5 * scale)
  var, prior = np.asarray(ns["var"]), np.asarray(ns["k_test_test_diag"])
  assert var.shape == (5,) and np.all(var >= 0) and np.all(var <= prior * (1 + 1e-6))
  assert isinstance(ns["k_test_test_diag"], jnp.ndarray)


def _kip_python_api(block: Block) -> None:
  """docs/dataset_distillation.md: 500 KIP steps in Python print the 0.939 the comment
  promises (KRR test accuracy of the 100 learned images)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    ns = _run(block)
  assert abs(float(out.getvalue().split()[-1]) - 0.939) < 0.005, out.getvalue()
  assert ns["ys_solved"].shape == (100, 10)


DOC_TESTS = {
  "optax_kd_step": _optax_kd_step,
  "sequence_accumulation": _sequence_accumulation,
  "kernels": _kernels,
  "kip_python_api": _kip_python_api,
}
SLOW_DOC_TESTS = {"kip_python_api"}  # ~25 s of CPU: mnist5k and 500 KIP steps


def _block_params():
  params = []
  for block in _python_blocks():
    if block.marker == "illustrative":
      continue
    name = (block.marker or "").removeprefix("docs-test:")
    marks = [pytest.mark.slow] if name in SLOW_DOC_TESTS else []
    params.append(pytest.param(block, id=f"{block.where}{'-' + name if name else ''}", marks=marks))
  return params


@pytest.mark.parametrize("block", _block_params())
def test_python_block_runs(block):
  if block.marker is None:
    _run(block)
    return
  name = block.marker.removeprefix("docs-test:")
  assert name in DOC_TESTS, f"{block.where}: no docs test {name!r} (known: {sorted(DOC_TESTS)})"
  DOC_TESTS[name](block)


def test_every_docs_test_has_its_block():
  used = [
    b.marker.removeprefix("docs-test:")
    for b in _python_blocks()
    if b.marker and b.marker.startswith("docs-test:")
  ]
  assert sorted(used) == sorted(DOC_TESTS), (
    f"each DOC_TESTS name must mark exactly one block; marked: {sorted(used)}"
  )
