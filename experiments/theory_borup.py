r"""Borup & Andersen (2021): ground-truth labels dampen the regularisation of self-distillation.

``python -m launch.main --config=experiments/theory_borup.py:DATA --workdir=/tmp/borup``
with DATA in ``synthetic`` (default), ``diabetes``, ``digits`` (add ``,runlocal`` for a
smoke run). Draws ``borup_test_error.png``: test error against rounds for several label
weights alpha, the stepwise-optimal weights and the best fixed weight (optimal against the
clean function for synthetic data, against a validation split for real data).
"""

import ml_collections

from experiments import common

_DATA = {
  "synthetic": dict(name="synthetic", n_train=60, n_val=0, n_test=400, noise=0.4),
  "diabetes": dict(name="diabetes", n_train=250, n_val=92, n_test=100),
  "digits": dict(name="digits", n_train=500, n_val=300, n_test=997, label_noise=0.3),
}
_REG = {"synthetic": 1e-2, "diabetes": 0.1, "digits": 1e-2}
_LENGTHSCALE = {"synthetic": 0.1, "diabetes": 0.5, "digits": 0.5}


def get_config(arg=None):
  """``arg``: ``[synthetic|diabetes|digits][,runlocal]``."""
  a = common.parse_arg(
    arg,
    positional=("dataset",),
    help={"dataset": f"one of {sorted(_DATA)}"},
    dataset="synthetic",
    runlocal=False,
  )
  if a.dataset not in _DATA:
    raise ValueError(f"config arg dataset must be one of {sorted(_DATA)}, got {a.dataset!r}")
  config = ml_collections.ConfigDict()
  config.job = "theory"
  config.method = "borup"
  config.seed = 0
  config.dataset = ml_collections.ConfigDict({"noise": 0.3, "label_noise": 0.0, **_DATA[a.dataset]})
  config.kernel = ml_collections.ConfigDict(
    dict(lengthscale_factor=_LENGTHSCALE[a.dataset], scale=1.0)
  )
  config.reg = _REG[a.dataset]
  config.num_steps = 100  # rounds
  config.alphas = (0.0, 0.05, 0.2, 0.5, 1.0)  # weight of the ground-truth labels
  if a.runlocal:
    config.num_steps = 6
    config.dataset.n_train = min(config.dataset.n_train, 60)
    config.dataset.n_val = min(config.dataset.n_val, 40)
    config.dataset.n_test = min(config.dataset.n_test, 60)
  return config


def sweep(arg=None):
  """Ridge 1e-4 .. 1e-1."""
  return [{"name": f"reg{r:g}", "reg": r} for r in (1e-4, 1e-3, 1e-2, 1e-1)]
