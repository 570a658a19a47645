"""flax linen models for KD: MLP, dataset-distillation ConvNet, CIFAR ResNets, small Transformer LM,
Llama-style and GPT-2 decoders (Hugging Face checkpoints in and out: ``kdjax.models.hf``), and
the time-conditioned TimeMLP / UNet of diffusion distillation.

Every model is called as ``model.apply(variables, inputs, train=bool)`` and returns logits
with the classes (or vocabulary) on the last axis. ``create(name, **kwargs)`` builds a
model from a config entry such as ``ConfigDict(name='resnet', depth=8, ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from kdjax.models import sampling
from kdjax.models.convnet import ConvNet
from kdjax.models.diffusion import TimeMLP, UNet
from kdjax.models.gpt2 import GPT2LM
from kdjax.models.llama import LlamaLM
from kdjax.models.mlp import MLP
from kdjax.models.resnet import BasicBlock, CifarResNet, resnet8x4, resnet32x4
from kdjax.models.transformer import DecoderBlock, TransformerLM, init_cache

MODELS = {
  "mlp": MLP,
  "convnet": ConvNet,
  "resnet": CifarResNet,
  "resnet8x4": lambda **kw: CifarResNet(**{"depth": 8, "widths": (32, 64, 128, 256), **kw}),
  "resnet32x4": lambda **kw: CifarResNet(**{"depth": 32, "widths": (32, 64, 128, 256), **kw}),
  "transformer_lm": TransformerLM,
  "llama": LlamaLM,
  "gpt2": GPT2LM,
  "time_mlp": TimeMLP,
  "unet": UNet,
}


def create(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model called ``name`` (a key of ``MODELS``) with keyword attributes.

  Raises:
    ValueError: unknown ``name`` or an attribute the model does not have.
  """
  if name not in MODELS:
    raise ValueError(f"model name must be one of {sorted(MODELS)}, got {name!r}")
  try:
    return MODELS[name](**kwargs)
  except TypeError as e:
    raise ValueError(f"bad attributes for model {name!r}: {e}") from None


def from_config(config: Mapping[str, Any]) -> nn.Module:
  """Builds a model from a config mapping ``{'name': ..., **attributes}``."""
  config = dict(config)
  if "name" not in config:
    raise ValueError(f"a model config needs a 'name', one of {sorted(MODELS)}; got {config}")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "name"}
  return create(config["name"], **kwargs)


__all__ = [
  "MLP",
  "ConvNet",
  "CifarResNet",
  "BasicBlock",
  "resnet8x4",
  "resnet32x4",
  "TransformerLM",
  "TimeMLP",
  "UNet",
  "DecoderBlock",
  "init_cache",
  "LlamaLM",
  "GPT2LM",
  "sampling",
  "MODELS",
  "create",
  "from_config",
]
