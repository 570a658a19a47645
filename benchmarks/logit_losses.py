"""Accuracy, safety and speed of the logit KD losses of `kdjax.losses`.

Three tables, each against a peer or a limit:

1. accuracy: largest absolute error, and largest relative error over the examples whose
   loss is at least 1e-3 (below that, float32 cancellation dominates the relative error),
   of float32 and bfloat16-input results against the same loss computed in float64 (x64)
   from the same (rounded) inputs;
2. safety against optax's KL (`optax.losses.kl_divergence(log_softmax(s), softmax(t))`):
   share of negative values for bfloat16 near-equal logits, NaN/inf in values and
   gradients for `-inf` logits at the same classes;
3. speed: jitted loss + gradient of `kd_loss` against the optax-based Hinton KD loss
   (time ratio, float32 and bfloat16 inputs).

  .venv/bin/python -m benchmarks.logit_losses            # [B, V] = [256, 32000] for speed
  .venv/bin/python -m benchmarks.logit_losses --batch=64 --vocab=8000 --repeats=5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks import common
from kdjax import losses as L

_BATCH = flags.DEFINE_integer("batch", 256, "Rows B of the speed table.")
_VOCAB = flags.DEFINE_integer("vocab", 32000, "Classes V of the speed table.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls (the median is printed).")

DIVERGENCES = {
  "kd_loss(T=2)": lambda s, t: L.kd_loss(s, t, temperature=2.0),
  "kl_divergence": L.kl_divergence,
  "reverse_kl": L.reverse_kl,
  "generalized_jsd(0.5)": L.generalized_jsd,
  "total_variation": L.total_variation,
  "skew_kl(0.1)": L.skew_kl,
  "skew_reverse_kl(0.1)": L.skew_reverse_kl,
  "dkd_loss": lambda s, t: L.dkd_loss(s, t, jnp.argmax(t, -1)),
  "standardized_kd_loss": L.standardized_kd_loss,
  "taid_loss(t=0.5)": lambda s, t: L.taid_loss(s, t, t=0.5),
}


def optax_kd(s, t, temperature=1.0):
  s, t = s.astype(jnp.float32) / temperature, t.astype(jnp.float32) / temperature
  return temperature**2 * optax.losses.kl_divergence(jax.nn.log_softmax(s), jax.nn.softmax(t))


def optax_kd_native_dtype(s, t):
  """optax's KL run in the inputs' own dtype (what a bfloat16 model gets by default)."""
  return optax.losses.kl_divergence(jax.nn.log_softmax(s), jax.nn.softmax(t))


def accuracy_table(rng):
  t = rng.standard_normal((512, 100)) * 4
  s = t + rng.standard_normal(t.shape)
  print("| loss | float32: max abs. / rel. error | bfloat16 inputs: max abs. / rel. error |")
  print("|---|---|---|")
  for name, fn in DIVERGENCES.items():
    f = jax.jit(fn)
    errors = []
    for dtype in [jnp.float32, jnp.bfloat16]:
      s_in, t_in = jnp.asarray(s, dtype), jnp.asarray(t, dtype)
      with jax.enable_x64(True):
        exact = np.asarray(
          jax.jit(fn)(
            jnp.asarray(np.asarray(s_in, np.float64)), jnp.asarray(np.asarray(t_in, np.float64))
          )
        )
      got = np.asarray(f(s_in, t_in), np.float64)
      error = np.abs(got - exact)
      errors.append(f"{error.max():.1e} / {np.max((error / exact)[exact >= 1e-3]):.1e}")
    print(f"| {name} | {errors[0]} | {errors[1]} |")


def safety_table(rng):
  t = jnp.asarray(rng.standard_normal((4096, 50)) * 10, jnp.bfloat16)
  s = (t.astype(jnp.float32) + 1e-3 * rng.standard_normal(t.shape)).astype(jnp.bfloat16)
  s_inf = jnp.asarray(rng.standard_normal((64, 50)), jnp.float32).at[:, :5].set(-jnp.inf)
  t_inf = jnp.asarray(rng.standard_normal((64, 50)), jnp.float32).at[:, :5].set(-jnp.inf)

  def row(name, fn):
    negative = float(jnp.mean(jax.jit(fn)(s, t) < 0))
    value, grad = jax.jit(jax.value_and_grad(lambda a: jnp.sum(fn(a, t_inf))))(s_inf)
    finite = bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))
    print(f"| {name} | {100 * negative:.1f}% | {'finite' if finite else 'NaN/inf'} |")

  print("| loss | negative values, bfloat16 near-equal logits | -inf logits: value and grad |")
  print("|---|---|---|")
  row("kdjax kl_divergence", L.kl_divergence)
  row("optax kl_divergence (float32 inside)", optax_kd)
  row("optax kl_divergence (input dtype)", optax_kd_native_dtype)


def speed_table(rng, batch, vocab, repeats):
  print(f"| [B, V] = [{batch}, {vocab}] | kdjax kd_loss | optax-based KD | ratio |")
  print("|---|---|---|---|")
  for dtype in [jnp.float32, jnp.bfloat16]:
    s = jnp.asarray(rng.standard_normal((batch, vocab)), dtype)
    t = jnp.asarray(rng.standard_normal((batch, vocab)), dtype)
    ours = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(L.kd_loss(a, b, temperature=2.0))))
    peer = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(optax_kd(a, b, 2.0))))
    np.testing.assert_allclose(float(ours(s, t)[0]), float(peer(s, t)[0]), rtol=1e-4)
    t_ours = common.time_call(ours, s, t, repeats=repeats)
    t_peer = common.time_call(peer, s, t, repeats=repeats)
    print(
      f"| {jnp.dtype(dtype).name} loss+grad | {1e3 * t_ours:.1f} ms | "
      f"{1e3 * t_peer:.1f} ms | {t_ours / t_peer:.2f} |"
    )


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  print(common.describe_devices() + "\n")
  accuracy_table(rng)
  print()
  safety_table(rng)
  print()
  speed_table(rng, _BATCH.value, _VOCAB.value, _REPEATS.value)


if __name__ == "__main__":
  app.run(main)
