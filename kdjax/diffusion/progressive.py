r"""Progressive distillation (Salimans & Ho (2022), "Progressive distillation for fast
sampling of diffusion models"), on the linear interpolant of :mod:`kdjax.diffusion.flow`.

A teacher sampler of ``N`` uniform steps is distilled into a student of ``N/2`` steps: one
student step from :math:`t` to :math:`t'' = t + 2h` must land where two teacher steps
land. On the path :math:`z_t = \alpha_t x_1 + \sigma_t x_0` with :math:`\alpha_t = t,
\sigma_t = 1 - t`, DDIM's step (the paper's sampler) is exactly an Euler step of the
velocity ODE, so the paper's Algorithm 2 target

.. math::
  \tilde x = \frac{z_{t''} - (\sigma_{t''}/\sigma_t)\,z_t}{\alpha_{t''} -
  (\sigma_{t''}/\sigma_t)\,\alpha_t}

(the data prediction whose single DDIM step reaches the teacher's :math:`z_{t''}`) is the
velocity :math:`\tilde v = (z_{t''} - z_t)/(t'' - t)` (:func:`progressive_target`), and the
loss with the paper's "truncated SNR" weight :math:`\max(\mathrm{SNR}_t, 1)\lVert\hat x -
\tilde x\rVert^2`, :math:`\hat x = z_t + (1 - t)\,v_\theta`, is
:math:`\max(t, 1-t)^2\,\lVert v_\theta - \tilde v\rVert^2` (:func:`progressive_loss`, mean
over data dimensions).

Rounds halve the steps: ``rounds`` rounds from a ``N``-step teacher end at ``N / 2**rounds``
steps (64 -> 32 -> ... -> 1 is 6 rounds); :func:`round_steps` checks the division.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kdjax.diffusion.flow import per_example_mean

__all__ = ["round_steps", "progressive_target", "progressive_loss", "student_times"]


def round_steps(teacher_steps: int, rounds: int) -> list[int]:
  """The student's number of steps after each round: ``[N/2, N/4, ..., N/2**rounds]``.

  Raises:
    ValueError: ``rounds < 1``, ``teacher_steps < 2``, or ``2**rounds`` does not divide
      ``teacher_steps`` (each round must halve a whole number of steps).
  """
  if int(rounds) != rounds or rounds < 1:
    raise ValueError(f"progressive rounds must be an integer >= 1, got {rounds!r}")
  if int(teacher_steps) != teacher_steps or teacher_steps < 2:
    raise ValueError(f"progressive teacher_steps must be an integer >= 2, got {teacher_steps!r}")
  if teacher_steps % (2**rounds):
    raise ValueError(
      f"progressive rounds={rounds} halve the teacher's steps {rounds} times, so 2**rounds="
      f"{2**rounds} must divide teacher_steps={teacher_steps}"
    )
  return [teacher_steps // 2**r for r in range(1, rounds + 1)]


def progressive_target(velocity: Callable, z_t, t, *, h):
  r"""The student's target velocity: two Euler (= DDIM) teacher steps of size ``h`` from
  ``(z_t, t)``, :math:`\tilde v = (z_{t+2h} - z_t)/(2h)`; no gradient flows through it.

  Args:
    velocity: the teacher (the previous round's student) ``velocity(z, t[B]) -> [B, ...]``.
    z_t: ``[B, ...]`` points on the path at ``t``.
    t: ``[B]`` times on the teacher's grid.
    h: the teacher's step size ``1/N`` (scalar).
  """
  z1 = z_t + h * velocity(z_t, t)
  z2 = z1 + h * velocity(z1, t + h)
  return jax.lax.stop_gradient((z2 - z_t) / (2.0 * h))


def progressive_loss(v_student, v_target, t, *, where=None):
  r"""Per-example :math:`\max(t, 1-t)^2 \cdot \mathrm{mean}(v_\theta - \tilde v)^2`, the
  truncated-SNR weighted x-space loss of Salimans & Ho (2022), eq. (9), in velocity form."""
  weight = jnp.maximum(t, 1.0 - t) ** 2
  loss = weight * per_example_mean(jnp.square(v_student - v_target))
  return loss if where is None else jnp.where(where, loss, 0.0)


def student_times(steps: int, rng, batch: int, dtype=jnp.float32):
  """Times ``[B]`` drawn uniformly from the student's grid ``{0, 1/steps, ..., 1-1/steps}``."""
  k = jax.random.randint(rng, (batch,), 0, steps)
  return k.astype(dtype) / steps
