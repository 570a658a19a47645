"""Tests of kdjax.data.text: the pystdlib corpus, tokenizers, packing, batches, tfds mock data."""

import hashlib
import os
import sysconfig

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax.data import text

BYTES = text.ByteTokenizer()


def _fake_stdlib(tmp_path):
  files = {
    "a.py": "x = 1\n",
    "pkg/b.py": "def f():\n  return 'é'\n",
    "pkg/notes.txt": "no",
    "test/test_a.py": "skip",
    "pkg/tests/t.py": "skip",
    "site-packages/m.py": "skip",
    "z/c.py": "pass\n",
  }
  files.update({f"many/m{i}.py": f"# {i}\n" for i in range(60)})
  for name, content in files.items():
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
  return files


def test_pystdlib_file_list_split_and_stream_on_a_fake_root(tmp_path):
  files = _fake_stdlib(tmp_path)
  listed = text.pystdlib_files(str(tmp_path))
  expected = sorted(
    n
    for n in files
    if n.endswith(".py") and not n.startswith(("test/", "pkg/tests/", "site-packages/"))
  )
  assert [name for name, _ in listed] == expected
  for name, split in listed:
    is_valid = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 100 < 5
    assert split == ("validation" if is_valid else "train")
  assert {split for _, split in listed} == {"train", "validation"}
  data = text.load_text("pystdlib", root=str(tmp_path))
  train_docs = [(tmp_path / n).read_bytes() for n, s in listed if s == "train"]
  expected_stream = np.concatenate([[257, *np.frombuffer(d, np.uint8), 258] for d in train_docs])
  np.testing.assert_array_equal(data.train, expected_stream)
  assert data.info["train_bytes"] == sum(len(d) for d in train_docs)
  assert data.info["validation_files"] == sum(s == "validation" for _, s in listed)
  assert not data.train.flags.writeable


def test_real_pystdlib_corpus_counts_match_the_files():
  data = text.load_text("pystdlib")
  root = sysconfig.get_paths()["stdlib"]
  train_bytes = sum(
    os.path.getsize(os.path.join(root, n)) for n, s in text.pystdlib_files() if s == "train"
  )
  assert data.info["train_bytes"] == train_bytes > 5_000_000
  # One BOS and one EOS per file.
  assert data.train.size == train_bytes + 2 * data.info["train_files"]
  assert 0.01 < data.info["validation_bytes"] / data.info["train_bytes"] < 0.1
  assert data.vocab_size == 259 and data.train.max() <= 258


def test_byte_tokenizer_round_trip_and_byte_counts():
  s = "naïve → ok"
  ids = BYTES.encode(s)
  assert ids.dtype == np.int32 and len(ids) == len(s.encode())
  assert BYTES.decode(list(ids) + [256, 257, 258]) == s
  assert BYTES.token_bytes()[ids].sum() == len(s.encode())
  assert BYTES.token_bytes()[256:].sum() == 0


def test_pack_shifts_targets_masks_bos_and_padding():
  stream = np.array([257, 1, 2, 258, 257, 3, 4, 5, 258], np.int32)
  packed = text.pack(stream, 3, pad_id=256, bos_id=257)
  np.testing.assert_array_equal(packed["inputs"], [[257, 1, 2], [258, 257, 3], [4, 5, 258]])
  np.testing.assert_array_equal(packed["targets"], [[1, 2, 258], [257, 3, 4], [5, 258, 256]])
  np.testing.assert_array_equal(packed["mask"], [[1, 1, 1], [0, 1, 1], [1, 1, 0]])
  assert text.pack(stream, 3, pad_id=256, bos_id=257, max_sequences=2)["inputs"].shape == (2, 3)
  with pytest.raises(ValueError, match="seq_len"):
    text.pack(stream, 0, pad_id=256, bos_id=257)


