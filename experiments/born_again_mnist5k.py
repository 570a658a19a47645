r"""Born-again networks on mnist5k: generation k (an MLP) distils generation k-1 (the same MLP).

Furlanello, Lipton, Tschannen, Itti & Anandkumar (2018), "Born again neural networks".
Generations run in ``WORKDIR/gen_0 .. gen_{G-1}``; ``WORKDIR/metrics.jsonl`` has one
record per generation (``step`` = generation).

  python -m launch.main --config=experiments/born_again_mnist5k.py --workdir=runs/ban
  python -m launch.main --config=experiments/born_again_mnist5k.py:weighting=cwtm \
      --workdir=runs/ban_cwtm
  python -m launch.sweep --config=experiments/born_again_mnist5k.py --workdir=runs/ban_sweep

Arg: ``runlocal``, ``seed=N``, ``generations=G``, ``weighting=none|cwtm|dkpp``.
"""

from experiments import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, seed=0, generations=3, weighting="none")
  c = common.train_base(
    method="born_again",
    dataset_name="mnist5k",
    model={"name": "mlp", "num_classes": 10, "hidden": (256,)},
    seed=a.seed,
    num_steps=1500,
    batch_size=64,
    learning_rate=1e-3,
  )
  c.generations = a.generations
  c.born_again = {"weighting": a.weighting, "temperature": 1.0, "ce_weight": 0.0}
  if a.runlocal:
    common.train_runlocal(c)
    c.model.hidden = (32,)
  return c


def sweep(arg=None):
  """The three born-again variants over three seeds."""
  del arg
  return [
    {"name": f"{w}_seed{s}", "born_again.weighting": w, "seed": s}
    for w in ("none", "cwtm", "dkpp")
    for s in range(3)
  ]
