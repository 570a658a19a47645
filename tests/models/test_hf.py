"""Hugging Face checkpoints in and out (kdjax.models.hf, llama, gpt2, partitioning).

The references in hf_reference/ were written by transformers 5.25.0 (torch 2.13.0+cpu) in a
separate venv (hf_reference/generate.py): tiny random checkpoints and the float32 logits
transformers computes for them.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.models import hf, partitioning, sampling
from kdjax.models.transformer import init_cache

REFERENCE = pathlib.Path(__file__).parent / "hf_reference"
FAMILIES = ("llama", "qwen2", "gpt2", "llama_bias")


@functools.cache
def reference():
  return dict(np.load(REFERENCE / "logits.npz"))


@functools.cache
def loaded(family: str):
  return hf.from_pretrained(REFERENCE / family)


@functools.cache
def forward(model):
  return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family):
  model, params = loaded(family)
  ref = reference()
  logits = forward(model)(params, ref["tokens"])
  assert logits.dtype == jnp.float32 and logits.shape == ref[f"logits_{family}"].shape
  np.testing.assert_allclose(np.asarray(logits), ref[f"logits_{family}"], rtol=0, atol=1e-5)


def test_configs_read_as_expected():
  llama, _ = loaded("llama")
  assert (llama.num_heads, llama.num_kv_heads, llama.head_dim, llama.tie_embeddings) == (
    4,
    2,
    24,
    False,
  )
  assert dict(llama.rope_scaling)["rope_type"] == "llama3" and llama.rope_theta == 500000.0
  # transformers 5's rope_parameters form gives the same model.
  new_form = json.loads((REFERENCE / "llama" / "config_rope_parameters.json").read_text())
  assert "rope_scaling" not in new_form and hf.config_to_model(new_form) == llama
  qwen, qwen_params = loaded("qwen2")
  assert qwen.tie_embeddings and qwen.attention_bias and "lm_head" not in qwen_params
  assert dict(qwen.rope_scaling) == {"rope_type": "linear", "factor": 2.0}
  assert (REFERENCE / "qwen2" / hf.INDEX_FILE).is_file()
  qwen_new = json.loads((REFERENCE / "qwen2" / "config_rope_parameters.json").read_text())
  assert hf.config_to_model(qwen_new) == qwen
  biased, biased_params = loaded("llama_bias")  # llama's attention_bias: q, k, v and o
  assert biased.attention_bias and biased.output_bias and biased.tie_embeddings
  assert "bias" in biased_params["layers_0"]["o_proj"]
  # mistral without sliding window is the same decoder.
  mistral = {**new_form, "model_type": "mistral", "sliding_window": None}
  assert hf.config_to_model(mistral) == llama


def test_llama3_rope_frequencies_float64():
  """The three bands of Llama 3.1's rope scaling against a float64 transcription."""
  from kdjax.models.llama import rope_inverse_frequencies

  scaling = (
    ("factor", 8.0),
    ("high_freq_factor", 4.0),
    ("low_freq_factor", 1.0),
    ("original_max_position_embeddings", 32),
    ("rope_type", "llama3"),
  )
  got = rope_inverse_frequencies(24, 500000.0, scaling)
  base = 500000.0 ** -(np.arange(0, 24, 2) / 24)
  expected = []
  for w in base:
    wavelen = 2 * np.pi / w
    if wavelen < 32 / 4:
      expected.append(w)
    elif wavelen > 32 / 1:
      expected.append(w / 8)
    else:
      s = (32 / wavelen - 1) / (4 - 1)
      expected.append((1 - s) * w / 8 + s * w)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  bands = [2 * np.pi / w for w in base]
  assert min(bands) < 8 and max(bands) > 32 and any(8 <= b <= 32 for b in bands)


