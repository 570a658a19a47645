r"""LM distillation on lm1b (One Billion Word, tensorflow-datasets) with a SentencePiece
vocabulary, sized for an accelerator (TPU VM / GPU): a 6-layer 512-wide teacher, a 2-layer
256-wide student, the same four students as ``lm_kd_pystdlib`` and the chunked loss.

The SentencePiece model is trained on the first ``dataset.spm_train_documents`` training
sentences into ``dataset.spm_model`` the first time (then reused).

  python -m launch.main --config=experiments/lm_kd_lm1b.py --workdir=runs/lm1b \
      --config.dataset.spm_model=runs/spm/lm1b_8k.model
  python -m launch.main --config=experiments/lm_kd_lm1b.py:runlocal --workdir=/tmp/lm1b

Arg: ``runlocal`` (tiny; the tests run it on ``tfds.testing.mock_data``), ``seed=N``,
``lam=L``, ``beta=B``, ``methods=ce+token_kd+seq_kd+gkd``.
"""

from experiments import common, lm_kd_pystdlib


def get_config(arg=None):
  a = common.parse_arg(
    arg, runlocal=False, seed=0, lam=0.5, beta=0.5, methods="ce+token_kd+seq_kd+gkd"
  )
  c = common.lm_base(seed=a.seed, lam=a.lam, beta=a.beta, methods=a.methods.replace("+", ","))
  c.dataset.update(
    name="lm1b",
    seq_len=128,
    tokenizer="sentencepiece",
    spm_model="spm/lm1b_8k.model",
    spm_vocab_size=8192,
    spm_train_documents=1_000_000,
  )
  c.batch_size = 256
  c.eval_sequences, c.eval_batch_size, c.num_sample_prompts = 2048, 256, 256
  c.log_every, c.eval_every, c.checkpoint_every = 100, 2000, 2000
  c.teacher.model.update(
    vocab_size=8192, max_len=128, embed_dim=512, num_layers=6, num_heads=8, mlp_dim=2048
  )
  c.student.model.update(
    vocab_size=8192, max_len=128, embed_dim=256, num_layers=2, num_heads=4, mlp_dim=1024
  )
  c.teacher.num_steps, c.student.num_steps = 100_000, 30_000
  c.teacher.optimizer.update(learning_rate=1e-3, warmup_steps=2000)
  c.student.optimizer.update(learning_rate=1e-3, warmup_steps=2000)
  c.distill.update(chunked=True, chunk_size=4096, prompt_len=32)
  if a.runlocal:
    common.lm_runlocal(c)
    c.dataset.update(
      spm_vocab_size=300,
      spm_train_documents=64,
      max_documents=64,
      spm_model="spm/lm1b_runlocal.model",
    )
    c.teacher.model.vocab_size = c.student.model.vocab_size = 300
    c.distill.chunk_size = 64
  return c


def sweep(arg=None):
  """The same lam x beta grid as ``lm_kd_pystdlib``."""
  return lm_kd_pystdlib.sweep(arg)
