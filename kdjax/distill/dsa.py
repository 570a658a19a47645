r"""DSA: differentiable siamese augmentation, in pure ``jax.numpy``.

Zhao & Bilen (2021), "Dataset Condensation with Differentiable Siamese Augmentation"
(ICML). Every transform is differentiable in the images, and the *same* sampled
transform :math:`\mathcal A_\omega` is applied to the real and the synthetic images it
compares (siamese), so a matching loss :math:`D(f(\mathcal A_\omega(X_{real})),
f(\mathcal A_\omega(X_{syn})))` is augmented without the two sides drifting apart; the
gradient reaches the synthetic images through :math:`\mathcal A_\omega`.

The transforms and ranges of the paper's code (``ParamDiffAug``), one picked at random
per draw ("single" mode, as used by DC/DSA, DM and MTT):

* ``color``: brightness :math:`x + (u - \tfrac12)`, saturation
  :math:`\bar x_c + 2u\,(x - \bar x_c)` (channel mean; the identity for one channel),
  contrast :math:`\bar x + (u + \tfrac12)(x - \bar x)` (image mean), :math:`u \sim U(0,1)`
  each;
* ``crop``: a translation by up to :math:`\lfloor 0.125\,H + \tfrac12\rfloor` pixels
  (zero fill);
* ``cutout``: a zeroed square of side :math:`\lfloor H/2 + \tfrac12\rfloor` at a random centre;
* ``flip``: a horizontal flip with probability 1/2 (not in :data:`DIGITS`: it changes digits);
* ``scale``: the affine map :math:`\mathrm{diag}(s_x, s_y)`, :math:`s \sim U(1/1.2, 1.2)`;
* ``rotate``: a rotation by :math:`\theta \sim U(-15^\circ, 15^\circ)`;

``scale`` and ``rotate`` resample with PyTorch's ``affine_grid``/``grid_sample``
(``align_corners=True``, bilinear, zeros outside): output pixel :math:`(h, w)` at
normalised coordinates :math:`(x_w, y_h) \in [-1, 1]^2` reads the input at
:math:`\Theta\,(x_w, y_h, 1)^\top`. For fixed parameters every transform is affine in
the images, so gradients are exact.

Here one parameter set is drawn per *class* and shared by that class's real and
synthetic images (:func:`augment`: ``params[label]``), the siamese pairing of the
per-class losses of DC, DSA and DM.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["TRANSFORMS", "DIGITS", "parse_strategy", "sample", "apply", "augment"]

TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")
# The paper's strategy 'color_crop_cutout_flip_scale_rotate' without the flip: for digits.
DIGITS = "color_crop_cutout_scale_rotate"

RATIO_SCALE = 1.2
RATIO_ROTATE = 15.0  # degrees
RATIO_CROP_PAD = 0.125
RATIO_CUTOUT = 0.5
BRIGHTNESS, SATURATION, CONTRAST = 1.0, 2.0, 0.5


def parse_strategy(strategy: str) -> tuple[str, ...]:
  """``'color_crop_...'`` as a tuple of transform names; ValueError names an unknown one."""
  names = tuple(s for s in str(strategy).split("_") if s)
  unknown = [n for n in names if n not in TRANSFORMS]
  if not names or unknown:
    raise ValueError(
      f"a DSA strategy is '_'-joined names of {list(TRANSFORMS)}, got {strategy!r}"
      + (f" (unknown: {unknown})" if unknown else "")
    )
  return names


def sample(key: jax.Array, n: int, strategy: str, image_size: int) -> dict:
  """``n`` independent parameter sets of ``strategy`` (each a dict entry with leading [n]).

  ``choice`` is the index into ``parse_strategy(strategy)`` of the one transform applied.
  """
  names = parse_strategy(strategy)
  keys = jax.random.split(key, 10)
  u = lambda k, shape=(n,): jax.random.uniform(k, shape)
  shift = int(image_size * RATIO_CROP_PAD + 0.5)
  cut = int(image_size * RATIO_CUTOUT + 0.5)
  return {
    "choice": jax.random.randint(keys[0], (n,), 0, len(names)),
    "color": u(keys[1], (n, 3)),
    "translate": jax.random.randint(keys[2], (n, 2), -shift, shift + 1),
    "cutout": jax.random.randint(keys[3], (n, 2), 0, image_size + (1 - cut % 2)),
    "flip": u(keys[4]) < 0.5,
    "scale": u(keys[5], (n, 2)) * (RATIO_SCALE - 1.0 / RATIO_SCALE) + 1.0 / RATIO_SCALE,
    "rotate": (u(keys[6]) - 0.5) * 2 * RATIO_ROTATE / 180 * math.pi,
  }


def _grid_sample(image: jax.Array, theta: jax.Array) -> jax.Array:
  """``grid_sample(image, affine_grid(theta))`` of one [H, W, C] image (align_corners=True)."""
  h, w, _ = image.shape
  ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w), indexing="ij")
  x_in = theta[0, 0] * xs + theta[0, 1] * ys + theta[0, 2]
  y_in = theta[1, 0] * xs + theta[1, 1] * ys + theta[1, 2]
  ix, iy = (x_in + 1) / 2 * (w - 1), (y_in + 1) / 2 * (h - 1)
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  out = jnp.zeros_like(image)
  for dy in (0, 1):
    for dx in (0, 1):
      xc, yc = x0 + dx, y0 + dy
      weight = (1 - jnp.abs(ix - xc)) * (1 - jnp.abs(iy - yc))
      inside = (xc >= 0) & (xc <= w - 1) & (yc >= 0) & (yc <= h - 1)
      xi = jnp.clip(xc, 0, w - 1).astype(jnp.int32)
      yi = jnp.clip(yc, 0, h - 1).astype(jnp.int32)
      out = out + jnp.where(inside, weight, 0.0)[..., None] * image[yi, xi]
  return out


def _color(image, u):
  image = image + (u[0] - 0.5) * BRIGHTNESS
  mean = jnp.mean(image, axis=-1, keepdims=True)
  image = (image - mean) * (u[1] * SATURATION) + mean
  mean = jnp.mean(image)
  return (image - mean) * (u[2] + CONTRAST) + mean


def _translate(image, t):
  h, w, _ = image.shape
  rows, cols = jnp.arange(h) + t[0], jnp.arange(w) + t[1]
  inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
  taken = image[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]
  return jnp.where(inside[..., None], taken, 0.0)


def _cutout(image, offset):
  h, w, _ = image.shape
  cut = int(h * RATIO_CUTOUT + 0.5)
  start = offset - cut // 2
  rows = (jnp.arange(h) >= start[0]) & (jnp.arange(h) < start[0] + cut)
  cols = (jnp.arange(w) >= start[1]) & (jnp.arange(w) < start[1] + cut)
  return jnp.where((rows[:, None] & cols[None, :])[..., None], 0.0, image)


def _one(image: jax.Array, p: dict, names: tuple[str, ...]) -> jax.Array:
  sx, sy = p["scale"][0], p["scale"][1]
  c, s = jnp.cos(p["rotate"]), jnp.sin(p["rotate"])
  branches = {
    "color": lambda x: _color(x, p["color"]),
    "crop": lambda x: _translate(x, p["translate"]),
    "cutout": lambda x: _cutout(x, p["cutout"]),
    "flip": lambda x: jnp.where(p["flip"], x[:, ::-1], x),
    "scale": lambda x: _grid_sample(x, jnp.array([[sx, 0.0, 0.0], [0.0, sy, 0.0]])),
    "rotate": lambda x: _grid_sample(
      x, jnp.stack([jnp.stack([c, -s, 0.0]), jnp.stack([s, c, 0.0])])
    ),
  }
  return jax.lax.switch(p["choice"], [branches[n] for n in names], image)


def apply(params: dict, x: jax.typing.ArrayLike, strategy: str) -> jax.Array:
  """Transforms image ``i`` of ``x`` [n, H, W, C] by parameter set ``i`` of ``params``."""
  names = parse_strategy(strategy)
  x = jnp.asarray(x)
  return jax.vmap(lambda image, p: _one(image, p, names))(x, params)


def augment(
  key: jax.Array,
  x: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  strategy: str,
  *,
  num_classes: int,
) -> jax.Array:
  """The siamese augmentation: image ``i`` gets the transform drawn for class ``labels[i]``.

  ``sample(key, num_classes, ...)`` is drawn once; the same ``key`` on the real and the
  synthetic images of one class gives both the same transform.
  """
  x, labels = jnp.asarray(x), jnp.asarray(labels)
  params = sample(key, num_classes, strategy, x.shape[1])
  return apply(jax.tree.map(lambda a: a[labels], params), x, strategy)
