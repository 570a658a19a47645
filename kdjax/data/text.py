r"""Text for language models: tokenizers, corpora, packing and (seed, step) batches.

Corpora (:func:`load_text`):

* ``pystdlib`` (embedded, no download): the Python standard library's own ``.py``
  sources, found in ``sysconfig.get_paths()['stdlib']``. The file list is every ``*.py``
  below that directory, minus any path with a component in :data:`EXCLUDED_DIRS` (tests,
  installed third-party packages), sorted by relative POSIX path. A file belongs to the
  validation split when ``int(sha256(relative_path).hexdigest(), 16) % 100 < 5`` (about
  5% of the files), else to train; the split depends only on the path, so adding or
  removing a file never moves another one. The bytes *do* depend on the Python version:
  on CPython 3.11.7 the corpus is 734 files, 12,118,641 bytes (train 704 files,
  11,691,876 bytes; validation 30 files, 426,765 bytes); other versions give other
  (similar) counts, recorded in ``TextData.info``.
* ``tiny_shakespeare`` and ``lm1b`` (tensorflow-datasets, downloaded by tfds): their
  ``train`` split trains, ``validation`` (tiny_shakespeare) or ``test`` (lm1b) evaluates.
* ``text_files`` (:func:`load_text_files`): local ``.txt`` files (one document each) and
  ``.jsonl`` files (one document per line: ``{"text": ...}``, or ``{"prompt": ...,
  "response": ...}`` whose loss covers the response tokens and EOS only), from a train and an
  optional validation glob (without one, a document is validation when the sha256 of its
  text is ``< 5`` mod 100).

Tokenizers: :class:`ByteTokenizer` (UTF-8 bytes 0..255, then PAD=256, BOS=257, EOS=258)
and :class:`SentencePieceTokenizer` (a trained SentencePiece model; Kudo & Richardson
(2018), "SentencePiece"). Both report ``token_bytes``, the number of UTF-8 bytes each
token stands for, so that bits per byte are comparable across tokenizers:

.. math::
  \mathrm{bpb} = \frac{\sum_t m_t\,(-\ln p(y_t \mid y_{<t}))}{\ln 2\,\sum_t m_t\,
    \mathrm{bytes}(y_t)}

Packing (:func:`pack`): every document becomes ``BOS text EOS``; the documents are
concatenated into one stream and cut into windows of ``seq_len + 1`` tokens that do not
overlap (the last one is padded with PAD). A window gives ``inputs = w[:-1]``,
``targets = w[1:]`` and ``mask`` = target is neither PAD nor BOS (BOS always follows EOS:
nothing to learn). Attention runs across document boundaries inside a window, as in
GPT-2-style packing.

Batches (:class:`TokenBatches`): the batch of step ``s`` holds the windows
``kdjax.data.batch_indices(n, B, seed=seed, step=s)``, a function of ``(seed, step)``
only, sharded along the batch axis like the image batches of :class:`kdjax.data.Batches`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import sysconfig
from collections.abc import Iterable
from typing import Any, Protocol

import jax
import numpy as np

from kdjax.data.batches import (
  StepBatches,
  batch_indices as batch_indices,  # the name text.batch_indices stays
  check_batch_size,
  process_batch,
)

__all__ = [
  "ByteTokenizer",
  "SentencePieceTokenizer",
  "train_sentencepiece",
  "TextData",
  "TEXT_DATASETS",
  "EXCLUDED_DIRS",
  "pystdlib_files",
  "tfds_texts",
  "load_text",
  "load_text_files",
  "pack",
  "TokenBatches",
]

TEXT_DATASETS = ("pystdlib", "tiny_shakespeare", "lm1b", "text_files")
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})
_VALIDATION_PERCENT = 5
_TFDS_SPLITS = {"tiny_shakespeare": ("train", "validation"), "lm1b": ("train", "test")}


class Tokenizer(Protocol):
  """What the pipeline needs of a tokenizer."""

  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> np.ndarray: ...

  def decode(self, ids: Iterable[int]) -> str: ...

  def token_bytes(self) -> np.ndarray: ...


class ByteTokenizer:
  """UTF-8 bytes as tokens 0..255, then PAD=256, BOS=257, EOS=258 (vocab_size 259)."""

  vocab_size = 259
  pad_id, bos_id, eos_id = 256, 257, 258

  def encode(self, text: str | bytes) -> np.ndarray:
    """int32 byte values of ``text`` (a str is UTF-8 encoded)."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(raw, np.uint8).astype(np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of the byte tokens in ``ids`` (special tokens dropped, bad UTF-8 replaced)."""
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", "replace")

  def token_bytes(self) -> np.ndarray:
    """int32 [259]: 1 for each byte token, 0 for PAD/BOS/EOS."""
    return (np.arange(self.vocab_size) < 256).astype(np.int32)


