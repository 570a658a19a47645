"""Every config of experiments/ (and its runlocal variant) is validated before any side effect.

Each numeric leaf (and each entry of a tuple of numbers) is set in turn to NaN, 0 and -1.
Either the job's ``validate(config)`` raises a ValueError naming the key, and the job's
``run(config, workdir)`` raises it too while the workdir is never created; or the value is
valid by design, listed in :data:`VALID` with its reason. Every ``validate`` is pure Python
(milliseconds), and ``run`` validates before anything else, so all combinations run.
Also: the typed blocks of ``kdjax.jobs.config`` and the migration error for old keys.
"""

import fnmatch
import glob
import importlib
import json
import math
import os
import re

import ml_collections
import numpy as np
import optax
import pytest

from kdjax.distill import evaluation
from kdjax.jobs import config as config_lib, workdir as workdir_lib
from launch import jobs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAN = float("nan")

# (key pattern, value) -> why that value is valid. Patterns are fnmatch patterns of dotted
# keys (``alphas.0`` for the tuple entry ``alphas[0]``), optionally ``CONFIG:ARG|`` first
# to restrict them to some configs; a value not listed here must be refused.
VALID = {
  ("seed", 0): "seed 0 is a seed",
  ("dataset.max_train", 0): "0 = every training example",
  ("dataset.max_test", 0): "0 = every test example",
  ("dataset.max_documents", 0): "0 = every document (LM corpus)",
  ("lm_kd_[ph]*:*|dataset.spm_vocab_size", 0): "unused by the byte and hf tokenizers (0 = none)",
  ("lm_kd_[ph]*:*|dataset.spm_train_documents", 0): "unused by byte and hf tokenizers (0 = none)",
  ("*_pystdlib:*|dataset.spm_vocab_size", 0): "unused by the byte tokenizer (0 = none)",
  ("*_pystdlib:*|dataset.spm_train_documents", 0): "unused by the byte tokenizer (0 = none)",
  ("drafts.*.lam", 0): "a GKD draft that never samples from itself",
  ("drafts.*.beta", 0): "the generalized JSD's endpoint (a KL), in [0, 1]",
  ("xtok.*_weight", 0): "a weight of 0 drops that term",
  ("dmd.reg_weight", 0): "DMD without its regression loss (the distribution-matching term alone)",
  ("dmd.t_min", 0): "the DM gradient's times may reach pure noise (t = 0; DMD: 0.02)",
  ("consistency.ema_decay", 0): "0 = the stop-gradient target (iCT) instead of an EMA",
  ("*optimizer.warmup_steps", 0): "no warmup",
  ("*optimizer.final_lr_fraction", 0): "the cosine schedule decays to 0",
  ("*optimizer.momentum", 0): "SGD without momentum",
  ("*optimizer.weight_decay", 0): "no weight decay",
  ("*optimizer.grad_clip_norm", 0): "no clipping",
  ("label_smoothing", 0): "no label smoothing",
  ("*model.dropout_rate", 0): "no dropout",
  ("kd.kd_weight", 0): "a weight of 0 drops the KD term (the label-only student)",
  ("kd.ce_weight", 0): "a weight of 0 drops the label term",
  ("born_again.ce_weight", 0): "no label term",
  ("self_distill.alpha", 0): "alpha = 0 is supervised training",
  ("distill.lam", 0): "GKD never samples from the student (purely off-policy)",
  ("distill.beta", 0): "the generalized JSD's endpoint (a KL), in [0, 1]",
  ("distill.alpha", 0): "skew KL with alpha = 0 is the KL",
  ("distill.top_k", 0): "0 = no top-k truncation",
  ("evaluation.batch_size", 0): "0 = the whole distilled set in one batch",
  ("evaluation.weight_decay", 0): "plain Adam",
  ("evaluation.max_shift", 0): "no augmentation",
  ("evaluation.epochs", 0): "0 = num_steps steps (the pinned protocol)",
  ("*.label_offset", 0): "plain one-hot labels",
  ("kernel.b_std", 0): "a kernel without biases",
  ("*dataset.n_val", 0): "no validation split (synthetic data: the clean function is known)",
  ("*dataset.noise", 0): "noise-free targets",
  ("*dataset.label_noise", 0): "no flipped labels",
  ("bounds.max_extra_rounds", 0): "search only up to the lower bound",
  ("*alphas.*", 0): "label weight 0 (pure self-distillation targets)",
  ("gd.noise", 0): "noise-free views",
  ("*.min_start_epoch", 0): "MTT/DATM trajectories may start at the experts' initialisation",
  ("*.syn_batch_size", 0): "0 = the whole synthetic set per student step (MTT)",
}


