"""Self-distillation theory: closed forms, checked against iterated solves.

* :mod:`kdjax.theory.krr`: repeated self-distillation in kernel ridge regression
  (Mobahi, Farajtabar & Bartlett 2020; Borup & Andersen 2021): per-round predictions, the
  infinite-round limit, the fit-error-budget variant with its collapse round, and the
  optimal label weight.
* :mod:`kdjax.theory.gp`: data- and distribution-centric GP regression self-distillation
  (Borup & Andersen 2023).
* :mod:`kdjax.theory.gpc`: continuous-Bernoulli GP classification with the Laplace
  approximation and its data-centric self-distillation (Borup & Andersen 2023).
* :mod:`kdjax.theory.experiments`: ``run(config, workdir)`` for ``job='theory'`` configs.
"""

from kdjax.theory import gp, gpc, krr
from kdjax.theory.gp import *  # noqa: F401,F403
from kdjax.theory.gpc import *  # noqa: F401,F403
from kdjax.theory.krr import *  # noqa: F401,F403

__all__ = krr.__all__ + gp.__all__ + gpc.__all__
