r"""Borup & Andersen (2023): self-distillation of GP regression and classification.

``python -m launch.main --config=experiments/theory_gp.py --workdir=/tmp/gp``
(``:runlocal`` for a smoke run). Draws ``gp_regression.png`` (data-centric GPR for
several label weights and distribution-centric GPR: test MSE/NLL against rounds, and the
posteriors) and ``gp_classification.png`` (data-centric continuous-Bernoulli GPC with the
Laplace approximation on two moons with flipped training labels).
"""

import ml_collections

from experiments import common


def get_config(arg=None):
  """``arg``: ``[runlocal]``."""
  a = common.parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.job = "theory"
  config.method = "gp"
  config.seed = 0
  config.dataset = ml_collections.ConfigDict(
    dict(name="synthetic", n_train=60, n_val=0, n_test=400, noise=0.4, label_noise=0.0)
  )
  config.kernel = ml_collections.ConfigDict(dict(lengthscale_factor=0.1, scale=1.0))
  config.noise = 0.01  # GP observation-noise variance (deliberately too small)
  config.num_steps = 30  # rounds
  config.alphas = (0.0, 0.2, 0.5)
  config.gpc = ml_collections.ConfigDict(
    dict(
      dataset=dict(name="moons", n_train=150, n_val=0, n_test=500, noise=0.25, label_noise=0.15),
      kernel=dict(lengthscale_factor=0.3, scale=10.0),
      num_steps=10,
      alphas=(0.0, 0.2, 0.5, 1.0),
    )
  )
  if a.runlocal:
    config.dataset.n_train, config.dataset.n_test, config.num_steps = 25, 50, 6
    config.gpc.dataset.n_train, config.gpc.dataset.n_test, config.gpc.num_steps = 30, 60, 3
    config.gpc.alphas = (0.0, 0.5)
  return config


def sweep(arg=None):
  """GP noise variances 1e-3 / 1e-2 / 1e-1."""
  return [{"name": f"noise{v:g}", "noise": v} for v in (1e-3, 1e-2, 1e-1)]
