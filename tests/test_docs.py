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
    ``--only=a,b``: the config's ``sweep(arg)`` has those points;
  - ``make TARGET``: a target of the Makefile; ``launch/x.sh --flag``: the script (or
    ``launch/common.sh``) handles ``--flag``, and what follows ``--`` is checked as
    ``launch.main``'s arguments; repository paths in arguments exist.
* **Names in prose**: inline spans naming a repository path (``kdjax/jobs/loop.py``,
  ``experiments/kip_mnist5k.py:1``), a bare ``.py``/``.ipynb``/``.sh`` file name (``gram.py``:
  some file of the repository has that name), a dotted name (``kdjax.krr.predict``,
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

import ast
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import io
import pathlib
import re
import shlex

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
PACKAGES = ("kdjax", "launch", "benchmarks", "experiments")  # importable from the repo root
PATH_ROOTS = ("kdjax", "tests", "experiments", "launch", "benchmarks", "colabs", "docs", ".ci")
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
PYTHON_LANGS = ("python", "py")
# absl's own flags, accepted by every absl program.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "logtostderr"}
MARKER = re.compile(r"<!--\s*(illustrative|docs-test:\s*([\w-]+))\s*-->")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")


def _rel(path: pathlib.Path) -> str:
  return str(path.relative_to(REPO))


# ----------------------------------------------------------------------------------------
# Parsing the documents.


@dataclasses.dataclass(frozen=True)
class Block:
  """A fenced code block: its document, the line of its first code line, language, text."""

  doc: str
  line: int
  lang: str
  code: str
  marker: str | None  # 'illustrative', 'docs-test:NAME' or None

  @property
  def where(self) -> str:
    return f"{self.doc}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Doc:
  path: pathlib.Path
  blocks: tuple[Block, ...]
  prose: str  # the text with code blocks blanked (line numbers kept)

  @property
  def name(self) -> str:
    return _rel(self.path)


@functools.cache
def parse(path: pathlib.Path) -> Doc:
  lines = path.read_text().split("\n")
  blocks, prose = [], list(lines)
  i = 0
  while i < len(lines):
    opened = FENCE.match(lines[i])
    if not opened:
      i += 1
      continue
    indent, ticks, lang = opened.groups()
    j = i + 1
    while j < len(lines) and lines[j].strip() != ticks:
      j += 1
    code = "\n".join(
      line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : j]
    )
    before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
    marked = MARKER.fullmatch(before)
    marker = None
    if marked:
      marker = "illustrative" if marked.group(2) is None else f"docs-test:{marked.group(2)}"
    blocks.append(Block(_rel(path), i + 2, lang.lower(), code + "\n", marker))
    for k in range(i, min(j + 1, len(lines))):
      prose[k] = ""
    i = j + 1
  return Doc(path, tuple(blocks), "\n".join(prose))


def spans(doc: Doc):
  """Inline code spans of the prose: ``(line, text)``; a span may wrap a line."""
  for m in re.finditer(r"`([^`]+)`", doc.prose):
    if "\n\n" in m.group(1):
      continue
    text = " ".join(m.group(1).replace("\\|", "|").split())
    yield doc.prose.count("\n", 0, m.start()) + 1, text


def shell_lines(block: Block):
  """``(line, command)`` for each command of a shell block (continuations joined)."""
  lines = block.code.split("\n")
  i = 0
  while i < len(lines):
    start, text = i, lines[i]
    while text.rstrip().endswith("\\") and i + 1 < len(lines):
      i += 1
      text = text.rstrip()[:-1] + " " + lines[i].strip()
    i += 1
    if text.strip() and not text.strip().startswith("#"):
      yield block.line + start, text.strip()


# ----------------------------------------------------------------------------------------
# What exists in the repository.


def _is_placeholder(text: str) -> bool:
  return (
    text in ("", "...", "…")
    or any(c in text for c in "<>*{}…")
    or bool(re.search(r"(^|[/.:,=_])[A-Z][A-Z0-9]*($|[/.:,=_])", text))
    or "..." in text
  )


@functools.cache
def make_targets() -> frozenset[str]:
  text = (REPO / "Makefile").read_text()
  return frozenset(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.M))


