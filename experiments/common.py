"""What the ``experiments/*.py`` configs share (big_vision style): ``parse_arg``.

``parse_arg`` reads the ``:arg`` of ``--config=experiments/x.py:arg``: comma-separated
items, each ``key=value`` or a bare word. A bare word that names a boolean key sets it
True (``runlocal``); any other bare word fills the next non-boolean key in the order the
defaults are given (``kip_cifar10.py:10,conv`` sets ``per_class=10, kernel='conv'``).
Values are typed like their defaults.
"""
from __future__ import annotations

from typing import Any, Mapping

import ml_collections

_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number",
               str: "a string"}


def _convert(key: str, text: str, default: Any, meaning: str | None) -> Any:
  """``text`` as the type of ``default``; a ValueError says what ``key`` means otherwise."""
  try:
    if isinstance(default, bool):
      lowered = text.lower()
      if lowered in ("1", "true", "yes", ""):
        return True
      if lowered in ("0", "false", "no"):
        return False
      raise ValueError(text)
    return type(default)(text)
  except ValueError:
    what = f"{key} ({meaning})" if meaning else key
    kind = _TYPE_NAMES.get(type(default), type(default).__name__)
    raise ValueError(f"config arg {text!r}: {what} must be {kind} such as "
                     f"{default!r}") from None


def parse_arg(arg: str | None, *, help: Mapping[str, str] | None = None,  # pylint: disable=redefined-builtin
              **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a config ``arg`` into a ConfigDict typed like ``defaults``.

  Args:
    arg: the text after ``:`` in ``--config=experiments/x.py:arg`` (None or '' gives the
      defaults), e.g. ``'runlocal,seed=3'`` or ``'10,conv'``.
    help: optional meaning of each key, quoted in error messages
      (``{'per_class': 'images per class'}``).
    **defaults: every accepted key with its default value (bool, int, float or str).

  Returns:
    A ConfigDict with one entry per key of ``defaults``.

  Raises:
    ValueError: an unknown key, a value that does not parse as its default's type, or
      more bare words than non-boolean keys; the message says what the key means and
      its valid form.
  """
  help = dict(help or {})
  unknown_help = set(help) - set(defaults)
  if unknown_help:
    raise ValueError(f"help names keys without defaults: {sorted(unknown_help)}")
  values = dict(defaults)
  positional = [k for k, v in defaults.items() if not isinstance(v, bool)]
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, has_value, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not has_value:
      if isinstance(defaults.get(key), bool):
        text = ""
      elif positional:
        key, text = positional[0], item
      else:
        raise ValueError(f"config arg {item!r} is not one of the keys {sorted(defaults)}")
    if key not in defaults:
      raise ValueError(f"unknown config arg {key!r}; known: {sorted(defaults)}")
    if key in positional:
      positional.remove(key)
    values[key] = _convert(key, text, defaults[key], help.get(key))
  return ml_collections.ConfigDict(values)
