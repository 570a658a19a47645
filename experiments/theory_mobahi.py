r"""Mobahi, Farajtabar & Bartlett (2020): self-distillation sparsifies and collapses KRR.

``python -m launch.main --config=experiments/theory_mobahi.py --workdir=/tmp/mobahi``
(``:runlocal`` for a seconds-long smoke run). Draws ``mobahi_spectrum.png`` (the diagonal
``B_t`` over rounds), ``mobahi_collapse.png`` (``||y_t||^2``, ``c_t``, test error),
``mobahi_fits.png`` on a noisy 1-D regression problem with an RBF kernel, and
``mobahi_bounds.png``: the numerically found collapse round between its lower and upper
bounds (``kdjax.theory.collapse``) across budgets eps and kernel lengthscales.
"""

import ml_collections

from experiments import common


def get_config(arg=None):
  """``arg``: ``[runlocal]``."""
  a = common.parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.job = "theory"
  config.method = "mobahi"
  config.seed = 0
  config.dataset = ml_collections.ConfigDict(
    dict(name="synthetic", n_train=60, n_val=0, n_test=400, noise=0.3, label_noise=0.0)
  )
  config.kernel = ml_collections.ConfigDict(dict(lengthscale_factor=0.12, scale=1.0))
  config.reg = 0.05  # the fixed-regulariser variant: p_t = A^t y
  config.eps_fraction = 0.02  # budget eps = eps_fraction * mean(y^2)
  config.num_steps = 30  # rounds
  # Collapse round vs its bounds: every budget x every lengthscale (x median distance).
  config.bounds = ml_collections.ConfigDict(
    dict(
      eps_fractions=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
      lengthscale_factors=(0.05, 0.12, 0.3),
      max_extra_rounds=300,
    )
  )
  if a.runlocal:
    config.dataset.n_train, config.dataset.n_test, config.num_steps = 25, 50, 8
    config.eps_fraction = 0.05
    config.bounds.eps_fractions = (0.05, 0.2)
    config.bounds.lengthscale_factors = (0.12,)
  return config


def sweep(arg=None):
  """Budgets eps_fraction 0.01 / 0.02 / 0.05."""
  return [{"name": f"eps{f:g}", "eps_fraction": f} for f in (0.01, 0.02, 0.05)]
