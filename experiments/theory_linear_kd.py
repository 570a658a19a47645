r"""Phuong & Lampert (2019): linear and deep linear students distilled from a teacher.

``python -m launch.main --config=experiments/theory_linear_kd.py --workdir=/tmp/linear_kd``
(``:runlocal`` for a smoke run). ``n`` Gaussian inputs in ``dim > n`` dimensions, a linear
teacher ``w_T``, students from ``w_0``: the linear student on MSE (closed form) and on the
sigmoid soft-target cross-entropy (ODE), deep linear students of each depth in ``depths``
(balanced init, ODE over all layers). Draws ``linear_kd.png``: the distance to each
limit over time, the train MSE, and the error of gradient descent with kdjax's MLP (one
Dense layer) + train step against the flow at ``horizon`` for each learning rate (slope 1
on log-log axes = order 1 in the step size).
"""

import ml_collections

from experiments import common


def get_config(arg=None):
  """``arg``: ``[runlocal]``."""
  a = common.parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.job = "theory"
  config.method = "linear_kd"
  config.seed = 0
  config.dataset = ml_collections.ConfigDict(dict(name="gaussian", n_train=10, dim=20))
  config.init_scale = 0.3  # w_0 = init_scale * N(0, I)
  config.depths = (1, 2, 3)  # depth 1 is the linear student
  config.width = 8  # hidden width of the deep linear students
  config.horizon = 20.0  # gradient-flow time (learning rate x steps)
  config.num_steps = 200  # time points (metrics records)
  config.learning_rates = (0.04, 0.02, 0.01)
  if a.runlocal:
    config.dataset.n_train, config.dataset.dim = 5, 8
    config.depths = (1, 2)
    config.horizon, config.num_steps = 4.0, 20
    config.learning_rates = (0.04, 0.02)
  return config


def sweep(arg=None):
  """Examples per dimension: n = 5, 10, 20 of 20 dimensions."""
  return [{"name": f"n{n}", "dataset.n_train": n} for n in (5, 10, 20)]