def _valid_by_design(name: str, key: str, value: float) -> str | None:
  key = re.sub(r"\[(\d+)\]", r".\1", key)
  for (pattern, valid), reason in VALID.items():
    configs, _, pattern = pattern.rpartition("|")
    if value != valid or math.isnan(value) or not fnmatch.fnmatchcase(key, pattern):
      continue
    if not configs or fnmatch.fnmatchcase(name, configs):
      return reason
  return None


# Configs whose get_config needs an arg (validation is pure: the path is not read).
REQUIRED_ARGS = {"lm_kd_hf": "teacher=tests/models/hf_reference/llama"}


def _configs():
  for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
    name = os.path.basename(path)[:-3]
    if name in ("__init__", "common", "distill_base"):
      continue
    module = importlib.import_module(f"experiments.{name}")
    required = REQUIRED_ARGS.get(name)
    for arg in (None, "runlocal"):
      full = ",".join(a for a in (required, arg) if a) or None
      yield f"{name}:{arg or ''}", module.get_config(full)


CONFIGS = dict(_configs())


def _job(config):
  """``(validate, run)`` of ``config.job``'s module (``launch.jobs``)."""
  module = jobs.module(config)
  return module.validate, module.run


def _leaves(tree, prefix=""):
  """``(dotted key, path in the dict)`` of every number (bools excluded) and tuple entry."""
  for key, value in tree.items():
    dotted, path = f"{prefix}{key}", (key,)
    if isinstance(value, dict):
      for sub, sub_path in _leaves(value, f"{dotted}."):
        yield sub, path + sub_path
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield dotted, path
    elif isinstance(value, (tuple, list)):
      for i, item in enumerate(value):
        if isinstance(item, (int, float)) and not isinstance(item, bool):
          yield f"{dotted}[{i}]", path + (i,)


def _cases():
  for name, config in CONFIGS.items():
    for key, path in _leaves(config.to_dict()):
      for value in (NAN, 0, -1):
        yield name, key, path, value


def _swap(config: ml_collections.ConfigDict, path: tuple, value):
  """Sets the leaf at ``path`` (a tuple entry when its last part is an int) in place and
  returns what it held (the whole tuple for an entry), for :func:`_restore`."""
  tuple_entry = isinstance(path[-1], int)
  *parents, last = path[:-1] if tuple_entry else path
  node = config
  for part in parents:
    node = node[part]
  old = node[last]
  del node[last]  # ConfigDict would cast a later int back to the float NaN's type
  if tuple_entry:
    items = list(old)
    items[path[-1]] = value
    value = tuple(items)
  node[last] = value
  return node, last, old


def test_every_numeric_key_of_every_config_is_refused_or_valid_by_design(tmp_path):
  cases = list(_cases())
  assert len(CONFIGS) >= 40 and len(cases) > 1500, (len(CONFIGS), len(cases))
  # Not type-safe, so that NaN reaches integer keys as from a JSON file or a plain dict.
  unsafe = {n: ml_collections.ConfigDict(c.to_dict(), type_safe=False) for n, c in CONFIGS.items()}
  refused, valid, wrong = 0, 0, []
  for i, (name, key, path, value) in enumerate(cases):
    config = unsafe[name]
    node, last, old = _swap(config, path, value)
    validate, run = _job(config)
    reason = _valid_by_design(name, key, value)
    try:
      validate(config)
    except (TypeError, AttributeError) as err:
      raise AssertionError(f"{name} {key}={value}: not a ValueError") from err
    except ValueError as err:
      if reason is not None:
        wrong.append(f"{name} {key}={value}: refused but listed valid ({reason}): {err}")
      elif f"config.{key}" not in str(err):
        wrong.append(f"{name} {key}={value}: the error does not name config.{key}: {err}")
      else:
        refused += 1
        workdir = tmp_path / f"w{i}"
        with pytest.raises(ValueError, match=re.escape(f"config.{key}")):
          run(config, str(workdir))
        if workdir.exists():
          wrong.append(f"{name} {key}={value}: run() touched its workdir before refusing")
    else:
      if reason is None:
        wrong.append(f"{name} {key}={value}: accepted, but not listed as valid by design")
      else:
        valid += 1
    del node[last]
    node[last] = old
  assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong[:40])
  print(f"{len(cases)} cases: {refused} refused, {valid} valid by design")
  assert refused > 1000 and valid > 50, (refused, valid)


def test_every_config_and_sweep_point_validates_as_shipped():
  from launch import sweep

  for name, config in CONFIGS.items():
    _job(config)[0](config)
    module = importlib.import_module(f"experiments.{name.partition(':')[0]}")
    for point in module.sweep() if hasattr(module, "sweep") else ():
      point_config = sweep.apply_point(config, point)
      _job(point_config)[0](point_config)


# ----------------------------------------------------------------------------------------
# The typed blocks.


