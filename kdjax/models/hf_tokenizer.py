"""Hugging Face ``tokenizer.json`` files in and out (the ``tokenizers`` library, imported lazily).

* :func:`load_tokenizer` reads ``tokenizer.json`` as an :class:`HFTokenizer`, which
  implements :class:`kdjax.data.text.Tokenizer`, including ``token_bytes`` (so bits per byte
  compare with the byte-level models).
* :func:`byte_tokenizer_files` writes a ``tokenizer.json`` equivalent to
  :class:`kdjax.data.text.ByteTokenizer`, so byte-level kdjax models export with a tokenizer
  transformers reads.

:mod:`kdjax.models.hf` re-exports these names.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["HFTokenizer", "load_tokenizer", "byte_tokenizer_files"]

# the model's config.json (special token ids), kdjax.models.hf.CONFIG_NAME
_CONFIG_NAME = "config.json"


def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's byte <-> printable character map: {character: byte}."""
  printable = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
  )
  chars = dict((b, b) for b in printable)
  extra = 0
  for b in range(256):
    if b not in chars:
      chars[b] = 256 + extra
      extra += 1
  return {chr(c): b for b, c in chars.items()}


def _uses(component: Any, kind: str) -> bool:
  if not isinstance(component, dict):
    return False
  if component.get("type") == kind:
    return True
  return any(
    _uses(c, kind) for key in ("decoders", "pretokenizers") for c in component.get(key) or ()
  )


class HFTokenizer:
  """A ``tokenizer.json`` (``tokenizers`` library) as a :class:`kdjax.data.text.Tokenizer`.

  Special ids come from ``tokenizer_config.json`` (``bos_token``, ``eos_token``,
  ``pad_token``) or ``config.json`` (``*_token_id``). A tokenizer without BOS uses EOS as the
  document separator (GPT-2's ``<|endoftext|>``); without PAD, PAD is EOS (padding targets
  are masked, so are the EOS targets then).

  Attributes:
    vocab_size: ids ``0 .. vocab_size - 1`` (added tokens included).
    pad_id, bos_id, eos_id: special ids.
    directory: where tokenizer.json was read.
  """

  def __init__(self, path: str | os.PathLike):
    import tokenizers

    self.directory = pathlib.Path(path)
    file = self.directory / "tokenizer.json"
    if not file.is_file():
      raise ValueError(f"{file} does not exist (only the fast tokenizer.json format is read)")
    try:
      self._tok = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001 - the Rust error, reported as a ValueError
      raise ValueError(f"{file} is not a valid tokenizer.json: {e}") from None
    self._spec = json.loads(file.read_text())
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    ids = {}
    config_file = self.directory / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    model_config = (
      json.loads((self.directory / _CONFIG_NAME).read_text())
      if (self.directory / _CONFIG_NAME).is_file()
      else {}
    )
    for role in ("bos", "eos", "pad"):
      token = tok_config.get(f"{role}_token")
      if isinstance(token, dict):
        token = token.get("content")
      token_id = self._tok.token_to_id(token) if isinstance(token, str) else None
      if token_id is None:
        value = model_config.get(f"{role}_token_id")
        token_id = value[0] if isinstance(value, list) else value
      ids[role] = token_id
    if ids["eos"] is None:
      raise ValueError(
        f"{self.directory}: no eos token (tokenizer_config.json eos_token or config.json "
        "eos_token_id)"
      )
    self.eos_id = int(ids["eos"])
    self.bos_id = int(ids["bos"] if ids["bos"] is not None else self.eos_id)
    self.pad_id = int(ids["pad"] if ids["pad"] is not None else self.eos_id)
    self._special = {
      int(t["id"]) for t in self._spec.get("added_tokens", ()) if t.get("special", False)
    } | {self.bos_id, self.eos_id, self.pad_id}

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of ``text`` without special tokens."""
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of ``ids`` (special tokens dropped)."""
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def token_byte_strings(self) -> list[bytes]:
    """The bytes each token id stands for: ``b""`` for special and unused ids; byte-level
    BPE characters mapped back to their bytes (GPT-2's alphabet); ``<0xNN>`` byte pieces
    that byte; otherwise the piece's UTF-8 with SentencePiece's ``▁`` as a space. Used by
    the cross-tokenizer batches (:func:`kdjax.data.xtok.token_byte_strings`)."""
    byte_level = _uses(self._spec.get("decoder"), "ByteLevel") or _uses(
      self._spec.get("pre_tokenizer"), "ByteLevel"
    )
    alphabet = _byte_level_alphabet()
    out = []
    for i in range(self.vocab_size):
      piece = None if i in self._special else self._tok.id_to_token(i)
      if piece is None:
        out.append(b"")
      elif byte_level and all(c in alphabet for c in piece):
        out.append(bytes(alphabet[c] for c in piece))
      elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
        out.append(bytes([int(piece[3:5], 16)]))
      else:
        out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out

  def token_bytes(self) -> np.ndarray:
    """int32 [vocab]: how many UTF-8 bytes each token stands for (special tokens 0), the
    lengths of :meth:`token_byte_strings`."""
    return np.asarray([len(b) for b in self.token_byte_strings()], np.int32)

  def save(self, path: str | os.PathLike) -> list[str]:
    """Copies tokenizer.json (and tokenizer_config.json, if any) into ``path``."""
    directory = pathlib.Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
      source = self.directory / name
      if source.is_file():
        (directory / name).write_bytes(source.read_bytes())
        written.append(name)
    return written


def load_tokenizer(path: str | os.PathLike, *, vocab_size: int | None = None) -> HFTokenizer:
  """Reads ``path/tokenizer.json`` as an :class:`HFTokenizer`.

  Args:
    path: a checkpoint or tokenizer directory.
    vocab_size: the model's embedding rows, if known: a larger tokenizer is an error.

  Raises:
    ValueError: no or an invalid tokenizer.json, no EOS token, or more tokens than
      ``vocab_size`` (naming both).
  """
  tokenizer = HFTokenizer(path)
  if vocab_size is not None and tokenizer.vocab_size > vocab_size:
    raise ValueError(
      f"{pathlib.Path(path) / 'tokenizer.json'} has {tokenizer.vocab_size} tokens, more than "
      f"the model's embedding (vocab_size={vocab_size})"
    )
  return tokenizer


def byte_tokenizer_files(path: str | os.PathLike) -> list[str]:
  """Writes ``tokenizer.json`` + ``tokenizer_config.json`` equivalent to
  :class:`kdjax.data.text.ByteTokenizer` (bytes 0..255, ``<pad>``=256, ``<bos>``=257,
  ``<eos>``=258) so that byte-level kdjax models export with a tokenizer transformers reads.
  """
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers

  directory = pathlib.Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  vocab = dict(_byte_level_alphabet())
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
  tok.save(str(directory / "tokenizer.json"))
  config = {
    "pad_token": "<pad>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "tokenizer_class": "PreTrainedTokenizerFast",
    "kdjax_byte_tokenizer": True,
  }
  (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
  return ["tokenizer.json", "tokenizer_config.json"]
