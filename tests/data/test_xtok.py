"""Tokenizer-aware batches: the teacher's view of a student window, the aligned chunks,
and the offline student vocabulary (deterministic, byte-exact)."""

import numpy as np
import pytest

from kdjax.data import text as text_lib, xtok


class ToyTokenizer:
  """A student tokenizer of a few multi-byte pieces (ids 0-2 are PAD, EOS, BOS)."""

  pieces = [b"", b"", b"", b"de", b"f", b" foo", b"()", b":"]
  vocab_size, pad_id, eos_id, bos_id = 8, 0, 1, 2

  def token_byte_strings(self):
    return self.pieces


def test_teacher_view_of_a_window_and_its_chunks_by_hand():
  stream = np.array([2, 3, 4, 5, 6, 7, 1])  # BOS "de" "f" " foo" "()" ":" EOS
  packed = text_lib.pack(stream, 6, pad_id=0, bos_id=2)
  batches = xtok.CrossTokenBatches(
    packed,
    student_tokenizer=ToyTokenizer(),
    teacher_tokenizer=text_lib.ByteTokenizer(),
    teacher_len=8,
    batch_size=1,
    seed=0,
  )
  got = batches.view([0])
  np.testing.assert_array_equal(got["targets"][0], [3, 4, 5, 6, 7, 1])
  # The teacher's targets: "def foo():" EOS cut at 8 tokens; its inputs are shifted by one.
  np.testing.assert_array_equal(got["teacher_targets"][0], list(b"def foo("))
  np.testing.assert_array_equal(got["teacher_inputs"][0], [257] + list(b"def foo"))
  assert got["teacher_mask"][0].all()
  # Chunks: "de", "f", " foo"; "()" is split by the cut and dropped, ":" and EOS too.
  np.testing.assert_array_equal(got["student_chunks"][0], [0, 1, 2, -1, -1, -1])
  np.testing.assert_array_equal(got["teacher_chunks"][0], [0, 0, 1, 2, 2, 2, 2, -1])
  np.testing.assert_array_equal(got["chunk_mask"][0], [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(got["student_starts"][0, :3], [0, 1, 2])
  np.testing.assert_array_equal(got["teacher_starts"][0, :3], [0, 2, 3])
  with pytest.raises(ValueError, match="second tokenizer"):
    xtok.CrossTokenBatches(
      packed,
      student_tokenizer=ToyTokenizer(),
      teacher_tokenizer=None,
      teacher_len=8,
      batch_size=1,
      seed=0,
    )


def test_student_vocabulary_is_deterministic_byte_exact_and_batches_align(tmp_path):
  # A small vocabulary on 1 in 64 train files: seconds (the experiments use 1 in 8).
  one = xtok.train_student_tokenizer(str(tmp_path / "a.model"), vocab_size=400, every=64)
  two = xtok.train_student_tokenizer(str(tmp_path / "b.model"), vocab_size=400, every=64)
  pieces = lambda t: [(t._sp.id_to_piece(i), t._sp.get_score(i)) for i in range(t.vocab_size)]  # noqa: E731
  assert pieces(one) == pieces(two)  # (the files differ only in the recorded model_prefix)
  table = xtok.token_byte_strings(one)
  assert len(table) == one.vocab_size == 400 and table[4 + ord("a")] == b"a"
  text = "def f(x):\n\tif x  >  1:  # é\n        return 'ü'\n"
  assert b"".join(table[i] for i in one.encode(text)) == text.encode()
  del two
  # A window of real text: every kept chunk has the same bytes in both views.
  stream = np.concatenate([[one.bos_id], one.encode(text * 3), [one.eos_id]])
  packed = text_lib.pack(stream, 24, pad_id=one.pad_id, bos_id=one.bos_id)
  batches = xtok.CrossTokenBatches(
    packed,
    student_tokenizer=one,
    teacher_tokenizer=text_lib.ByteTokenizer(),
    teacher_len=40,
    batch_size=2,
    seed=0,
  )
  got = batches.batch(0)
  teacher_table = xtok.token_byte_strings(text_lib.ByteTokenizer())
  for row in range(2):
    count = int(got["chunk_mask"][row].sum())
    assert count > 3
    for c in range(count):
      s = got["targets"][row][got["student_chunks"][row] == c]
      t = got["teacher_targets"][row][got["teacher_chunks"][row] == c]
      assert b"".join(table[i] for i in s) == b"".join(teacher_table[i] for i in t)
      assert got["student_chunks"][row][got["student_starts"][row, c]] == c
      assert got["teacher_chunks"][row][got["teacher_starts"][row, c]] == c
    np.testing.assert_array_equal(got["teacher_inputs"][row, 1:], got["teacher_targets"][row, :-1])


@pytest.mark.parametrize("student_is_bpe", [True, False])
def test_two_hugging_face_tokenizers_align_byte_exactly(tmp_path, student_is_bpe):
  """Teacher and student from two Hugging Face tokenizer.json files (a byte-level BPE of
  320 tokens and the byte tokenizer's export), either way round: the token bytes rebuild
  the text and every kept chunk has the same bytes in both views."""
  import pathlib

  from kdjax.models import hf_tokenizer

  reference = pathlib.Path(__file__).parents[1] / "models" / "hf_reference" / "tokenizer"
  hf_tokenizer.byte_tokenizer_files(tmp_path)
  bpe, byte = hf_tokenizer.load_tokenizer(reference), hf_tokenizer.load_tokenizer(tmp_path)
  student, teacher = (bpe, byte) if student_is_bpe else (byte, bpe)
  text = "Beautiful is better than ugly.\nÜnïcode ✓ too. Sparse is better than dense.\n"
  for tok in (student, teacher):
    table = xtok.token_byte_strings(tok)
    assert b"".join(table[i] for i in tok.encode(text)) == text.encode()
  stream = np.concatenate([[student.bos_id], student.encode(text * 2), [student.eos_id]])
  packed = text_lib.pack(stream, 20, pad_id=student.pad_id, bos_id=student.bos_id)
  got = xtok.CrossTokenBatches(
    packed,
    student_tokenizer=student,
    teacher_tokenizer=teacher,
    teacher_len=48,
    batch_size=2,
    seed=0,
  ).batch(0)
  s_table, t_table = xtok.token_byte_strings(student), xtok.token_byte_strings(teacher)
  for row in range(2):
    count = int(got["chunk_mask"][row].sum())
    assert count >= 3
    for c in range(count):
      s = got["targets"][row][got["student_chunks"][row] == c]
      t = got["teacher_targets"][row][got["teacher_chunks"][row] == c]
      assert b"".join(s_table[i] for i in s) == b"".join(t_table[i] for i in t) != b""
