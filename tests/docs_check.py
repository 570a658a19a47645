"""The parser and the checks behind tests/test_docs.py (see its docstring for what is
checked): documents, code blocks, spans, commands, paths, dotted names, config keys, links."""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import pathlib
import re
import shlex

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
PACKAGES = ("kdjax", "launch", "benchmarks", "experiments")  # importable from the repo root
PATH_ROOTS = ("kdjax", "tests", "experiments", "launch", "benchmarks", "colabs", "docs", ".ci")
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
PYTHON_LANGS = ("python", "py")
# absl's own flags, accepted by every absl program.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "logtostderr"}
# Flags whose value is `key=value,...` overrides of a config (the config they apply to).
OVERRIDE_FLAGS = {
  ("benchmarks.distill_table", "overrides"): "rfad_mnist5k",
  ("benchmarks.distill_table", "kip_overrides"): "kip_mnist5k",
}
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


def span_dirs(doc: Doc) -> dict[int, frozenset[str]]:
  """The repository directories named around each line: those of the path spans of its table
  row, or else of its paragraph (``kdjax/theory/`` for ``job.py``, ``arguments.py``)."""
  lines = doc.prose.split("\n")
  units, start = [], 0  # [first, last] line numbers of each table row / paragraph
  for i, line in enumerate(lines + [""], start=1):
    if line.lstrip().startswith("|"):
      if start:
        units.append((start, i - 1))
      units.append((i, i))
      start = 0
    elif not line.strip():
      if start:
        units.append((start, i - 1))
      start = 0
    elif not start:
      start = i
  named = {}
  for line, text in spans(doc):
    if text.startswith(tuple(r + "/" for r in PATH_ROOTS)) and not _is_placeholder(text):
      path = text.split()[0].split(":")[0]
      named.setdefault(line, set()).add(
        path.rstrip("/") if path.endswith("/") else str(pathlib.PurePosixPath(path).parent)
      )
  dirs = {}
  for first, last in units:
    found = frozenset().union(*(named.get(i, ()) for i in range(first, last + 1)))
    dirs.update({i: found for i in range(first, last + 1)})
  return dirs


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
    if path.stem in ("__init__", "common", "distill_base"):
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
    elif (module, name) in OVERRIDE_FLAGS and has_value:
      for item in value.split(","):
        stem, key = _override_config(OVERRIDE_FLAGS[module, name], item.partition("=")[0])
        error = check_key(load_config(stem, "")[0], key)
        errors += [f"--{name}={value}: experiments/{stem}.py {error}"] if error else []
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


def _override_config(stem: str, key: str) -> tuple[str, str]:
  """The config an override ``[METHOD:]key`` of ``benchmarks.distill_table`` applies to:
  ``METHOD_mnist5k`` for a prefixed one, ``BLOCK_mnist5k`` for a key in a method's block
  (``dm.width``), else ``stem``; and the key without its prefix."""
  method, _, key = key.rpartition(":")
  block = key.split(".")[0]
  if method:
    return f"{method}_mnist5k", key
  if "." in key and (REPO / "experiments" / f"{block}_mnist5k.py").is_file():
    return f"{block}_mnist5k", key
  return stem, key


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


def check_span(text: str, dirs: frozenset[str] = frozenset()) -> list[str]:
  """An inline code span of prose: a command, a path, a dotted name or a config key. A bare
  file name must be in one of ``dirs`` (the directories its row or paragraph names) when
  there are any, else anywhere in the repository."""
  if re.match(r"^(\.venv/bin/)?python3?(\.\d+)? |^make |^PYTHONPATH=|^CI=", text):
    return check_command(text)
  if m := re.fullmatch(r"(--)?config\.([a-z_]\w*(?:\.\w+)*)(=.*)?", text):
    key = m.group(2)
    if key in ("json", "key") or _is_placeholder(key):
      return []
    return [] if key in all_config_keys() else [f"{text}: no config in experiments/ has {key!r}"]
  if re.fullmatch(r"[\w-]+\.(py|ipynb|sh)", text) and not _is_placeholder(text):  # `gram.py`
    if dirs:
      found = any((REPO / d / text).is_file() for d in dirs)
      return [] if found else [f"no file {text} in {', '.join(sorted(dirs))}"]
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
