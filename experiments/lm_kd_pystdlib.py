r"""LM distillation on the embedded corpus (the Python standard library's .py sources, bytes).

One run trains a byte-level TransformerLM teacher, then one student per method (``methods``): ``ce``
(cross-entropy only), ``token_kd`` (teacher-forced KL), ``seq_kd`` (Kim & Rush 2016, on
teacher samples) and ``gkd`` (Agarwal et al. 2024, on-policy generalized JSD); every
student has the same architecture, steps and data order. ``WORKDIR/summary.json`` has one
entry per model (``teacher``, ``ce``, ``token_kd``, ``seq_kd``, ``gkd``) with
``eval_bits_per_byte``, ``teacher_nll_of_samples``, ``gap_closed``, ``tokens_per_second``.

  python -m launch.main --config=experiments/lm_kd_pystdlib.py --workdir=runs/lm_pystdlib
  python -m launch.main --config=experiments/lm_kd_pystdlib.py:runlocal --workdir=/tmp/lm
  python -m launch.sweep --config=experiments/lm_kd_pystdlib.py --workdir=runs/lm_sweep

Arg (comma-separated): ``runlocal`` (a few-minute smoke run), ``seed=N``, ``lam=L`` (GKD's
on-policy fraction), ``beta=B`` (GKD's JSD mixture), ``methods=ce+token_kd`` (``+``-separated),
``teacher_workdir=PATH`` (the finished teacher of an earlier run, e.g. shared by a sweep).
"""

from experiments import common


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    runlocal=False,
    seed=0,
    lam=0.5,
    beta=0.5,
    methods="ce+token_kd+seq_kd+gkd",
    teacher_workdir="",
  )
  c = common.lm_base(seed=a.seed, lam=a.lam, beta=a.beta, methods=a.methods.replace("+", ","))
  c.teacher_workdir = a.teacher_workdir
  return common.lm_runlocal(c) if a.runlocal else c


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
      "methods": "ce,gkd",
      "distill.lam": lam,
      "distill.beta": beta,
    }
    for lam in (0.0, 0.5, 1.0)
    for beta in (0.1, 0.5, 0.9)
  ]