@functools.cache
def repo_file_names() -> frozenset[str]:
  return frozenset(p.name for root in PATH_ROOTS for p in (REPO / root).glob("**/*"))


def module_file(dotted: str) -> pathlib.Path | None:
  """The file of a repository module ``a.b.c`` (``a/b/c.py`` or its package)."""
  base = REPO.joinpath(*dotted.split("."))
  for candidate in (base.with_suffix(".py"), base / "__init__.py"):
    if candidate.is_file():
      return candidate
  return None


@functools.cache
def defined_names(path: pathlib.Path) -> frozenset[str] | None:
  """Names a module defines, imports or re-exports (star imports followed); None when the
  module resolves names lazily (``__getattr__``)."""
  tree = ast.parse(path.read_text())
  names: set[str] = set()
  for node in tree.body:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
      names.add(node.name)
      if node.name == "__getattr__":
        return None
    elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      for target in targets:
        for name in ast.walk(target):
          if isinstance(name, ast.Name):
            names.add(name.id)
    elif isinstance(node, ast.Import):
      names.update((a.asname or a.name).split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      for alias in node.names:
        if alias.name != "*":
          names.add(alias.asname or alias.name)
        elif node.module and (star := module_file(node.module)) is not None:
          names.update(n for n in (defined_names(star) or ()) if not n.startswith("_"))
    elif isinstance(node, ast.If | ast.Try):  # names defined under a guard
      names.update(
        n.id
        for sub in ast.walk(node)
        if isinstance(sub, ast.Assign)
        for t in sub.targets
        for n in ast.walk(t)
        if isinstance(n, ast.Name)
      )
  return frozenset(names)


def resolve_dotted(dotted: str) -> str | None:
  """None when ``a.b.c[.attr]`` names a repository module, or a name one defines; else
  what is missing."""
  parts = dotted.split(".")
  if parts[0] not in PACKAGES:
    return None
  for i in range(len(parts), 0, -1):
    path = module_file(".".join(parts[:i]))
    if path is None:
      continue
    if i == len(parts):
      return None
    name = parts[i]
    names = defined_names(path)
    is_submodule = path.name == "__init__.py" and module_file(".".join(parts[: i + 1]))
    if names is None or name in names or is_submodule:
      return None
    return f"{_rel(path)} defines no {name!r}"
  return f"no module file for {parts[0]!r}"


def check_module(module: str) -> str | None:
  if _is_placeholder(module):
    return None
  top = module.split(".")[0]
  if top in PACKAGES or (REPO / top).is_dir():
    if module_file(module) is None:
      path = "/".join(module.split("."))
      return f"python -m {module}: no module file {path}.py or {path}/__init__.py"
    return None
  if importlib.util.find_spec(top) is None:
    return f"python -m {module}: {top!r} is neither in the repository nor installed"
  return None


@functools.cache
def module_flags(module: str) -> frozenset[str]:
  text = module_file(module).read_text()
  return frozenset(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", text)) | ABSL_FLAGS


@functools.cache
def load_config(stem: str, arg: str):
  """``(config, sweep points or None)`` of ``experiments/stem.py:arg``; raises as the
  config does."""
  module = importlib.import_module(f"experiments.{stem}")
  config = module.get_config(arg or None)
  points = module.sweep(arg or None) if hasattr(module, "sweep") else None
  return config, points


@functools.cache
def all_config_keys() -> frozenset[str]:
  """Every dotted key of every config in experiments/ (default arg, and runlocal)."""
  keys = set()
  for path in sorted((REPO / "experiments").glob("*.py")):
    if path.stem in ("__init__", "common"):
      continue
    config, _ = load_config(path.stem, "")
    keys.update(_dotted_keys(config))
  return frozenset(keys)


def _dotted_keys(config, prefix=""):
  for key in config.keys():
    value = config[key]
    yield prefix + key
    if hasattr(value, "keys") and callable(value.keys):
      yield from _dotted_keys(value, prefix + key + ".")


def check_key(config, dotted: str) -> str | None:
  node = config
  for depth, part in enumerate(dotted.split(".")):
    if not (hasattr(node, "keys") and part in node.keys()):
      at = ".".join(dotted.split(".")[:depth]) or "the top level"
      known = sorted(node.keys()) if hasattr(node, "keys") else "no keys: not a block"
      return f"has no key {dotted!r} (at {at}: {known})"
    node = node[part]
  return None


def check_config(value: str) -> tuple[object | None, list | None, str | None]:
  """``(config, sweep points, error)`` of ``--config=experiments/NAME.py[:arg]``."""
  path, _, arg = value.partition(":")
  if _is_placeholder(path):
    return None, None, None
  file = REPO / path
  if not file.is_file():
    return None, None, f"--config={value}: no file {path}"
  if file.parent != REPO / "experiments" or (arg and _is_placeholder(arg)):
    return None, None, None
  try:
    config, points = load_config(file.stem, arg)
  except Exception as e:  # noqa: BLE001 (the message is the report)
    return None, None, f"--config={value}: get_config({arg!r}) raised {type(e).__name__}: {e}"
  return config, points, None


def check_path(text: str) -> str | None:
  """A repository path (``kdjax/x.py``, ``experiments/x.py:arg``, ``tests/dir/``) exists;
  for a config with an arg, ``get_config(arg)`` accepts it."""
  if _is_placeholder(text) or not text.startswith(tuple(r + "/" for r in PATH_ROOTS)):
    return None
  if re.match(r"experiments/\w+\.py(:|$)", text):
    return check_config(text)[2]
  path = text.split(":")[0].rstrip("/")  # `docs/x.md:40`, `tests/x.py::test_y`
  return None if (REPO / path).exists() else f"no file or directory {path}"


# ----------------------------------------------------------------------------------------
# Commands.


def _clean(tokens: list[str]) -> list[str]:
  """Drops ``[`` ``]`` around optional arguments (not from ``python -c CODE``) and ``...``."""
  out = []
  for i, token in enumerate(tokens):
    if i == 0 or tokens[i - 1] != "-c":
      token = token.replace("[", "").replace("]", "")
    if token and token not in ("...", "…", "|"):
      out.append(token)
  return out


def check_command(text: str) -> list[str]:
  """What is wrong with one shell command (empty when nothing is)."""
  try:
    tokens = _clean(shlex.split(text, comments=True))
  except ValueError as e:
    return [f"cannot split the command {text!r}: {e}"]
  while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):  # VAR=value prefixes
    tokens = tokens[1:]
  if not tokens:
    return []
  program, args = tokens[0], tokens[1:]
  errors = [e for a in args for e in [check_path(a.partition("=")[2] or a)] if e]
  if program == "make":
    errors += [
      f"make {a}: no such Makefile target (targets: {sorted(make_targets())})"
      for a in args
      if not a.startswith("-") and "=" not in a and a not in make_targets()
    ]
  elif re.search(r"(^|/)python(3(\.\d+)?)?$", program):
    if args[:1] == ["-m"] and len(args) > 1:
      error = check_module(args[1])
      if error:
        return errors + [error]
      if not _is_placeholder(args[1]) and args[1].split(".")[0] in PACKAGES:
        errors += check_program_args(args[1], args[2:])
    elif args[:1] == ["-c"] and len(args) > 1:
      try:
        compile(args[1], "<-c>", "exec")
      except SyntaxError as e:
        errors.append(f"python -c: {e}")
  elif program.endswith(".sh") and not _is_placeholder(program):
    errors += check_script(program, args)
  return errors


def check_program_args(module: str, args: list[str]) -> list[str]:
  """The flags of ``python -m module ARGS``, and the config and its overrides."""
  errors, config, points, only = [], None, None, []
  flags = module_flags(module)
  for arg in args:
    if not arg.startswith("--"):
      continue
    name, has_value, value = arg[2:].partition("=")
    if name.startswith("config."):
      continue
    if name not in flags and not (name.startswith("no") and name[2:] in flags):
      errors.append(f"python -m {module}: no flag --{name} (it defines {sorted(flags)})")
    elif name == "config" and has_value:
      config, points, error = check_config(value)
      errors += [error] if error else []
    elif name == "only" and has_value:
      only = [o for o in value.split(",") if not _is_placeholder(o)]
  if config is None:
    return errors
  for arg in args:
    name = arg[2:].partition("=")[0]
    if arg.startswith("--config.") and not _is_placeholder(name):
      error = check_key(config, name[len("config.") :])
      errors += [f"--{name}: the config {error}"] if error else []
  if only and points is not None:
    names = [p["name"] for p in points]
    errors += [
      f"--only={o}: the sweep has no point {o!r} (it has {names})" for o in only if o not in names
    ]
  return errors


def check_script(program: str, args: list[str]) -> list[str]:
  """``launch/x.sh --flag ... -- LAUNCH.MAIN ARGS``."""
  script = REPO / program
  if not script.is_file():
    return [f"no script {program}"]
  text = script.read_text()
  common = script.parent / "common.sh"
  text += common.read_text() if common.is_file() else ""
  own, rest = (
    (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
  )
  errors = [
    f"{program}: it does not handle {a.split('=')[0]}"
    for a in own
    if a.startswith("--") and a.split("=")[0] not in text
  ]
  return errors + (check_program_args("launch.main", rest) if rest else [])


def check_span(text: str) -> list[str]:
  """An inline code span of prose: a command, a path, a dotted name or a config key."""
  if re.match(r"^(\.venv/bin/)?python3?(\.\d+)? |^make |^PYTHONPATH=|^CI=", text):
    return check_command(text)
  if m := re.fullmatch(r"(--)?config\.([a-z_]\w*(?:\.\w+)*)(=.*)?", text):
    key = m.group(2)
    if key in ("json", "key") or _is_placeholder(key):
      return []
    return [] if key in all_config_keys() else [f"{text}: no config in experiments/ has {key!r}"]
  if re.fullmatch(r"[\w-]+\.(py|ipynb|sh)", text) and not _is_placeholder(text):  # `gram.py`
    return [] if text in repo_file_names() else [f"no file named {text} in the repository"]
  if text.startswith(tuple(r + "/" for r in PATH_ROOTS)):
    error = check_path(text.split()[0].replace("[", "").replace("]", ""))
    return [error] if error else []
  if m := re.match(r"^((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)", text):
    if _is_placeholder(m.group(1)):
      return []
    error = resolve_dotted(m.group(1))
    return [f"{m.group(1)}: {error}"] if error else []
  return []


def check_imports(block: Block) -> list[str]:
  errors = []
  for node in ast.walk(ast.parse(block.code)):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
    for name in names:
      error = resolve_dotted(name)
      errors += [f"import {name}: {error}"] if error else []
  return errors


# ----------------------------------------------------------------------------------------
# Links.


def slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def anchors(path: pathlib.Path) -> frozenset[str]:
  return frozenset(slug(h) for h in re.findall(r"^#{1,6} (.*)$", parse(path).prose, re.M))


def check_links(doc: Doc) -> list[str]:
  prose = re.sub(r"`[^`]*`", lambda m: " " * len(m.group()), doc.prose)
  errors = []
  for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose):
    target = m.group(1)
    if re.match(r"^[a-z]+:", target):
      continue
    line = prose.count("\n", 0, m.start()) + 1
    path, _, anchor = target.partition("#")
    file = (doc.path.parent / path).resolve() if path else doc.path
    if not file.exists():
      errors.append(f"{doc.name}:{line}: link {target}: no file {file}")
    elif anchor and file.suffix == ".md" and anchor not in anchors(file):
      errors.append(f"{doc.name}:{line}: link {target}: no heading #{anchor} in {file.name}")
  return errors


# ----------------------------------------------------------------------------------------
# The static checks: one test per document.


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
  for line, text in spans(doc):
    errors += [f"{doc.name}:{line}: {e}" for e in check_span(text)]
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
  assert check_command("make no_such_target") and check_command("make test-all") == []
  assert check_command("launch/tpu_vm.sh --name x --no_such_option -- --config=a")
  assert check_span("kdjax.krr.predict") == [] and check_span("kdjax.krr.no_such_name")
  assert check_span("kdjax/no_such_file.py") and check_span("--config.no_such_key=1")
  assert check_span("no_such_file.py") and check_span("gram.py") == []
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
