r"""Littwin et al. (2024): deep linear JEPA learns high-rho features first, MAE high-covariance.

``python -m launch.main --config=experiments/theory_jepa.py --workdir=/tmp/jepa``
(``:runlocal`` for a smoke run). Features with covariance ``lambdas`` and regression
coefficients ``rhos`` (ordered oppositely); every encoder layer and the predictor start at
``init_scale^(1/L)``. Draws ``jepa_feature_curves.png`` (feature-wise learning curves of
the per-feature ODEs for L = 1, 2 and the deepest L, JEPA top row, MAE bottom row) and
``jepa_critical_times.png`` (critical time against depth, relative to feature 0, and
gradient descent on the actual networks against the ODE at ``gd.depth``).
"""

import ml_collections

from experiments import common


def get_config(arg=None):
  """``arg``: ``[runlocal]``."""
  a = common.parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.job = "theory"
  config.method = "jepa"
  config.seed = 0
  config.lambdas = (1.0, 0.4, 0.2)  # eigenvalues of Sigma_xx: feature 0 covaries most
  config.rhos = (0.25, 0.55, 0.95)  # regression coefficients: feature 2 most predictive
  config.init_scale = 1e-4  # the encoder's initial end-to-end weight
  config.depths = (1, 2, 3, 4, 5)
  config.horizon = 2.5  # curves up to horizon x the slowest critical time
  config.num_steps = 200  # time points of each curve (metrics records)
  # Gradient descent on the networks (synthetic views with exact covariances) vs the ODE.
  config.gd = ml_collections.ConfigDict(
    dict(
      depth=2,
      init_scale=0.01,
      learning_rate=0.25,
      num_steps=8000,
      record_every=100,
      n=64,
      noise=0.5,
    )
  )
  if a.runlocal:
    config.depths = (1, 2, 3)
    config.init_scale = 1e-3
    config.num_steps = 25
    config.gd.num_steps, config.gd.record_every = 400, 100
  return config


def sweep(arg=None):
  """Initial scales 1e-6 / 1e-4 / 1e-2 (smaller: the leading-order covariance order)."""
  return [{"name": f"init{s:g}", "init_scale": s} for s in (1e-6, 1e-4, 1e-2)]
