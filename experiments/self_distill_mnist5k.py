r"""Ground-truth-weighted self-distillation on mnist5k: generation k learns
``(1 - alpha) onehot(y) + alpha softmax(teacher / T)`` from generation k-1 (same MLP).

Borup & Andersen (2021), "Even your teacher needs guidance: ground-truth targets dampen
regularization imposed by self-distillation"; the closed forms for kernel regression
are in ``kdjax.theory``.

  python -m launch.main --config=experiments/self_distill_mnist5k.py:alpha=0.5 --workdir=runs/sd
  python -m launch.sweep --config=experiments/self_distill_mnist5k.py --workdir=runs/sd_sweep

Arg: ``runlocal``, ``seed=N``, ``generations=G``, ``alpha=A`` (teacher weight in [0, 1]),
``temperature=T``.
"""

from experiments import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, seed=0, generations=4, alpha=0.5, temperature=1.0)
  c = common.train_base(
    method="self_distill",
    dataset_name="mnist5k",
    model={"name": "mlp", "num_classes": 10, "hidden": (256,)},
    seed=a.seed,
    num_steps=1500,
    batch_size=64,
    learning_rate=1e-3,
  )
  c.generations = a.generations
  c.self_distill = {"alpha": a.alpha, "temperature": a.temperature}
  if a.runlocal:
    common.train_runlocal(c)
    c.model.hidden = (32,)
  return c


def sweep(arg=None):
  """alpha in {0, 0.25, 0.5, 0.75, 1} over two seeds."""
  del arg
  return [
    {"name": f"alpha{alpha}_seed{s}", "self_distill.alpha": alpha, "seed": s}
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0)
    for s in range(2)
  ]
