r"""Distil a pretrained Hugging Face teacher (Llama / Qwen2 / Mistral / GPT-2 checkpoint).

The teacher is ``config.teacher.hf_path`` (a directory with ``config.json``, safetensors and
``tokenizer.json``), loaded with ``kdjax.models.hf.from_pretrained`` into FSDP shardings and
frozen. The student starts from ``student.hf_path`` or, by default, from the teacher's
embeddings, final norm, head and every other layer (``student.init_from_teacher``, as
DistilBERT did); every method (``ce``, ``token_kd``, ``gkd``, ...) trains a copy of it. Text
comes from local ``.txt`` / ``.jsonl`` files (``files=GLOB``; jsonl ``prompt`` + ``response``
records train on the response only) tokenized by the teacher's tokenizer, or from the
embedded pystdlib corpus for byte-level teachers exported by kdjax. Each student is
exported to ``WORKDIR/student_hf/<method>/`` (``WORKDIR/student_hf/`` with one method) with the
tokenizer files, ready for ``transformers.AutoModelForCausalLM.from_pretrained``.

  python -m launch.main --config=experiments/lm_kd_hf.py:teacher=/ckpt/qwen,files=/data/*.jsonl \
      --workdir=runs/hf_kd
  python -m launch.main --workdir=runs/hf_kd_pystdlib \
      --config=experiments/lm_kd_hf.py:teacher=runs/e2e/teacher_hf,dtype=bfloat16
      # a byte-level kdjax teacher (exported by the lm job) on pystdlib

Arg (comma-separated): ``teacher=PATH`` (required), ``student=PATH`` (instead of the teacher's
layers), ``layers=every_other`` (or ``0+2+5``: ``+``-separated indices), ``files=GLOB``,
``validation_files=GLOB``, ``dtype=float32|bfloat16``, ``methods=ce+token_kd+gkd``,
``seq_len=N``, ``steps=N`` (student steps), ``lam=L``, ``beta=B``, ``seed=N``, ``runlocal``.
"""

import ml_collections

from experiments import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    teacher="",
    student="",
    layers="every_other",
    files="",
    validation_files="",
    dtype="float32",
    methods="ce+token_kd+gkd",
    seq_len=128,
    steps=300,
    lam=0.5,
    beta=0.5,
    seed=0,
    runlocal=False,
  )
  c = common.lm_base(seed=a.seed, lam=a.lam, beta=a.beta, methods=a.methods.replace("+", ","))
  c.teacher.model = c.student.model = ml_collections.ConfigDict()  # from the checkpoints
  c.teacher.hf_path = a.teacher
  c.student.hf_path = a.student
  c.student.init_from_teacher = "" if a.student else a.layers.replace("+", ",")
  c.dataset.tokenizer = "hf"
  if a.files:
    c.dataset.name = "text_files"
    c.dataset.files, c.dataset.validation_files = a.files, a.validation_files
  c.dataset.seq_len = a.seq_len
  c.dtype = a.dtype
  c.student.num_steps = a.steps
  c.student.optimizer.learning_rate = 5e-4  # fine-tuning a pretrained start
  c.distill.prompt_len = max(1, a.seq_len // 4)
  if a.runlocal:
    c.dataset.seq_len, c.distill.prompt_len = 32, 8
    c.batch_size, c.eval_sequences, c.eval_batch_size, c.num_sample_prompts = 8, 16, 16, 8
    c.log_every, c.eval_every, c.checkpoint_every = 5, 10, 10
    c.student.num_steps, c.student.optimizer.warmup_steps = 10, 2
  return c


def sweep(arg=None):
  """GKD's on-policy fraction lam in {0, 0.5, 1} x JSD beta in {0.1, 0.5, 0.9}, every student
  warm-started from the teacher's layers (as the GKD paper starts from a fine-tuned student);
  the teacher is ``teacher=PATH`` of the arg, the CE baseline is the ``ce`` method of a plain run.
  """
  del arg
  return [
    {
      "name": f"gkd_lam{lam:g}_beta{beta:g}",
      "methods": "gkd",
      "distill.lam": lam,
      "distill.beta": beta,
    }
    for lam in (0.0, 0.5, 1.0)
    for beta in (0.1, 0.5, 0.9)
  ]
