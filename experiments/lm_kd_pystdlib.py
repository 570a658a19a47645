r"""LM distillation on the embedded corpus (the Python standard library's .py sources, bytes).

One run trains a byte-level TransformerLM teacher, then one student per mode: ``ce``
(cross-entropy only), ``token_kd`` (teacher-forced KL), ``seq_kd`` (Kim & Rush 2016, on
teacher samples) and ``gkd`` (Agarwal et al. 2024, on-policy generalized JSD); every
student has the same architecture, steps and data order. ``WORKDIR/summary.json`` has one
entry per model (``teacher``, ``ce``, ``token_kd``, ``seq_kd``, ``gkd``) with
``eval_bits_per_byte``, ``teacher_nll_of_samples``, ``gap_closed``, ``tokens_per_second``.

  python -m launch.main --config=experiments/lm_kd_pystdlib.py --workdir=runs/lm_pystdlib
  python -m launch.main --config=experiments/lm_kd_pystdlib.py:runlocal --workdir=/tmp/lm
  python -m launch.sweep --config=experiments/lm_kd_pystdlib.py --workdir=runs/lm_sweep

Arg (comma-separated): ``runlocal`` (a few-minute smoke run), ``seed=N``, ``lam=L`` (GKD's
on-policy fraction), ``beta=B`` (GKD's JSD mixture), ``modes=ce+token_kd`` (``+``-separated),
``teacher_workdir=PATH`` (the finished teacher of an earlier run, e.g. shared by a sweep),
``model=llama`` (Llama-style models, exported in the Hugging Face layout; see docs/hf.md).
"""

import ml_collections

from experiments import common


def base_config(
  *, seed: int = 0, lam: float = 0.5, beta: float = 0.5, modes: str = "ce,token_kd,seq_kd,gkd"
) -> ml_collections.ConfigDict:
  """The LM job's config with every key (pystdlib sizes); other LM experiments start here."""
  c = ml_collections.ConfigDict()
  c.job = "lm"
  c.seed = seed
  c.dataset = {
    "name": "pystdlib",
    "seq_len": 64,
    "data_dir": "",
    "max_documents": 0,
    "tokenizer": "byte",
    "spm_model": "",
    "spm_vocab_size": 0,
    "spm_train_documents": 0,
    "files": "",  # text_files: glob of .txt / .jsonl files
    "validation_files": "",  # text_files: validation glob ('' = a 5% hash split of files)
  }
  c.dtype = "float32"  # parameters and compute of llama / gpt2 models (bfloat16); loss float32
  c.batch_size = 32
  c.micro_batches = 1  # gradient accumulation (exact: sums and token counts)
  c.fsdp = True  # kdjax.train.lm.LM_RULES; False replicates the parameters
  c.eval_sequences = 128  # validation windows of dataset.seq_len for bits per byte
  c.eval_batch_size = 64
  c.num_sample_prompts = 32  # teacher NLL of samples: validation prompts (a multiple of devices)
  c.log_every, c.eval_every, c.checkpoint_every, c.keep_checkpoints = 50, 100, 100, 2
  c.teacher_workdir = ""  # a finished lm run whose teacher to use instead
  optimizer = {
    "learning_rate": 2e-3,
    "schedule": "cosine",
    "warmup_steps": 50,
    "final_lr_fraction": 0.1,
    "weight_decay": 0.01,
    "grad_clip_norm": 1.0,
  }
  c.teacher = {
    "model": {
      "name": "transformer_lm",
      "vocab_size": 259,
      "max_len": 64,
      "embed_dim": 96,
      "num_layers": 3,
      "num_heads": 4,
      "mlp_dim": 384,
    },
    "num_steps": 600,
    "optimizer": optimizer,
    "hf_path": "",  # a Hugging Face checkpoint directory: the teacher (not trained)
  }
  c.student = {
    "model": {
      "name": "transformer_lm",
      "vocab_size": 259,
      "max_len": 64,
      "embed_dim": 48,
      "num_layers": 2,
      "num_heads": 2,
      "mlp_dim": 192,
    },
    "num_steps": 200,
    "optimizer": optimizer,
    "hf_path": "",  # start from this Hugging Face checkpoint
    "init_from_teacher": "",  # 'every_other' or '0,2': teacher embeddings + these layers
  }
  c.modes = modes
  c.distill = {
    "divergence": "kl",
    "loss_temperature": 1.0,
    "beta": beta,
    "alpha": 0.1,
    "lam": lam,
    "prompt_len": 16,
    "sample_temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "chunked": False,
    "chunk_size": 1024,
  }
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks ``c`` in place to a smoke run of seconds to a few minutes."""
  c.dataset.seq_len = 32
  c.batch_size = 16
  c.eval_sequences, c.eval_batch_size, c.num_sample_prompts = 32, 32, 16
  c.log_every, c.eval_every, c.checkpoint_every = 10, 20, 20
  c.teacher.model.update(max_len=32, embed_dim=32, num_layers=2, num_heads=2, mlp_dim=64)
  c.student.model.update(max_len=32, embed_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
  c.teacher.num_steps, c.student.num_steps = 60, 20
  c.teacher.optimizer.warmup_steps = c.student.optimizer.warmup_steps = 5
  c.distill.prompt_len = 8
  return c


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    runlocal=False,
    seed=0,
    lam=0.5,
    beta=0.5,
    modes="ce+token_kd+seq_kd+gkd",
    teacher_workdir="",
    model="transformer_lm",
  )
  c = base_config(seed=a.seed, lam=a.lam, beta=a.beta, modes=a.modes.replace("+", ","))
  c.teacher_workdir = a.teacher_workdir
  if a.model == "llama":
    use_llama(c)
  elif a.model != "transformer_lm":
    raise ValueError(f"config arg model must be 'transformer_lm' or 'llama', got {a.model!r}")
  return runlocal(c) if a.runlocal else c


def use_llama(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Llama-style teacher (4 layers, GQA) and student (2 layers) of about the TransformerLM
  sizes; the lm job exports them to ``WORKDIR/teacher_hf`` and ``WORKDIR/student_hf``
  (the teacher of the end-to-end Hugging Face example, docs/hf.md)."""
  common_keys = {"name": "llama", "vocab_size": 259, "max_len": 64, "num_kv_heads": 2}
  c.teacher.model = {
    **common_keys,
    "embed_dim": 96,
    "num_layers": 4,
    "num_heads": 4,
    "head_dim": 24,
    "mlp_dim": 256,
  }
  c.student.model = {
    **common_keys,
    "embed_dim": 96,
    "num_layers": 2,
    "num_heads": 4,
    "head_dim": 24,
    "mlp_dim": 256,
  }
  return c


def sweep(arg=None):
  """GKD over the on-policy fraction lam in {0, 0.5, 1} x JSD beta in {0.1, 0.5, 0.9}.

  Every point trains its own teacher unless ``teacher_workdir=PATH`` is given in the arg
  (``launch.sweep --config=experiments/lm_kd_pystdlib.py:teacher_workdir=runs/lm_pystdlib``
  shares the finished teacher of that run with every point).
  """
  del arg
  return [
    {
      "name": f"gkd_lam{lam:g}_beta{beta:g}",
      "modes": "ce,gkd",
      "distill.lam": lam,
      "distill.beta": beta,
    }
    for lam in (0.0, 0.5, 1.0)
    for beta in (0.1, 0.5, 0.9)
  ]
