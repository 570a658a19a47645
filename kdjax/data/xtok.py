r"""Tokenizer-aware batches for cross-tokenizer distillation (the same text, two tokenizers).

* :func:`train_student_tokenizer`: a SentencePiece BPE (or unigram) vocabulary trained
  offline, deterministically (one thread), on the pystdlib corpus's train split, with
  identity normalisation, no dummy prefix, whitespace-only pieces and byte fallback, so
  that its tokens' bytes concatenate to exactly the text (checked on every document).
* :func:`token_byte_strings`: the bytes each token id stands for (b"" for control tokens).
* :class:`CrossTokenBatches`: the student's packed windows (:func:`kdjax.data.text.pack`)
  and, for each window, the teacher's tokens of the *same* target text, cut at
  ``teacher_len``, with the chunks on whose byte boundaries both tokenizations agree
  (:func:`kdjax.losses.aligned_chunks`).

The teacher view of a student window (``inputs = w[:-1]``, ``targets = w[1:]``): the
student targets are split at special tokens (BOS/EOS/PAD map to the teacher's own); each
run of ordinary tokens becomes its bytes, encoded by the teacher tokenizer. The teacher's
targets are those tokens, its first input is the teacher encoding's last token of ``w[0]``
(or the mapped special), and its mask is as in ``pack`` (neither PAD nor BOS). Chunks that
the ``teacher_len`` cut splits are dropped (chunk id -1 in both views).

Per window, ``chunk c`` gives: the student's target tokens in it (``student_chunks``), the
teacher's (``teacher_chunks``), and the position where it starts in each sequence
(``student_starts``, ``teacher_starts``): both models predict that chunk's first token
from the same text, which is where ULD compares their next-token distributions.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sysconfig

import numpy as np

from kdjax.data import text as text_lib
from kdjax.data.batches import batch_indices
from kdjax.losses.cross_tokenizer import aligned_chunks

__all__ = [
  "train_student_tokenizer",
  "token_byte_strings",
  "pystdlib_student_data",
  "CrossTokenBatches",
]


def _pystdlib_texts(split: str, root: str | None = None, every: int = 1) -> list[str]:
  base = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  names = [name for name, s in text_lib.pystdlib_files(root) if s == split][::every]
  return [(base / name).read_bytes().decode("utf-8") for name in names]


def train_student_tokenizer(
  model_path: str,
  *,
  vocab_size: int = 1024,
  model_type: str = "bpe",
  every: int = 8,
  root: str | None = None,
) -> text_lib.SentencePieceTokenizer:
  """Trains (or loads, when ``model_path`` exists) the student vocabulary.

  Trained on every ``every``-th file of the pystdlib train split (sorted by path), cut
  into pieces of at most 2,000 characters (SentencePiece skips longer sentences), with
  ``num_threads=1`` so that the same inputs give the same model. PAD=0, EOS=1, BOS=2,
  UNK=3, then the 256 byte-fallback pieces, then the learned pieces.

  Args:
    model_path: the ``.model`` file to write (or read).
    vocab_size: total pieces, specials and byte pieces included (> 260).
    model_type: ``'bpe'`` or ``'unigram'``.
    every: take one train file in ``every``.
    root: pystdlib root (default: this Python's stdlib).

  Raises:
    ValueError: a path not ending in ``.model``, or ``vocab_size <= 260``.
  """
  model_path = str(model_path)
  if not model_path.endswith(".model"):
    raise ValueError(f"model_path must end in .model, got {model_path!r}")
  if vocab_size <= 260:
    raise ValueError(f"vocab_size must exceed the 260 special and byte pieces, got {vocab_size}")
  if not os.path.exists(model_path):
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    texts = _pystdlib_texts("train", root, every)
    pieces = (t[i : i + 2000] for t in texts for i in range(0, len(t), 2000))
    return text_lib.train_sentencepiece(
      pieces,
      model_path[: -len(".model")],
      vocab_size=vocab_size,
      model_type=model_type,
      hard_vocab_limit=None,  # sentencepiece's default (True)
      character_coverage=0.9995,  # rarer characters go through byte pieces
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      split_by_whitespace=False,
      allow_whitespace_only_pieces=True,
      max_sentence_length=8192,
      max_sentencepiece_length=16,
      num_threads=1,
    )
  return text_lib.SentencePieceTokenizer(model_path)


def token_byte_strings(tokenizer) -> list[bytes]:
  """The bytes of every token id of ``tokenizer`` (b"" for PAD/BOS/EOS/UNK/control).

  Supports :class:`~kdjax.data.text.ByteTokenizer`,
  :class:`~kdjax.data.text.SentencePieceTokenizer` (the word marker is a space; byte
  pieces ``<0xNN>`` are that byte) and any tokenizer with a ``token_byte_strings()``
  method.
  """
  if hasattr(tokenizer, "token_byte_strings"):
    return list(tokenizer.token_byte_strings())
  if isinstance(tokenizer, text_lib.ByteTokenizer):
    return [bytes([i]) for i in range(256)] + [b""] * (tokenizer.vocab_size - 256)
  if isinstance(tokenizer, text_lib.SentencePieceTokenizer):
    sp = tokenizer._sp
    out = []
    for i in range(tokenizer.vocab_size):
      piece = sp.id_to_piece(i)
      if sp.is_control(i) or sp.is_unknown(i):
        out.append(b"")
      elif sp.is_byte(i):
        out.append(bytes([int(piece[3:5], 16)]))
      else:
        out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out
  raise ValueError(
    f"token_byte_strings: unsupported tokenizer {type(tokenizer).__name__} (give it a "
    "token_byte_strings() method)"
  )


@functools.lru_cache(maxsize=2)
def _encoded(model_path: str, root: str | None):
  tokenizer = text_lib.SentencePieceTokenizer(model_path)
  streams, info = {}, {}
  table = token_byte_strings(tokenizer)
  for split in ("train", "validation"):
    texts = _pystdlib_texts(split, root)
    ids = tokenizer._sp.encode(texts)
    for text, doc in zip(texts, ids):
      if b"".join(table[i] for i in doc) != text.encode("utf-8"):
        raise ValueError(
          f"tokenizer {model_path} does not reproduce the bytes of a {split} document"
        )
    parts = []
    for doc in ids:
      parts += [[tokenizer.bos_id], doc, [tokenizer.eos_id]]
    streams[split] = np.concatenate(parts).astype(np.int32)
    streams[split].setflags(write=False)
    info[f"{split}_files"] = len(texts)
    info[f"{split}_bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    info[f"{split}_tokens"] = int(sum(len(d) for d in ids))
  return streams["train"], streams["validation"], info


def pystdlib_student_data(
  tokenizer: text_lib.SentencePieceTokenizer, root: str | None = None
) -> text_lib.TextData:
  """The pystdlib corpus (the same files and split as the byte-level one) tokenized by a
  SentencePiece model whose tokens reproduce every document's bytes exactly."""
  train, validation, info = _encoded(tokenizer.model_path, root and os.fspath(root))
  return text_lib.TextData("pystdlib", train, validation, tokenizer, dict(info))


class CrossTokenBatches:
  """Student windows with the teacher's view of the same text and the aligned chunks.

  Args:
    packed: the student's :func:`~kdjax.data.text.pack` output (``[n, L]`` arrays).
    student_tokenizer: the student's tokenizer.
    teacher_tokenizer: the teacher's tokenizer (a second tokenizer is required).
    teacher_len: the teacher's sequence length (its views are cut or padded to it).
    batch_size: windows per batch.
    seed: data-order seed (the same windows as ``TokenBatches(packed, ...)`` per step).

  ``batch(step)`` and ``view(indices)`` return NumPy arrays: ``inputs``, ``targets``,
  ``mask`` ``[B, L]`` (student); ``teacher_inputs``, ``teacher_targets``,
  ``teacher_mask`` ``[B, teacher_len]``; ``student_chunks [B, L]`` and ``teacher_chunks
  [B, teacher_len]`` (chunk of each target token, -1 = none); ``student_starts``,
  ``teacher_starts`` ``[B, L]`` (position of the first target token of chunk ``c``; 0
  where unused) and ``chunk_mask [B, L]`` (chunk ``c`` exists). At most ``L`` chunks.

  Raises:
    ValueError: no teacher tokenizer, or ``teacher_len < 1``.
  """

  def __init__(
    self,
    packed: dict,
    *,
    student_tokenizer,
    teacher_tokenizer,
    teacher_len: int,
    batch_size: int,
    seed: int,
  ):
    if teacher_tokenizer is None or student_tokenizer is None:
      raise ValueError("cross-tokenizer batches need a second tokenizer (teacher_tokenizer)")
    if teacher_len < 1:
      raise ValueError(f"teacher_len must be >= 1, got {teacher_len}")
    self.packed = {k: np.asarray(v) for k, v in packed.items()}
    self.num_sequences = len(self.packed["inputs"])
    batch_indices(self.num_sequences, batch_size, seed=seed, step=0)  # validates batch_size
    self.batch_size, self.seed, self.teacher_len = batch_size, seed, teacher_len
    self.student, self.teacher = student_tokenizer, teacher_tokenizer
    self.student_bytes = token_byte_strings(student_tokenizer)
    self.teacher_bytes = token_byte_strings(teacher_tokenizer)
    s, t = student_tokenizer, teacher_tokenizer
    self.special = {s.pad_id: t.pad_id, s.bos_id: t.bos_id, s.eos_id: t.eos_id}

  def _encode_teacher(self, data: bytes) -> list[int]:
    if isinstance(self.teacher, text_lib.ByteTokenizer):
      return [int(i) for i in self.teacher.encode(data)]
    return [int(i) for i in self.teacher.encode(data.decode("utf-8"))]

  def _teacher_of(self, first: int, targets: np.ndarray):
    """Teacher (first input, targets) of one student window."""
    if int(first) in self.special:
      first_t = self.special[int(first)]
    else:
      first_t = self._encode_teacher(self.student_bytes[int(first)])[-1]
    out, run = [], []
    for token in targets.tolist():
      if token in self.special:
        if run:
          out += self._encode_teacher(b"".join(run))
          run = []
        out.append(self.special[token])
      else:
        run.append(self.student_bytes[token])
    if run:
      out += self._encode_teacher(b"".join(run))
    return first_t, out

  def view(self, indices) -> dict:
    """The batch of the windows ``indices``."""
    indices = np.asarray(indices)
    b, length, tl = len(indices), self.packed["inputs"].shape[1], self.teacher_len
    t = self.teacher
    out = {k: v[indices] for k, v in self.packed.items()}
    t_inputs = np.full((b, tl), t.pad_id, np.int32)
    t_targets = np.full((b, tl), t.pad_id, np.int32)
    s_chunks = np.full((b, length), -1, np.int32)
    t_chunks = np.full((b, tl), -1, np.int32)
    s_starts = np.zeros((b, length), np.int32)
    t_starts = np.zeros((b, length), np.int32)
    chunk_mask = np.zeros((b, length), bool)
    for row, w in enumerate(indices):
      targets = self.packed["targets"][w]
      first, teacher = self._teacher_of(self.packed["inputs"][w][0], targets)
      seq = np.asarray(teacher[:tl], np.int32)
      t_targets[row, : len(seq)] = seq
      t_inputs[row, 0] = first
      t_inputs[row, 1 : len(seq) + 1] = seq[: tl - 1]
      chunk_s, chunk_t, _ = aligned_chunks(
        [self.student_bytes[i] for i in targets.tolist()],
        [self.teacher_bytes[i] for i in teacher],
      )
      # Drop chunks the cut at teacher_len splits (and those beyond it).
      num = int(max(chunk_s.max(initial=-1), chunk_t.max(initial=-1))) + 1
      last_t = np.full(num, -1)
      np.maximum.at(last_t, chunk_t[chunk_t >= 0], np.flatnonzero(chunk_t >= 0))
      kept = (last_t >= 0) & (last_t < tl) & np.isin(np.arange(num), chunk_s)
      # Renumber the kept chunks 0 .. k-1 (at most L: each holds a student token).
      order = np.where(kept, np.cumsum(kept) - 1, -1)
      renumber = lambda c: np.where(c >= 0, order[np.maximum(c, 0)], -1)  # noqa: E731
      s_chunks[row] = renumber(chunk_s)
      t_chunks[row, : len(seq)] = renumber(chunk_t)[:tl]
      count = int(kept.sum())
      for chunks, starts in ((s_chunks[row], s_starts), (t_chunks[row], t_starts)):
        ids, first = np.unique(chunks, return_index=True)
        starts[row, ids[ids >= 0]] = first[ids >= 0]
      chunk_mask[row, :count] = True
    out.update(
      teacher_inputs=t_inputs,
      teacher_targets=t_targets,
      teacher_mask=(t_targets != t.pad_id) & (t_targets != t.bos_id),
      student_chunks=s_chunks,
      teacher_chunks=t_chunks,
      student_starts=s_starts,
      teacher_starts=t_starts,
      chunk_mask=chunk_mask,
    )
    return out

  def batch(self, step: int) -> dict:
    """The batch of ``step``: the windows of ``batch_indices(n, B, seed=seed, step=step)``."""
    return self.view(batch_indices(self.num_sequences, self.batch_size, seed=self.seed, step=step))
