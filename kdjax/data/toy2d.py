r"""Exact 2-D distributions for diffusion distillation, and digits as images in [0, 1].

* ``eight_gaussians``: the equal mixture
  :math:`\frac18 \sum_{k=0}^{7} \mathcal N\big(2(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4}),
  0.1^2 I\big)` (the "8 Gaussians" of Grathwohl et al. (2019), FFJORD, and of the
  flow-matching papers);
* ``two_moons``: ``sklearn.datasets.make_moons(n, noise=0.05, random_state=seed)``, not
  rescaled (the upper moon is centred at (0, 0), the lower at (1, 0.5)).

``sample(name, n, seed=...)`` draws ``n`` exact float32 samples ``[n, 2]``; the same
``(name, n, seed)`` always gives the same array. ``MODES`` holds the eight means of
``eight_gaussians``. ``digits_images()`` gives scikit-learn's 1,797 8x8 digits (the
embedded ``digits`` dataset of :mod:`kdjax.data.datasets`, train and test splits together)
as float32 ``[1797, 8, 8]`` in [0, 1].
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOY2D", "MODES", "sample", "digits_images"]

TOY2D = ("eight_gaussians", "two_moons")

MODES = np.stack(
  [2.0 * np.cos(np.arange(8) * np.pi / 4), 2.0 * np.sin(np.arange(8) * np.pi / 4)], axis=1
)
MODE_STD = 0.1


def sample(name: str, n: int, *, seed: int = 0) -> np.ndarray:
  """``n`` exact samples ``[n, 2]`` (float32) of the 2-D distribution ``name``.

  Args:
    name: one of ``TOY2D``.
    n: number of samples (>= 1).
    seed: the NumPy seed (``np.random.default_rng(seed)`` for ``eight_gaussians``,
      ``random_state=seed`` of ``make_moons`` for ``two_moons``).

  Raises:
    ValueError: unknown ``name`` or ``n < 1``.
  """
  if name not in TOY2D:
    raise ValueError(f"dataset name must be one of {list(TOY2D)}, got {name!r}")
  if int(n) < 1:
    raise ValueError(f"n must be >= 1, got {n!r}")
  n = int(n)
  if name == "eight_gaussians":
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 8, size=n)
    x = MODES[k] + MODE_STD * rng.standard_normal((n, 2))
  else:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=seed)
  return x.astype(np.float32)


def digits_images() -> np.ndarray:
  """All 1,797 scikit-learn 8x8 digits as float32 ``[1797, 8, 8]`` in [0, 1] (pixels / 16).

  Train split first, then test (the fixed split of ``kdjax.data.load('digits')``).
  """
  from kdjax.data.datasets import load

  ds = load("digits")
  return np.concatenate([ds.x_train, ds.x_test])[..., 0]
