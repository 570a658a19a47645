"""kdjax: knowledge distillation in JAX.

Subpackages (imports only point downward in this list):
  kdjax.losses   pure jnp KD losses (logit, feature, sequence-level); needs only jax.
  kdjax.kernels  neural-tangents compatible NNGP/NTK kernels, empirical NTK, tiled Gram.
  kdjax.krr      kernel ridge regression.
  kdjax.distill  dataset distillation (KIP).
  kdjax.theory   self-distillation closed forms.
  kdjax.models   flax models.
  kdjax.data     input pipelines (tfds and embedded offline datasets).
  kdjax.train    train state, jitted sharded steps, the training loop.
  kdjax.jobs     the parts every job runs on: workdir + lock, orbax checkpoints, metrics
                 (jsonl + TensorBoard + progress), figures, schedules.

Leaf modules that every subpackage may import (jax and numpy only):
  kdjax.mesh     the device mesh: one axis, 'data', over all devices of all processes.
  kdjax.checks   argument checks shared across subpackages (concreteness, kernel matrices).

Only `kdjax.losses` is imported eagerly, so `import kdjax` stays light.
"""

from kdjax import losses

__version__ = "0.1.0"
__all__ = ["losses"]
