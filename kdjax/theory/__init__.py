"""Self-distillation theory: closed forms and training dynamics, checked against simulations.

* :mod:`kdjax.theory.kernel_distillation`: repeated self-distillation in kernel ridge regression
  (Mobahi, Farajtabar & Bartlett 2020; Borup & Andersen 2021): per-round predictions, the
  infinite-round limit, the fit-error-budget variant with its collapse round, and the
  optimal label weight.
* :mod:`kdjax.theory.collapse`: lower and upper bounds on that collapse round (kdjax's own
  derivation, each attained on some spectrum).
* :mod:`kdjax.theory.gp`: data- and distribution-centric GP regression self-distillation
  (Borup & Andersen 2023).
* :mod:`kdjax.theory.gpc`: continuous-Bernoulli GP classification with the Laplace
  approximation and its data- and distribution-centric self-distillation (Borup & Andersen
  2023).
* :mod:`kdjax.theory.linear_distillation`: gradient flow of linear and deep linear students
  on a teacher's outputs (Phuong & Lampert 2019), checked against gradient descent.
* :mod:`kdjax.theory.jepa`: per-feature dynamics and critical times of deep linear JEPA
  (stop-gradient self-distillation) and MAE (Littwin et al. 2024).
* :mod:`kdjax.theory.arguments`: the argument checks they share (kernel symmetric and PSD, ...).
* :mod:`kdjax.theory.results`: the computation of each ``job='theory'`` experiment (data in
  :mod:`kdjax.theory.problems`). The runner, which writes on :mod:`kdjax.jobs`, is
  :mod:`kdjax.theory_job` and its figures :mod:`kdjax.theory_plots`, outside this leaf
  package (it imports only jax, numpy and scipy).

:mod:`krr`, :mod:`gp` and :mod:`gpc` names are also exported here; the dynamics modules are
used as modules (``from kdjax.theory import jepa``).
"""

from kdjax.theory import gp, gpc, kernel_distillation
from kdjax.theory.gp import *  # noqa: F401,F403
from kdjax.theory.gpc import *  # noqa: F401,F403
from kdjax.theory.kernel_distillation import *  # noqa: F401,F403

__all__ = kernel_distillation.__all__ + gp.__all__ + gpc.__all__