def test_greedy_generate_with_cache_equals_argmax_recompute():
  model, params = loaded("llama")  # GQA: the cache holds 2 key/value heads of 24
  prompts = reference()["tokens"][:, :6]
  lengths = np.array([6, 3])
  new = 5
  out = sampling.generate(
    model,
    {"params": params},
    prompts,
    lengths,
    rng=jax.random.PRNGKey(0),
    max_new_tokens=new,
    greedy=True,
  )
  assert init_cache(model, 2, 8)["layers"][0][0].shape == (2, 8, 2, 24)
  generated = np.asarray(out["tokens"])
  sequences = np.zeros((2, 6 + new), np.int32)  # right padding: causal, never seen
  for b, length in enumerate(lengths):
    sequences[b, : length + new] = np.concatenate([prompts[b, :length], generated[b]])
  logits = np.asarray(forward(model)(params, sequences[:, :-1]))
  for b, length in enumerate(lengths):
    np.testing.assert_array_equal(
      np.argmax(logits[b, length - 1 : length - 1 + new], -1), generated[b]
    )


def test_sharded_logits_equal_unsharded():
  mesh = partitioning.make_mesh(data=4, model=2)
  model, params = hf.from_pretrained(REFERENCE / "qwen2", mesh=mesh)
  spec = jax.sharding.PartitionSpec
  assert params["layers_0"]["q_proj"]["kernel"].sharding.spec == spec("data", "model")
  assert params["layers_0"]["q_proj"]["bias"].sharding.spec == spec("model")
  assert params["layers_0"]["o_proj"]["kernel"].sharding.spec == spec("model", "data")
  assert params["embed_tokens"]["embedding"].sharding.spec == spec("model", "data")
  ref = reference()
  sharded = jax.jit(lambda p, t: model.apply({"params": p}, t))(params, ref["tokens"])
  unsharded = forward(loaded("qwen2")[0])(loaded("qwen2")[1], ref["tokens"])
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(unsharded), rtol=0, atol=1e-5)
  # GPT-2's rules: placement only (the compiler makes any placement compute the same).
  _, gpt2 = hf.from_pretrained(REFERENCE / "gpt2", mesh=mesh)
  assert gpt2["h_0"]["mlp_c_fc"]["kernel"].sharding.spec == spec("data", "model")
  assert gpt2["h_0"]["attn_c_proj"]["kernel"].sharding.spec == spec("model", "data")
  assert gpt2["wpe"].sharding.spec == spec(None, "data")


