"""Few-step students of flow/diffusion teachers: pure jnp losses, ODE samplers, metrics and
jitted sharded train steps.

* :mod:`~kdjax.diffusion.flow`: the flow-matching (rectified-flow) teacher's interpolant and
  loss, the EDM view (noise levels, denoiser, preconditioning);
* :mod:`~kdjax.diffusion.samplers`: Euler and Heun with an exact number of function
  evaluations;
* students: :mod:`~kdjax.diffusion.progressive` (Salimans & Ho 2022),
  :mod:`~kdjax.diffusion.consistency` (Song et al. 2023; Song & Dhariwal 2024),
  :mod:`~kdjax.diffusion.dmd` (Yin et al. 2024), :mod:`~kdjax.diffusion.flow_map`
  (Boffi et al. 2025);
* :mod:`~kdjax.diffusion.metrics`: energy distance, mode coverage, digits Fréchet distance;
* :mod:`~kdjax.diffusion.steps`: the jitted, sharded train steps (imports flax/optax models
  through ``kdjax.train``; the modules above import only jax, numpy and scipy).
"""

from kdjax.diffusion import consistency, dmd, flow, flow_map, metrics, progressive, samplers

__all__ = ["consistency", "dmd", "flow", "flow_map", "metrics", "progressive", "samplers"]
