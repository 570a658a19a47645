r"""On-device data augmentation inside the jitted step (keys derived from seed and step).

``random_crop_flip`` is the standard CIFAR augmentation: zero-pad by ``pad`` pixels, take
a random crop of the original size, flip horizontally with probability 1/2, independently
per example (He et al. (2016), "Deep residual learning for image recognition", Sec. 4.2).
``shift`` (crop without flip, pad 2) suits digits. Applied inside the KD step, teacher
and student see the same augmented images (Beyer et al. (2022), "Knowledge
distillation: a good teacher is patient and consistent").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_crop_flip(
  rng: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True
) -> jax.Array:
  """Randomly crops (after zero padding) and, if ``flip``, flips ``images [batch, H, W, C]``."""
  if images.ndim != 4:
    raise ValueError(f"images must be [batch, height, width, channels], got shape {images.shape}")
  batch, height, width, _ = images.shape
  crop_key, flip_key = jax.random.split(rng)
  offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(flip_key, 0.5 if flip else 0.0, (batch,))
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def one(image, offset, flip):
    crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


AUGMENTATIONS = {
  "none": None,
  "crop_flip": random_crop_flip,  # CIFAR
  "shift": lambda rng, x: random_crop_flip(rng, x, pad=2, flip=False),  # digits: +-2 px
}


def get(name: str):
  """The augmentation called ``name`` ('none' gives None)."""
  if name not in AUGMENTATIONS:
    raise ValueError(f"config.augment must be one of {sorted(AUGMENTATIONS)}, got {name!r}")
  return AUGMENTATIONS[name]
