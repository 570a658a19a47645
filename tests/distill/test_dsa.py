"""DSA (kdjax.distill.dsa) against float64 NumPy references written from the paper's code
(PyTorch affine_grid/grid_sample with align_corners=True, zero fill), finite differences
of the images' gradient, and the siamese property."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.distill import dsa

STRATEGY = "color_crop_cutout_flip_scale_rotate"


def grid_sample_reference(image, theta):
  """PyTorch's grid_sample(affine_grid(theta), align_corners=True), bilinear, zeros: loops."""
  h, w, c = image.shape
  out = np.zeros((h, w, c))
  for i in range(h):
    for j in range(w):
      xn, yn = -1 + 2 * j / (w - 1), -1 + 2 * i / (h - 1)
      xi = (theta[0, 0] * xn + theta[0, 1] * yn + theta[0, 2] + 1) / 2 * (w - 1)
      yi = (theta[1, 0] * xn + theta[1, 1] * yn + theta[1, 2] + 1) / 2 * (h - 1)
      x0, y0 = math.floor(xi), math.floor(yi)
      for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
          if 0 <= yy < h and 0 <= xx < w:
            out[i, j] += (1 - abs(xi - xx)) * (1 - abs(yi - yy)) * image[yy, xx]
  return out


def reference(image, p, names):
  """One image's transform in float64 NumPy, from the DSA code's formulas."""
  h, w, _ = image.shape
  name = names[int(p["choice"])]
  if name == "color":
    u = np.asarray(p["color"], np.float64)
    x = image + (u[0] - 0.5)
    x = (x - x.mean(-1, keepdims=True)) * (2 * u[1]) + x.mean(-1, keepdims=True)
    return (x - x.mean()) * (u[2] + 0.5) + x.mean()
  if name == "crop":
    padded, (ti, tj) = np.pad(image, ((h, h), (w, w), (0, 0))), np.asarray(p["translate"])
    return padded[h + ti : 2 * h + ti, w + tj : 2 * w + tj]
  if name == "cutout":
    cut, (oi, oj) = int(h * 0.5 + 0.5), np.asarray(p["cutout"])
    x = image.copy()
    x[
      max(oi - cut // 2, 0) : max(oi - cut // 2 + cut, 0),
      max(oj - cut // 2, 0) : max(oj - cut // 2 + cut, 0),
    ] = 0
    return x
  if name == "flip":
    return image[:, ::-1] if bool(p["flip"]) else image
  if name == "scale":
    sx, sy = np.asarray(p["scale"], np.float64)
    return grid_sample_reference(image, np.array([[sx, 0, 0], [0, sy, 0]]))
  t = float(p["rotate"])
  return grid_sample_reference(
    image, np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0]])
  )


APPLY = jax.jit(dsa.apply, static_argnums=2)
AUGMENT = jax.jit(functools.partial(dsa.augment, strategy=dsa.DIGITS, num_classes=3))


@functools.cache
def case(n=24, size=6, channels=2):
  x = np.asarray(jax.random.normal(jax.random.key(1), (n, size, size, channels)))
  params = dsa.sample(jax.random.key(2), n, STRATEGY, size)
  return x, params


def test_every_transform_matches_the_numpy_reference():
  x, params = case()
  names = dsa.parse_strategy(STRATEGY)
  got = np.asarray(APPLY(params, x, STRATEGY))
  seen = set()
  for i in range(len(x)):
    p = jax.tree.map(lambda a: np.asarray(a[i]), params)
    seen.add(names[int(p["choice"])])
    np.testing.assert_allclose(got[i], reference(x[i].astype(np.float64), p, names), atol=2e-5)
  assert seen == set(names)  # every transform was exercised


def test_rotation_by_a_right_angle_is_rot90_and_identity_params_are_the_identity():
  x, params = case()
  # Image 0 rotated by 90 degrees, image 1 scaled by 1 (same shapes: one compilation).
  p = {
    **params,
    "choice": params["choice"].at[:2].set(jnp.array([5, 4])),
    "rotate": params["rotate"].at[0].set(math.pi / 2),
    "scale": params["scale"].at[1].set(1.0),
  }
  got = APPLY(p, x, STRATEGY)
  np.testing.assert_allclose(got[0], np.rot90(x[0], k=1, axes=(0, 1)), atol=1e-5)
  np.testing.assert_allclose(got[1], x[1], atol=1e-6)


def test_gradient_in_the_images_matches_finite_differences():
  x, params = case()
  weights = np.asarray(jax.random.normal(jax.random.key(3), x.shape))
  with jax.enable_x64(True):
    x64 = jnp.asarray(x, jnp.float64)
    vg = jax.jit(
      jax.value_and_grad(lambda x: jnp.sum(jnp.tanh(dsa.apply(params, x, STRATEGY)) * weights))
    )
    f = lambda x: vg(x)[0]
    grad = np.asarray(vg(x64)[1])
    rng = np.random.default_rng(0)
    for _ in range(4):
      d = rng.normal(size=x.shape)
      eps = 1e-6
      fd = (float(f(x64 + eps * d)) - float(f(x64 - eps * d))) / (2 * eps)
      np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6)
  assert np.abs(grad).sum() > 0


def test_siamese_same_key_and_class_same_transform():
  x, _ = case()
  labels = jnp.array([0, 1, 2] * 8)
  a = AUGMENT(jax.random.key(7), x, labels)
  # Any other batch (here: permuted, image 0 copied into image 3, both class 0) gets, per
  # image, the transform of its class: the "real" and "synthetic" sides match.
  perm = np.random.default_rng(0).permutation(len(x))
  other = x[perm].copy()
  b = AUGMENT(jax.random.key(7), other, labels[perm])
  np.testing.assert_allclose(b, a[perm], atol=1e-6)
  i, j = np.flatnonzero(np.asarray(labels[perm]) == 0)[:2]
  other[j] = other[i]
  c = AUGMENT(jax.random.key(7), other, labels[perm])
  np.testing.assert_array_equal(c[i], c[j])
  assert not np.allclose(AUGMENT(jax.random.key(8), x, labels), a)


def test_bad_strategy():
  with pytest.raises(ValueError, match=r"unknown: \['zoom'\]"):
    dsa.parse_strategy("color_zoom")
