"""Writes the tiny Hugging Face reference checkpoints of tests/models/test_hf.py.

Runs ONLY in a separate venv with torch and transformers (they are not kdjax requirements):

  python3.11 -m venv /tmp/hfvenv
  /tmp/hfvenv/bin/pip install torch==2.13.0   # the CPU wheel
  /tmp/hfvenv/bin/pip install transformers safetensors tokenizers numpy
  /tmp/hfvenv/bin/python tests/models/hf_reference/generate.py

It writes, next to this file:

* ``tokenizer/tokenizer.json``: a byte-level BPE (vocab 320, <|pad|>=0, <|bos|>=1,
  <|eos|>=2) trained with ``tokenizers`` on the Zen of Python;
* ``llama/``: LlamaForCausalLM with GQA (4 query heads, 2 key/value heads), an explicit
  ``head_dim`` (24, not hidden/heads = 16) and ``llama3`` rope scaling whose three
  frequency bands are all populated; config.json in the Hub's legacy form (``rope_theta``,
  ``rope_scaling``), and ``config_rope_parameters.json`` as transformers 5 writes it;
* ``qwen2/``: Qwen2ForCausalLM with tied embeddings, q/k/v biases, ``linear`` rope scaling
  (factor 2) and weights sharded into several files (``model.safetensors.index.json``);
* ``gpt2/``: GPT2LMHeadModel;
* ``llama_bias/``: LlamaForCausalLM with ``attention_bias`` (q, k, v and o biases), tied
  embeddings, no GQA, default rope;
* ``logits.npz``: ``tokens`` int32 [2, 16] and ``logits_<family>`` float32 [2, 16, vocab]
  computed by transformers in float32 (eager attention);
* ``PROVENANCE.json``: versions and this command.

Every parameter is drawn anew (weights N(0, 0.15^2), biases N(0, 0.1^2), norm gains
1 + N(0, 0.1^2)) so that biases and norm gains are tested, and attention is far from uniform.

``--check-export DIR``: loads DIR with ``AutoModelForCausalLM``, runs it on
``DIR/check_tokens.npy`` and compares with ``DIR/check_logits.npy`` (written by the slow test
of tests/models/test_hf.py); prints the max-abs difference, exits 1 above 1e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import torch
import transformers

HERE = pathlib.Path(__file__).resolve().parent
VOCAB = 320
TOKENS_SHAPE = (2, 16)
SEED = 0


def train_tokenizer(out: pathlib.Path) -> None:
  import codecs
  import contextlib
  import io

  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  with contextlib.redirect_stdout(io.StringIO()):
    import this
  zen = codecs.decode(this.s, "rot13")
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=VOCAB,
    special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([zen] * 4, trainer)
  out.mkdir(parents=True, exist_ok=True)
  tok.save(str(out / "tokenizer.json"))
  (out / "tokenizer_config.json").write_text(
    json.dumps({"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}, indent=2)
    + "\n"
  )


def randomize(model: torch.nn.Module, seed: int) -> None:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
      if "norm" in name or ".ln_" in name or name.startswith("transformer.ln_f"):
        p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
      elif name.endswith("bias"):
        p.copy_(0.1 * noise)
      else:
        p.copy_(0.15 * noise)


def legacy_config(path: pathlib.Path, rope_scaling: dict | None) -> None:
  """Rewrites config.json in the Hub's legacy form (rope_theta + rope_scaling)."""
  config = json.loads((path / "config.json").read_text())
  rope = config.pop("rope_parameters", None)
  if rope is not None:
    (path / "config_rope_parameters.json").write_text(
      json.dumps({**config, "rope_parameters": rope}, indent=2) + "\n"
    )
    config["rope_theta"] = rope["rope_theta"]
    config["rope_scaling"] = rope_scaling
  (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build(family: str) -> tuple[torch.nn.Module, dict | None]:
  if family == "llama":
    scaling = {
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 32,
    }
    config = transformers.LlamaConfig(
      vocab_size=VOCAB,
      hidden_size=64,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=24,
      max_position_embeddings=128,
      rms_norm_eps=1e-5,
      rope_parameters={"rope_theta": 500000.0, **scaling},
      tie_word_embeddings=False,
      bos_token_id=1,
      eos_token_id=2,
      pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(config), scaling
  if family == "qwen2":
    scaling = {"rope_type": "linear", "factor": 2.0}
    config = transformers.Qwen2Config(
      vocab_size=VOCAB,
      hidden_size=48,
      intermediate_size=80,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=128,
      rms_norm_eps=1e-6,
      rope_parameters={"rope_theta": 10000.0, **scaling},
      tie_word_embeddings=True,
      use_sliding_window=False,
      bos_token_id=1,
      eos_token_id=2,
      pad_token_id=0,
    )
    return transformers.Qwen2ForCausalLM(config), scaling
  if family == "llama_bias":
    config = transformers.LlamaConfig(
      vocab_size=VOCAB,
      hidden_size=32,
      intermediate_size=48,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=4,
      max_position_embeddings=128,
      attention_bias=True,
      tie_word_embeddings=True,
      bos_token_id=1,
      eos_token_id=2,
      pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(config), None
  if family == "gpt2":
    config = transformers.GPT2Config(
      vocab_size=VOCAB,
      n_positions=64,
      n_embd=32,
      n_layer=2,
      n_head=4,
      bos_token_id=1,
      eos_token_id=2,
    )
    return transformers.GPT2LMHeadModel(config), None
  raise ValueError(family)


def generate() -> None:
  torch.manual_seed(SEED)
  train_tokenizer(HERE / "tokenizer")
  tokens = np.random.default_rng(SEED).integers(0, VOCAB, TOKENS_SHAPE).astype(np.int32)
  arrays = {"tokens": tokens}
  for i, family in enumerate(("llama", "qwen2", "gpt2", "llama_bias")):
    model, scaling = build(family)
    model.config._attn_implementation = "eager"
    randomize(model, SEED + i)
    model.eval()
    out = HERE / family
    shutil.rmtree(out, ignore_errors=True)
    shard = {"qwen2": "40KB"}.get(family, "50MB")
    model.save_pretrained(out, max_shard_size=shard)
    if family != "gpt2":
      legacy_config(out, scaling)
    with torch.no_grad():
      logits = model(torch.tensor(tokens, dtype=torch.long)).logits
    arrays[f"logits_{family}"] = logits.float().numpy()
    # Check that the legacy config.json reloads to the same logits.
    again = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    with torch.no_grad():
      reloaded = again(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    assert np.abs(reloaded - arrays[f"logits_{family}"]).max() == 0, family
  np.savez_compressed(HERE / "logits.npz", **arrays)
  provenance = {
    "command": "python tests/models/hf_reference/generate.py",
    "python": sys.version.split()[0],
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "tokenizers": __import__("tokenizers").__version__,
    "safetensors": __import__("safetensors").__version__,
    "numpy": np.__version__,
    "seed": SEED,
  }
  (HERE / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
  print(json.dumps(provenance))


def check_export(directory: str, tolerance: float = 1e-5) -> int:
  path = pathlib.Path(directory)
  model = transformers.AutoModelForCausalLM.from_pretrained(
    path, attn_implementation="eager", dtype=torch.float32
  )
  model.eval()
  tokens = np.load(path / "check_tokens.npy")
  expected = np.load(path / "check_logits.npy")
  with torch.no_grad():
    logits = model(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()
  error = float(np.abs(logits - expected).max())
  print(json.dumps({"model_type": model.config.model_type, "max_abs_error": error}))
  return int(not error <= tolerance)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check-export", metavar="DIR", help="compare an export with its logits")
  args = parser.parse_args()
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  sys.exit(check_export(args.check_export) if args.check_export else generate())
