r"""Cross-tokenizer distillation on the embedded corpus: a byte-level teacher, BPE students.

The teacher is the lm job's byte-level TransformerLM on the Python standard library's
sources (windows of ``dataset.seq_len`` bytes). The students use a 1,024-piece
SentencePiece BPE vocabulary trained offline, deterministically, on the corpus's train
split (every 8th file; ``WORKDIR/student_tokenizer/``), on windows of
``xtok.student_seq_len`` pieces, and train for the same steps on the same windows:

* ``ce``: cross-entropy only;
* ``uld``: CE + ULD (Boizard et al. 2024) at the start of each aligned chunk;
* ``alm``: CE + ALM (Minixhofer et al. 2025), the binarised KL of chunk likelihoods.

``WORKDIR/summary.json``: ``{name: {'eval_bits_per_byte', 'gap_closed', ...}}`` for
``teacher``, ``ce``, ``uld``, ``alm`` (bits per byte make the tokenizers comparable).

  python -m launch.main --config=experiments/xtok_pystdlib.py --workdir=runs/xtok
  python -m launch.main --config=experiments/xtok_pystdlib.py:runlocal --workdir=/tmp/xtok

Arg (comma-separated): ``runlocal`` (a smoke run of a minute or two), ``seed=N``,
``methods=ce+uld+alm`` (``+``-separated), ``teacher_workdir=PATH`` (a finished run of this
experiment, or of the lm job with ``dataset.seq_len`` 128, whose teacher to reuse).
"""

import ml_collections

from experiments import common


def base_config(*, seed: int = 0, methods: str = "ce,uld,alm") -> ml_collections.ConfigDict:
  c = common.lm_base(seed=seed, methods=methods)
  c.dataset.seq_len = 128  # the teacher's windows and its view of a student window (bytes)
  c.teacher.model.max_len = 128
  c.teacher.num_steps = 600
  c.student.model.update(vocab_size=1024, max_len=48)
  c.student.num_steps = 300
  c.eval_sequences = 128
  c.xtok = {
    "student_tokenizer": "sentencepiece",
    "spm_model": "",  # "" = trained into WORKDIR/student_tokenizer/
    "vocab_size": 1024,
    "model_type": "bpe",
    "spm_every": 8,  # trained on every 8th train file
    "student_seq_len": 40,  # pieces per student window (~105 bytes at 2.6 bytes/piece)
    "ce_weight": 1.0,
    "uld_weight": 1.0,
    "uld_temperature": 1.0,
    "alm_weight": 1.0,
    "alm_temperature": 1.0,
    "alm_divergence": "kl",
  }
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks ``c`` in place to a smoke run."""
  common.lm_runlocal(c)
  c.dataset.seq_len = 48
  c.teacher.model.max_len = 48
  c.student.model.update(vocab_size=400, max_len=16)
  c.xtok.update(vocab_size=400, spm_every=64, student_seq_len=16)
  c.teacher.num_steps, c.student.num_steps = 20, 10
  c.distill.prompt_len = 4
  return c


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, seed=0, methods="ce+uld+alm", teacher_workdir="")
  c = base_config(seed=a.seed, methods=a.methods.replace("+", ","))
  c.teacher_workdir = a.teacher_workdir
  return runlocal(c) if a.runlocal else c