class SentencePieceTokenizer:
  """A SentencePiece model trained by :func:`train_sentencepiece` (needs ``sentencepiece``).

  Args:
    model_path: the ``.model`` file.
  """

  def __init__(self, model_path: str):
    import sentencepiece as spm

    self.model_path = str(model_path)
    self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id, self.bos_id, self.eos_id = (
      int(self._sp.pad_id()),
      int(self._sp.bos_id()),
      int(self._sp.eos_id()),
    )
    if min(self.pad_id, self.bos_id, self.eos_id) < 0:
      raise ValueError(
        f"SentencePiece model {model_path} must define pad, bos and eos ids "
        "(train it with train_sentencepiece)"
      )

  def encode(self, text: str) -> np.ndarray:
    """int32 piece ids of ``text``."""
    return np.asarray(self._sp.encode(text), np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of ``ids`` (special tokens dropped)."""
    special = {self.pad_id, self.bos_id, self.eos_id}
    return self._sp.decode([int(i) for i in ids if int(i) not in special])

  def token_bytes(self) -> np.ndarray:
    """int32 [vocab]: UTF-8 bytes of each piece (the word marker counts as a space;
    control pieces 0; byte-fallback pieces 1)."""
    sizes = np.zeros(self.vocab_size, np.int32)
    for i in range(self.vocab_size):
      if self._sp.is_control(i) or self._sp.is_unknown(i):
        continue
      piece = self._sp.id_to_piece(i)
      sizes[i] = 1 if self._sp.is_byte(i) else len(piece.replace("\u2581", " ").encode())
    return sizes


def train_sentencepiece(
  texts: Iterable[str],
  model_prefix: str,
  *,
  vocab_size: int,
  model_type: str = "unigram",
  **options: Any,
) -> SentencePieceTokenizer:
  """Trains a SentencePiece model on ``texts`` (PAD=0, EOS=1, BOS=2, UNK=3, byte fallback).

  Writes ``model_prefix + '.model'`` and ``.vocab`` and returns the tokenizer. ``options``
  are further ``SentencePieceTrainer.train`` flags; they override the defaults
  ``hard_vocab_limit=False`` and ``character_coverage=1.0`` (``None``: sentencepiece's own).
  """
  import sentencepiece as spm

  options = {"hard_vocab_limit": False, "character_coverage": 1.0, **options}
  options = {key: value for key, value in options.items() if value is not None}
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_prefix=str(model_prefix),
    vocab_size=vocab_size,
    model_type=model_type,
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    byte_fallback=True,
    minloglevel=2,
    **options,
  )
  return SentencePieceTokenizer(str(model_prefix) + ".model")


@dataclasses.dataclass(frozen=True)
class TextData:
  """A train/validation text corpus as token streams.

  Attributes:
    name: the corpus name given to :func:`load_text`.
    train: int32 [n] train token stream (documents as ``BOS text EOS``, concatenated).
    validation: int32 [m] validation token stream.
    tokenizer: the tokenizer that made them.
    info: counts (files or documents, bytes per split; for pystdlib the Python version).
    train_mask, validation_mask: bool like ``train`` / ``validation``: which tokens are
      loss targets (None: all but PAD and BOS; text_files with prompts: responses only).
  """

  name: str
  train: np.ndarray
  validation: np.ndarray
  tokenizer: Tokenizer
  info: dict
  train_mask: np.ndarray | None = None
  validation_mask: np.ndarray | None = None

  @property
  def vocab_size(self) -> int:
    """The tokenizer's vocabulary size."""
    return self.tokenizer.vocab_size


def _is_validation(relative_path: str) -> bool:
  digest = hashlib.sha256(relative_path.encode("utf-8")).hexdigest()
  return int(digest, 16) % 100 < _VALIDATION_PERCENT


def pystdlib_files(root: str | None = None) -> list[tuple[str, str]]:
  """``(relative POSIX path, split)`` of the pystdlib corpus, sorted by path.

  Args:
    root: the directory to scan (default: ``sysconfig.get_paths()['stdlib']``).
  """
  root = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  files = []
  for path in root.rglob("*.py"):
    relative = path.relative_to(root)
    if EXCLUDED_DIRS.intersection(relative.parts[:-1]) or not path.is_file():
      continue
    name = relative.as_posix()
    files.append((name, "validation" if _is_validation(name) else "train"))
  return sorted(files)


def _stream(documents: Iterable[str | bytes], tokenizer: Tokenizer) -> np.ndarray:
  parts = []
  for doc in documents:
    parts += [[tokenizer.bos_id], tokenizer.encode(doc), [tokenizer.eos_id]]
  return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


@functools.lru_cache(maxsize=4)
def _pystdlib(root: str | None) -> tuple[np.ndarray, np.ndarray, dict]:
  import platform

  base = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  tokenizer = ByteTokenizer()
  texts = {"train": [], "validation": []}
  for name, split in pystdlib_files(root):
    texts[split].append((base / name).read_bytes())
  info = {"python_version": platform.python_version(), "root": str(base)}
  for split, docs in texts.items():
    info[f"{split}_files"] = len(docs)
    info[f"{split}_bytes"] = sum(len(d) for d in docs)
  train, validation = _stream(texts["train"], tokenizer), _stream(texts["validation"], tokenizer)
  train.setflags(write=False)
  validation.setflags(write=False)
  return train, validation, info


def tfds_texts(
  name: str, split: str, limit: int | None = None, data_dir: str | None = None
) -> list[str]:
  """The ``'text'`` of the first ``limit`` (None = all) examples of a tfds split."""
  import tensorflow_datasets as tfds

  ds = tfds.load(name, split=split, data_dir=data_dir)
  if limit is not None:
    ds = ds.take(limit)
  return [example["text"].decode("utf-8") for example in tfds.as_numpy(ds)]


def _read_documents(pattern: str) -> list[tuple[str, str]]:
  """``(prompt, text)`` documents of the .txt / .jsonl files matching ``pattern`` (sorted)."""
  import glob
  import json

  paths = sorted(glob.glob(pattern, recursive=True))
  if not paths:
    raise ValueError(f"no files match the glob {pattern!r}")
  documents = []
  for path in paths:
    if path.endswith(".txt"):
      documents.append(("", pathlib.Path(path).read_text(encoding="utf-8")))
      continue
    if not path.endswith(".jsonl"):
      raise ValueError(f"{path}: text_files reads .txt and .jsonl files only")
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
          documents.append(("", record["text"]))
        elif (
          isinstance(record, dict)
          and isinstance(record.get("prompt"), str)
          and isinstance(record.get("response"), str)
        ):
          documents.append((record["prompt"], record["response"]))
        else:
          raise ValueError(
            f"{path}:{number}: a record needs a string 'text', or 'prompt' and 'response'"
          )
  return documents


def _masked_stream(
  documents: list[tuple[str, str]], tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray]:
  """``BOS prompt text EOS`` per document; the mask is False on BOS and prompt tokens."""
  ids, mask = [], []
  for prompt, text in documents:
    p, t = tokenizer.encode(prompt) if prompt else np.zeros(0, np.int32), tokenizer.encode(text)
    ids += [[tokenizer.bos_id], p, t, [tokenizer.eos_id]]
    mask += [[False], np.zeros(len(p), bool), np.ones(len(t), bool), [True]]
  if not ids:
    return np.zeros(0, np.int32), np.zeros(0, bool)
  return np.concatenate(ids).astype(np.int32), np.concatenate(mask).astype(bool)


def load_text_files(
  files: str, *, tokenizer: Tokenizer, validation_files: str | None = None
) -> TextData:
  """Local .txt / .jsonl documents as a :class:`TextData` (see the module docstring).

  Args:
    files: glob of the train files (``**`` allowed).
    tokenizer: the tokenizer.
    validation_files: glob of the validation files (None or '': a 5% hash split of ``files``).

  Raises:
    ValueError: no matching file, an unreadable record (naming file and line), an empty split.
  """
  train_docs = _read_documents(files)
  if validation_files:
    valid_docs = _read_documents(validation_files)
  else:
    split = [_is_validation(prompt + text) for prompt, text in train_docs]
    valid_docs = [d for d, v in zip(train_docs, split) if v]
    train_docs = [d for d, v in zip(train_docs, split) if not v]
  for split_name, docs in (("train", train_docs), ("validation", valid_docs)):
    if not docs:
      raise ValueError(
        f"text_files: the {split_name} split of {files!r} is empty"
        + ("" if validation_files else " (set dataset.validation_files)")
      )
  train, train_mask = _masked_stream(train_docs, tokenizer)
  validation, validation_mask = _masked_stream(valid_docs, tokenizer)
  info = {
    "train_documents": len(train_docs),
    "validation_documents": len(valid_docs),
    "train_bytes": sum(len((p + t).encode("utf-8")) for p, t in train_docs),
    "validation_bytes": sum(len((p + t).encode("utf-8")) for p, t in valid_docs),
    "prompt_documents": sum(bool(p) for p, _ in train_docs + valid_docs),
  }
  return TextData("text_files", train, validation, tokenizer, info, train_mask, validation_mask)


def load_text(
  name: str,
  *,
  tokenizer: Tokenizer | None = None,
  data_dir: str | None = None,
  max_documents: int | None = None,
  root: str | None = None,
) -> TextData:
  """Loads a text corpus as train/validation token streams.

  Args:
    name: one of :data:`TEXT_DATASETS`.
    tokenizer: the tokenizer (default :class:`ByteTokenizer`; pystdlib is byte-level only).
    data_dir: tfds data directory (tfds corpora only).
    max_documents: keep only the first documents of each tfds split (None = all; tfds
      corpora only).
    root: pystdlib only: scan this directory instead of the running Python's stdlib.

  Raises:
    ValueError: unknown ``name``, a non-byte tokenizer for pystdlib, bad ``max_documents``,
      an argument that the corpus would ignore (``data_dir`` or ``max_documents`` for
      pystdlib, ``root`` for a tfds corpus), a ``root`` that is not a directory or whose
      train or validation split holds no file.
  """
  if name not in TEXT_DATASETS:
    raise ValueError(f"text dataset name must be one of {list(TEXT_DATASETS)}, got {name!r}")
  if max_documents is not None and max_documents < 1:
    raise ValueError(f"max_documents must be a positive int or None, got {max_documents!r}")
  if name == "text_files":
    raise ValueError("text_files: use load_text_files(files, tokenizer=...)")
  tokenizer = tokenizer or ByteTokenizer()
  if name == "pystdlib":
    for arg, value in (("data_dir", data_dir), ("max_documents", max_documents)):
      if value is not None:
        raise ValueError(
          f"{arg}={value!r} is for the tfds corpora {list(_TFDS_SPLITS)}: the pystdlib "
          "corpus is embedded and would ignore it"
        )
    if not isinstance(tokenizer, ByteTokenizer):
      raise ValueError(
        "the pystdlib corpus is byte-level: tokenizer must be a ByteTokenizer, "
        f"got {type(tokenizer).__name__}"
      )
    if root is not None and not os.path.isdir(root):
      raise ValueError(f"root={os.fspath(root)!r} is not a directory (the pystdlib corpus)")
    train, validation, info = _pystdlib(root and os.fspath(root))
    for split in ("train", "validation"):
      if not info[f"{split}_files"]:
        raise ValueError(
          f"root={info['root']!r} gives a pystdlib corpus without {split} files "
          f"({info['train_files'] + info['validation_files']} .py files outside "
          f"{sorted(EXCLUDED_DIRS)}; about {_VALIDATION_PERCENT}% of them are validation)"
        )
    return TextData(name, train, validation, tokenizer, dict(info))
  if root is not None:
    raise ValueError(
      f"root={os.fspath(root)!r} is for the pystdlib corpus: {name!r} comes from "
      "tensorflow-datasets and would ignore it (use data_dir)"
    )
  streams, info = {}, {}
  for split, tfds_split in zip(("train", "validation"), _TFDS_SPLITS[name]):
    texts = tfds_texts(name, tfds_split, max_documents, data_dir)
    streams[split] = _stream(texts, tokenizer)
    info[f"{split}_documents"] = len(texts)
    info[f"{split}_bytes"] = sum(len(t.encode("utf-8")) for t in texts)
  return TextData(name, streams["train"], streams["validation"], tokenizer, info)


def pack(
  stream: np.ndarray,
  seq_len: int,
  *,
  pad_id: int,
  bos_id: int,
  max_sequences: int | None = None,
  loss_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """Cuts a token stream into ``[n, seq_len]`` inputs, next-token targets and loss masks.

  Args:
    stream: int [N] tokens (documents as ``BOS text EOS``).
    seq_len: tokens per sequence (>= 1).
    pad_id: the padding token (fills the last window; masked out).
    bos_id: the beginning-of-document token (never a target: masked out).
    max_sequences: keep only the first windows (None = all).
    loss_mask: optional bool [N] like ``stream``: False marks tokens that are never targets
      (e.g. prompt tokens); ANDed into ``mask``.

  Returns:
    ``{'inputs': int32 [n, L], 'targets': int32 [n, L], 'mask': bool [n, L]}`` with
    ``inputs[i] = stream[i L : i L + L]`` and ``targets[i] = stream[i L + 1 : i L + L + 1]``
    (PAD beyond the end).

  Raises:
    ValueError: ``seq_len < 1`` or an empty stream.
  """
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  stream = np.asarray(stream, np.int32)
  if stream.size < 2:
    raise ValueError(f"the token stream must hold at least 2 tokens, got {stream.size}")
  n = -(-(stream.size - 1) // seq_len)
  if max_sequences is not None:
    n = min(n, max_sequences)
  padded = np.full(n * seq_len + 1, pad_id, np.int32)
  used = min(stream.size, padded.size)
  padded[:used] = stream[:used]
  inputs = padded[:-1].reshape(n, seq_len)
  targets = padded[1:].reshape(n, seq_len)
  mask = (targets != pad_id) & (targets != bos_id)
  if loss_mask is not None:
    allowed = np.zeros(n * seq_len + 1, bool)
    allowed[:used] = np.asarray(loss_mask, bool)[:used]
    mask &= allowed[1:].reshape(n, seq_len)
  return {"inputs": inputs, "targets": targets, "mask": mask}


class TokenBatches(StepBatches):
  """Batches of packed sequences by step: ``{'inputs', 'targets', 'mask'}`` of ``[B, L]``.

  Args:
    packed: the output of :func:`pack`.
    batch_size: global batch size B (<= the number of sequences; divisible by the number
      of processes, and by the devices of the sharded axis when ``sharding`` is given).
    seed: data-order seed.
    sharding: optional sharding of the global batch (e.g. ``NamedSharding(mesh,
      P('data'))``); None returns NumPy arrays.
  """

  def __init__(
    self,
    packed: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    sharding: jax.sharding.Sharding | None = None,
  ):
    self.packed = {k: np.asarray(v) for k, v in packed.items()}
    self.num_sequences = len(self.packed["inputs"])
    check_batch_size(self.num_sequences, batch_size, seed)
    self.batch_size, self.seed, self.sharding = batch_size, seed, sharding

  def batch(self, step: int) -> dict:
    """The global batch of ``step`` (this process's share, if multi-host)."""
    return process_batch(
      self.packed, self.batch_size, seed=self.seed, step=step, sharding=self.sharding
    )
