"""The lm job with Hugging Face checkpoints: text_files, pretrained teacher/student, export."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from experiments import lm_kd_hf
from kdjax.data import text as text_lib
from kdjax.models import hf
from kdjax.models.gpt2 import GPT2LM
from kdjax.models.llama import LlamaLM
from kdjax.train import lm_job

REFERENCE = pathlib.Path(__file__).parents[1] / "models" / "hf_reference"


def _teacher_dir(tmp_path: pathlib.Path) -> pathlib.Path:
  """The reference llama checkpoint with the reference tokenizer (both vocab 320)."""
  target = tmp_path / "teacher"
  shutil.copytree(REFERENCE / "llama", target)
  for file in (REFERENCE / "tokenizer").iterdir():
    shutil.copy(file, target / file.name)
  return target


def _jsonl(path: pathlib.Path, records: list[dict]) -> str:
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_text_files_mask_prompts_and_read_txt(tmp_path):
  tok = text_lib.ByteTokenizer()
  train = _jsonl(tmp_path / "a.jsonl", [{"prompt": "Q:", "response": "yes"}, {"text": "hi"}])
  (tmp_path / "v.txt").write_text("txt")
  data = text_lib.load_text_files(train, tokenizer=tok, validation_files=str(tmp_path / "v.txt"))
  b, e = tok.bos_id, tok.eos_id
  expected = [b, *b"Q:", *b"yes", e, b, *b"hi", e]
  np.testing.assert_array_equal(data.train, expected)
  np.testing.assert_array_equal(
    data.train_mask, [0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1]
  )  # BOS and the prompt are never targets; the response, text and EOS are
  np.testing.assert_array_equal(data.validation, [b, *b"txt", e])
  packed = text_lib.pack(data.train, 4, pad_id=tok.pad_id, bos_id=b, loss_mask=data.train_mask)
  # targets are tokens 1.. of the stream: Q, :, y, e | s, EOS, BOS, h | i, EOS, PAD
  np.testing.assert_array_equal(packed["mask"], [[0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 0, 0]])
  bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"question": "?"}])
  with pytest.raises(ValueError, match=r"bad.jsonl:2: a record needs a string 'text'"):
    text_lib.load_text_files(bad, tokenizer=tok)
  with pytest.raises(ValueError, match="no files match"):
    text_lib.load_text_files(str(tmp_path / "*.none"), tokenizer=tok)


def test_init_from_teacher_layers_and_bad_indices(tmp_path):
  teacher, params = hf.from_pretrained(REFERENCE / "llama")
  student, student_params = hf.subset_layers(teacher, params, [1])
  assert student.num_layers == 1 and set(student_params) == set(params) - {"layers_1"}
  assert student_params["layers_0"] is params["layers_1"]
  assert student_params["embed_tokens"] is params["embed_tokens"]
  assert hf.parse_layers("every_other", 5) == [0, 2, 4]
  for spec in ("2", "1,0", "0,0", "", "x"):
    with pytest.raises(ValueError, match="config.student.init_from_teacher"):
      hf.parse_layers(spec, 2, key="config.student.init_from_teacher")
  config = lm_kd_hf.get_config(f"teacher={_teacher_dir(tmp_path)},layers=0+5")
  with pytest.raises(ValueError, match=r"init_from_teacher='0,5'.*out of range: \[5\]"):
    lm_job._pretrained(config, jax.sharding.Mesh(np.array(jax.devices()), ("data",)))


def test_llama_variant_of_the_pystdlib_config_builds_llama_models():
  from experiments import lm_kd_pystdlib
  from kdjax import models

  config = lm_kd_pystdlib.get_config("model=llama,runlocal")
  teacher = models.from_config(config.teacher.model)
  assert isinstance(teacher, LlamaLM) and teacher.max_len == config.dataset.seq_len
  assert models.from_config(config.student.model).num_layers == 1
  with pytest.raises(ValueError, match="model must be 'transformer_lm' or 'llama'"):
    lm_kd_pystdlib.get_config("model=bert")


def test_vocabulary_mismatch_points_to_cross_tokenizer_modes(tmp_path):
  config = lm_kd_hf.get_config(f"teacher={tmp_path}")
  built = {"teacher": LlamaLM(vocab_size=320), "student": GPT2LM(vocab_size=259)}
  with pytest.raises(ValueError, match="vocabulary mismatch.*cross-tokenizer modes"):
    lm_job.check_models(config, 259, built)
  built["student"] = LlamaLM(vocab_size=300)
  built["teacher"] = LlamaLM(vocab_size=300)
  with pytest.raises(ValueError, match="the tokenizer has 320 tokens, more than"):
    lm_job.check_models(config, 320, built)
  config.dtype = "float16"
  with pytest.raises(ValueError, match="config.dtype must be one of"):
    lm_job.validate(config)


@pytest.mark.slow
def test_hf_teacher_text_files_bf16_students_export(tmp_path):
  """A pretrained teacher, a student from its layer 1, prompt/response jsonl, bfloat16, the
  chunked KD loss; the exported students reload to the job's final parameters."""
  teacher = _teacher_dir(tmp_path)
  lines = [f"Line {i}: beautiful is better than ugly, explicit than implicit." for i in range(60)]
  train = _jsonl(
    tmp_path / "train.jsonl",
    [{"prompt": f"Q{i}:", "response": t} if i % 2 else {"text": t} for i, t in enumerate(lines)],
  )
  valid = _jsonl(tmp_path / "valid.jsonl", [{"text": t} for t in lines[:20]])
  config = lm_kd_hf.get_config(
    f"teacher={teacher},files={train},validation_files={valid},layers=1,dtype=bfloat16,"
    "methods=ce+token_kd,runlocal"
  )
  config.distill.chunked, config.distill.chunk_size = True, 64
  results = lm_job.run(config, str(tmp_path / "run"))
  for name in ("teacher", "ce", "token_kd"):
    assert np.isfinite(results[name]["eval_bits_per_byte"]), results
  for mode in ("ce", "token_kd"):
    export = tmp_path / "run" / "student_hf" / mode
    assert (export / "tokenizer.json").is_file()
    model, params = hf.from_pretrained(export)
    assert model.num_layers == 1 and params["embed_tokens"]["embedding"].dtype == "bfloat16"
    config_json = json.loads((export / "config.json").read_text())
    assert config_json["eos_token_id"] == 2 and config_json["model_type"] == "llama"
