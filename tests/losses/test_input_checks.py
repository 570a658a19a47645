"""Input checks shared by every public loss: complex inputs and bad temperatures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses as L

RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
FEATURES = jnp.asarray(RNG.normal(size=(3, 2, 2, 2)), jnp.float32)
LABELS = jnp.array([0, 1, 2])

# name -> loss(x) of a real or complex array x shaped like LOGITS (or FEATURES).
LOGIT_LOSSES = {
  "kd_loss": lambda x: L.kd_loss(x, LOGITS),
  "kd_loss_teacher": lambda x: L.kd_loss(LOGITS, x),
  "kl_divergence": lambda x: L.kl_divergence(x, LOGITS),
  "reverse_kl": lambda x: L.reverse_kl(x, LOGITS),
  "generalized_jsd": lambda x: L.generalized_jsd(x, LOGITS),
  "total_variation": lambda x: L.total_variation(x, LOGITS),
  "skew_kl": lambda x: L.skew_kl(x, LOGITS),
  "skew_reverse_kl": lambda x: L.skew_reverse_kl(x, LOGITS),
  "soft_cross_entropy": lambda x: L.soft_cross_entropy(LOGITS, x),
  "dkd_loss": lambda x: L.dkd_loss(x, LOGITS, LABELS),
  "standardize_logits": lambda x: L.standardize_logits(x),
  "standardized_kd_loss": lambda x: L.standardized_kd_loss(x, LOGITS),
  "dist_loss": lambda x: L.dist_loss(x, LOGITS),
  "taid_loss": lambda x: L.taid_loss(x, LOGITS, t=0.5),
  "cwtm_weights": lambda x: L.cwtm_weights(x),
  "dkpp_targets": lambda x: L.dkpp_targets(jax.random.PRNGKey(0), x),
  "ground_truth_weighted_targets": lambda x: L.ground_truth_weighted_targets(x, LABELS, alpha=0.5),
  "token_kd_loss": lambda x: L.token_kd_loss(x[None], LOGITS[None]),
  "sequence_kd_loss": lambda x: L.sequence_kd_loss(LOGITS[None], x[None]),
}
FEATURE_LOSSES = {
  "fitnets_loss": lambda x: L.fitnets_loss(x, FEATURES),
  "attention_transfer_loss": lambda x: L.attention_transfer_loss(x, FEATURES),
  "rkd_distance_loss": lambda x: L.rkd_distance_loss(x, FEATURES),
  "rkd_angle_loss": lambda x: L.rkd_angle_loss(FEATURES, x),
  "pkt_loss": lambda x: L.pkt_loss(x, FEATURES),
  "similarity_preserving_loss": lambda x: L.similarity_preserving_loss(x, FEATURES),
  "linear_cka": lambda x: L.linear_cka(x, FEATURES),
  "rbf_cka": lambda x: L.rbf_cka(x, FEATURES),
  "cka_loss": lambda x: L.cka_loss(x, FEATURES),
}


@pytest.mark.parametrize("name", sorted(LOGIT_LOSSES) + sorted(FEATURE_LOSSES))
def test_complex_inputs_are_rejected_at_trace_time(name):
  fn, x = (LOGIT_LOSSES[name], LOGITS) if name in LOGIT_LOSSES else (FEATURE_LOSSES[name], FEATURES)
  jax.eval_shape(fn, x)  # real inputs are fine
  with pytest.raises(ValueError, match="must be real"):
    jax.eval_shape(fn, x.astype(jnp.complex64))


def test_chunked_losses_reject_complex_inputs():
  hs = jnp.ones((5, 3), jnp.complex64)
  with pytest.raises(ValueError, match="student_hidden"):
    L.chunked_kd_loss(hs, jnp.ones((3, 4)), jnp.ones((5, 2)), jnp.ones((2, 4)))


TEMPERATURE_LOSSES = {
  "kd_loss": lambda s, t, T: L.kd_loss(s, t, temperature=T),
  "kl_divergence": lambda s, t, T: L.kl_divergence(s, t, temperature=T),
  "reverse_kl": lambda s, t, T: L.reverse_kl(s, t, temperature=T),
  "generalized_jsd": lambda s, t, T: L.generalized_jsd(s, t, temperature=T),
  "total_variation": lambda s, t, T: L.total_variation(s, t, temperature=T),
  "skew_kl": lambda s, t, T: L.skew_kl(s, t, temperature=T),
  "skew_reverse_kl": lambda s, t, T: L.skew_reverse_kl(s, t, temperature=T),
  "soft_cross_entropy": lambda s, t, T: L.soft_cross_entropy(s, jax.nn.softmax(t), temperature=T),
  "dkd_loss": lambda s, t, T: L.dkd_loss(s, t, LABELS, temperature=T),
  "standardized_kd_loss": lambda s, t, T: L.standardized_kd_loss(s, t, temperature=T),
  "dist_loss": lambda s, t, T: L.dist_loss(s, t, temperature=T),
  "taid_loss": lambda s, t, T: L.taid_loss(s, t, t=0.5, temperature=T),
  "token_kd_loss": lambda s, t, T: L.token_kd_loss(s[None], t[None], temperature=T),
}


@pytest.mark.parametrize("name", sorted(TEMPERATURE_LOSSES))
def test_bad_temperatures(name):
  fn = TEMPERATURE_LOSSES[name]
  s = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
  for bad in (np.inf, 0.0, -1.0, np.nan):
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
      fn(s, LOGITS, bad)
  # Under jit the temperature is traced: T <= 0 gives NaN, not a plausible number.
  jitted = jax.jit(fn)
  assert np.all(np.isfinite(np.asarray(jitted(s, LOGITS, 2.0))))
  for bad in (0.0, -2.0):
    assert np.all(np.isnan(np.asarray(jitted(s, LOGITS, bad)))), bad