def test_token_batches_depend_on_seed_and_step_only_and_shard_over_data():
  packed = text.pack(np.arange(4000) % 250, 16, pad_id=256, bos_id=257)
  a = text.TokenBatches(packed, batch_size=16, seed=3)
  b = text.TokenBatches(packed, batch_size=16, seed=3)
  index = text.batch_indices(len(packed["inputs"]), 16, seed=3, step=7)
  np.testing.assert_array_equal(a.batch(7)["targets"], packed["targets"][index])
  np.testing.assert_array_equal(a.batch(7)["inputs"], b.batch(7)["inputs"])
  assert not np.array_equal(a.batch(7)["inputs"], a.batch(8)["inputs"])
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = text.TokenBatches(
    packed, batch_size=16, seed=3, sharding=NamedSharding(mesh, P("data"))
  )
  batch = sharded.batch(7)
  assert batch["inputs"].sharding.spec == P("data")
  assert len(batch["inputs"].addressable_shards) == len(jax.devices())
  np.testing.assert_array_equal(np.asarray(batch["mask"]), a.batch(7)["mask"])
  steps = [s for s, _ in a.iterate(5, 2)]
  assert steps == [5, 6]
  with pytest.raises(ValueError, match="batch_size"):
    text.TokenBatches(packed, batch_size=10_000, seed=0)


@pytest.mark.parametrize("name", ["tiny_shakespeare", "lm1b"])
def test_tfds_text_datasets_on_mock_data(name):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=4):
    data = text.load_text(name, max_documents=3)
  assert data.info["train_documents"] == 3
  # Each document is BOS text EOS.
  assert (data.train == 257).sum() == 3 and (data.train == 258).sum() == 3
  assert data.train.size == data.info["train_bytes"] + 6
  assert data.validation.size > 0


def test_sentencepiece_tokenizer_trains_round_trips_and_counts_bytes(tmp_path):
  pytest.importorskip("sentencepiece")
  lines = [f"the {w} sat on the mat number {i}" for i in range(200) for w in ("cat", "dog")]
  tok = text.train_sentencepiece(lines, str(tmp_path / "sp"), vocab_size=300)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  s = "the cat sat on the mat number 17"
  ids = tok.encode(s)
  assert tok.decode(ids) == s and len(ids) < len(s)
  # The bytes of the pieces add up to the text (plus the word marker's leading space).
  assert tok.token_bytes()[ids].sum() == len(s.encode()) + 1
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=3):
    data = text.load_text("lm1b", tokenizer=tok)
  assert data.vocab_size == tok.vocab_size and data.train.max() < tok.vocab_size


def test_bad_arguments_raise_value_errors(tmp_path):
  with pytest.raises(ValueError, match="text dataset name"):
    text.load_text("wikitext")
  with pytest.raises(ValueError, match="max_documents"):
    text.load_text("lm1b", max_documents=0)
  with pytest.raises(ValueError, match="ByteTokenizer"):
    text.load_text("pystdlib", tokenizer=object())
  # Arguments that the corpus would ignore.
  for arg in ({"data_dir": "/data/tfds"}, {"max_documents": 3}):
    with pytest.raises(ValueError, match=f"^{next(iter(arg))}=.* pystdlib corpus is embedded"):
      text.load_text("pystdlib", **arg)
  with pytest.raises(ValueError, match=r"^root='.*' is for the pystdlib corpus: 'lm1b'"):
    text.load_text("lm1b", root=str(tmp_path))
  # A missing or empty root gave an empty corpus that failed later, in pack().
  missing = str(tmp_path / "missing")
  with pytest.raises(ValueError, match=rf"^root='{missing}' is not a directory"):
    text.load_text("pystdlib", root=missing)
  with pytest.raises(ValueError, match=rf"^root='{tmp_path}' .* without train files \(0 .py"):
    text.load_text("pystdlib", root=str(tmp_path))
  (tmp_path / "one").mkdir()
  (tmp_path / "one" / "b.py").write_text("pass\n")  # train: sha256 of its path % 100 = 37
  with pytest.raises(ValueError, match=r"without validation files \(1 .py files"):
    text.load_text("pystdlib", root=str(tmp_path / "one"))