def _optimizer(**overrides):
  from experiments import common

  return common.optimizer("sgd", 0.1, **overrides)


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("learning_rate", NAN, "config.optimizer.learning_rate must be a finite number > 0, got nan"),
    ("learning_rate", math.inf, "config.optimizer.learning_rate must be a finite number > 0"),
    ("warmup_steps", 2.5, "config.optimizer.warmup_steps must be an integer >= 0, got 2.5"),
    ("momentum", 1.0, "config.optimizer.momentum must be a finite number >= 0 and < 1"),
    ("name", "lion", r"config.optimizer.name must be one of \['sgd', 'adam', 'adamw'\]"),
    ("nesterov", 1, "config.optimizer.nesterov must be true or false"),
  ],
)
def test_optimizer_block_errors_name_the_full_key(key, value, message):
  block = _optimizer().to_dict()
  block[key] = value
  with pytest.raises(ValueError, match=message):
    config_lib.Optimizer.from_config(block)


def test_blocks_refuse_missing_unknown_and_old_keys():
  block = _optimizer().to_dict()
  del block["momentum"]
  with pytest.raises(ValueError, match=r"config.teacher.optimizer .*missing \['momentum'\]"):
    config_lib.Optimizer.from_config(block, "config.teacher.optimizer")
  from experiments import common

  old = common.evaluation().to_dict()
  old["steps"] = old.pop("num_steps")
  with pytest.raises(ValueError, match="config.evaluation.steps is now evaluation.num_steps"):
    config_lib.Evaluation.from_config(old)


def test_optimizer_make_matches_the_optax_chain_it_describes():
  params = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
  grads = {"w": np.array([0.5, 4.0, -1.0], np.float32)}
  block = config_lib.Optimizer.from_config(
    _optimizer(weight_decay=0.01, grad_clip_norm=1.0, schedule="constant", nesterov=True)
  )
  want = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.add_decayed_weights(0.01),
    optax.sgd(0.1, momentum=0.9, nesterov=True),
  )
  got = block.make(10)
  (want_updates, _), (got_updates, _) = (
    tx.update(grads, tx.init(params), params) for tx in (want, got)
  )
  np.testing.assert_allclose(got_updates["w"], want_updates["w"], rtol=1e-6)
  adamw = config_lib.Optimizer.from_config({**block.__dict__, "name": "adamw"})
  assert len(adamw.make(10).init(params)) == 2  # clip + adamw, no coupled decay


def test_evaluation_block_is_the_protocol():
  from experiments import common

  block = common.evaluation(num_steps=7, batch_size=0, seeds=2)
  protocol = evaluation.protocol_from_config(block, num_support=30)
  assert protocol == evaluation.Protocol(
    network="convnet", width=32, depth=3, steps=7, batch_size=30, seeds=2
  )


def test_evaluation_names_and_the_field_protocol_arg():
  from experiments import common, dm_digits

  for key, value, message in (
    ("augment", "blur", r"config.evaluation.augment: a DSA strategy .*'blur'"),
    ("augment", 3, "config.evaluation.augment must be 'none' or a DSA strategy"),
    ("optimizer", "lamb", r"config.evaluation.optimizer must be one of \['adam', 'sgd'\]"),
  ):
    with pytest.raises(ValueError, match=message):
      evaluation.protocol_from_config(common.evaluation(**{key: value}))
  field = evaluation.protocol_from_config(dm_digits.get_config("1,protocol=field").evaluation)
  assert {k: getattr(field, k) for k in evaluation.FIELD} == evaluation.FIELD
  assert (field.depth, field.seeds) == (2, 3)  # the config's network depth and seeds stay
  with pytest.raises(ValueError, match=r"config arg protocol: .*\['pinned', 'field'\]"):
    dm_digits.get_config("1,protocol=papers")


# ----------------------------------------------------------------------------------------
# Workdirs written by an older kdjax.


@pytest.mark.parametrize(
  "old_key, old_value, message",
  [
    ("mode", "kd", "mode -> method"),
    ("transfer", {"enabled": True}, "transfer -> evaluation"),
    ("kip.learning_rate", 0.03, "kip.learning_rate -> optimizer.learning_rate"),
  ],
)
def test_a_workdir_with_old_keys_gets_a_migration_error(tmp_path, old_key, old_value, message):
  config = CONFIGS["kd_mnist5k:runlocal"]
  recorded = workdir_lib.config_to_dict(config)
  first, _, last = old_key.rpartition(".")
  (recorded.setdefault(first, {}) if first else recorded)[last] = old_value
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  with pytest.raises(ValueError, match=f"workdir .* older kdjax.*{message}"):
    workdir_lib.record_config(str(tmp_path), config)


def test_a_config_with_old_keys_is_refused_naming_them():
  config = ml_collections.ConfigDict(CONFIGS["kip_mnist5k:runlocal"].to_dict())
  config.kip.learning_rate = 0.03
  with pytest.raises(ValueError, match=r"the config has keys .*kip.learning_rate -> optimizer"):
    jobs.module(config).validate(config)