def test_save_pretrained_round_trip(tmp_path):
  model, params = loaded("qwen2")
  files = hf.save_pretrained(model, params, tmp_path / "q", max_shard_size="60KB")
  assert hf.INDEX_FILE in files and len(files) > 3
  again, again_params = hf.from_pretrained(tmp_path / "q")
  assert again == model
  jax.tree.map(np.testing.assert_array_equal, again_params, params)
  config = json.loads((tmp_path / "q" / "config.json").read_text())
  assert config["model_type"] == "qwen2" and config["rope_scaling"]["rope_type"] == "linear"
  # One file below the limit; bfloat16 storage loads as bfloat16.
  gmodel, gparams = loaded("gpt2")
  assert hf.save_pretrained(gmodel, gparams, tmp_path / "g", dtype=jnp.bfloat16) == [
    "config.json",
    "model.safetensors",
  ]
  bf, bf_params = hf.from_pretrained(tmp_path / "g")
  assert bf.dtype == jnp.bfloat16 and bf_params["wte"]["embedding"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(
    np.asarray(bf_params["wpe"]), np.asarray(gparams["wpe"].astype(jnp.bfloat16))
  )


def test_tokenizer():
  tok = hf.load_tokenizer(REFERENCE / "tokenizer")
  assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (320, 0, 1, 2)
  text = "Beautiful is better than ugly.\nÜnïcode ✓ too."
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and tok.decode(ids) == text
  sizes = tok.token_bytes()
  assert sizes.shape == (320,) and sizes[:3].tolist() == [0, 0, 0]
  assert sizes[ids].sum() == len(text.encode("utf-8"))
  with pytest.raises(ValueError, match="more than the model's embedding"):
    hf.load_tokenizer(REFERENCE / "tokenizer", vocab_size=300)


def test_byte_tokenizer_export_equals_byte_tokenizer(tmp_path):
  from kdjax.data.text import ByteTokenizer

  hf.byte_tokenizer_files(tmp_path)
  exported, byte = hf.load_tokenizer(tmp_path), ByteTokenizer()
  text = "def f(x):\n\treturn 'héllo ✓'"
  assert (exported.vocab_size, exported.pad_id, exported.bos_id, exported.eos_id) == (
    259,
    256,
    257,
    258,
  )
  np.testing.assert_array_equal(exported.encode(text), byte.encode(text))
  np.testing.assert_array_equal(exported.token_bytes(), byte.token_bytes())
  assert exported.decode(byte.encode(text)) == text


def _copy(family: str, tmp_path: pathlib.Path) -> pathlib.Path:
  target = tmp_path / family
  shutil.copytree(REFERENCE / family, target)
  return target


def test_bad_checkpoints(tmp_path):
  with pytest.raises(ValueError, match="config.json does not exist"):
    hf.from_pretrained(REFERENCE / "tokenizer")
  gpt2 = _copy("gpt2", tmp_path)
  config = json.loads((gpt2 / "config.json").read_text())

  def expect(match, **changes):
    (gpt2 / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(ValueError, match=match):
      hf.from_pretrained(gpt2)

  expect(r"model_type 'bert' is not supported; supported: \['llama'", model_type="bert")
  expect(r"transformer.wte.weight.*has shape \[320, 32\].*implies \[321, 32\]", vocab_size=321)
  expect(r"missing tensors \['transformer.h.2", n_layer=3)
  expect(r"unexpected tensors \['transformer.h.1", n_layer=1)
  (gpt2 / "config.json").write_text(json.dumps(config))
  weights = (gpt2 / "model.safetensors").read_bytes()
  (gpt2 / "model.safetensors").write_bytes(weights[:-100])
  with pytest.raises(ValueError, match="corrupt safetensors file.*data_offsets"):
    hf.from_pretrained(gpt2)
  (gpt2 / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + weights[8:])
  with pytest.raises(ValueError, match="corrupt safetensors file.*header length"):
    hf.from_pretrained(gpt2)
  (gpt2 / "model.safetensors").write_bytes(weights[:8] + b"\xff" * 20 + weights[28:])
  with pytest.raises(ValueError, match="corrupt safetensors file.*not JSON"):
    hf.from_pretrained(gpt2)
  (gpt2 / "model.safetensors").unlink()
  with pytest.raises(ValueError, match="no weights in .*model.safetensors"):
    hf.from_pretrained(gpt2)
  qwen = _copy("qwen2", tmp_path)
  (qwen / "model-00002-of-00006.safetensors").unlink()
  with pytest.raises(ValueError, match="model-00002-of-00006.safetensors does not exist"):
    hf.from_pretrained(qwen)
  llama = json.loads((REFERENCE / "llama" / "config.json").read_text())
  with pytest.raises(ValueError, match="rope scaling type 'yarn'"):
    hf.config_to_model({**llama, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
  with pytest.raises(ValueError, match="sliding_window=64"):
    hf.config_to_model({**llama, "model_type": "mistral", "sliding_window": 64})


@pytest.mark.slow
def test_export_loads_in_transformers(tmp_path):
  """What save_pretrained writes, transformers loads to the same logits (needs torch and
  transformers in this interpreter, or KDJAX_TORCH_PYTHON naming a python that has them)."""
  python = os.environ.get("KDJAX_TORCH_PYTHON")
  if python is None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    python = sys.executable
  tokens = reference()["tokens"]
  for family in FAMILIES:
    model, params = loaded(family)
    out = tmp_path / family
    hf.save_pretrained(model, params, out, max_shard_size="60KB")
    np.save(out / "check_tokens.npy", tokens)
    np.save(out / "check_logits.npy", np.asarray(forward(model)(params, tokens)))
    result = subprocess.run(
      [python, str(REFERENCE / "generate.py"), "--check-export", str(out)],
      capture_output=True,
      text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
