"""kdjax.kernels.predict against neural-tangents 0.6.5 values and explicit ODE integration.

`reference/predict.npz` comes from `reference/generate_predict.py` (neural-tangents 0.6.5,
jax 0.4.23, float64); see that script for its keys.
"""

import json
import os

import jax
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from kdjax.kernels import predict, stax

REF = dict(np.load(os.path.join(os.path.dirname(__file__), "reference", "predict.npz")))
CASES = {"noreg": (0.0, False), "relreg": (1e-2, False), "absreg": (3e-2, True)}
RTOL = 1e-6


def network():
  spec = json.loads(str(REF["spec"]))
  assert [name for name, _ in spec] == ["Dense", "Relu", "Dense", "Relu", "Dense"]
  dense = [
    stax.Dense(kw["width"], W_std=kw["W_std"], b_std=kw["b_std"])
    for name, kw in spec
    if name == "Dense"
  ]
  return stax.serial(dense[0], stax.Relu(), dense[1], stax.Relu(), dense[2])[2]


def close(got, want, what=""):
  """Equal to `RTOL` relative to the largest entry of `want`."""
  want = np.asarray(want)
  scale = max(float(np.max(np.abs(want))), 1e-300)
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


@pytest.mark.parametrize("case", CASES)
def test_ensemble_matches_neural_tangents(case):
  diag_reg, absolute = CASES[case]
  with jax.enable_x64(True):
    fn = predict.gradient_descent_mse_ensemble(
      network(),
      REF["x_train"],
      REF["y_train"],
      learning_rate=float(REF["learning_rate"]),
      diag_reg=diag_reg,
      diag_reg_absolute_scale=absolute,
    )
    for where, x in (("test", REF["x_test"]), ("train", None)):
      for when, t in (("t", REF["ts"]), ("inf", None)):
        got = fn(t, x, ("nngp", "ntk"), compute_cov=True)
        means = fn(t, x, ("nngp", "ntk"))
        for g in ("nngp", "ntk"):
          key = f"{case}/ensemble/{where}/{when}/{g}"
          close(getattr(got, g).mean, REF[key + "/mean"], key)
          close(getattr(got, g).covariance, REF[key + "/cov"], key)
          close(getattr(means, g), REF[key + "/mean"], key)
    single = fn(REF["ts"][2], REF["x_test"], "ntk", compute_cov=True)
  close(single.mean, REF[f"{case}/ensemble/test/t/ntk/mean"][2])
  close(single.covariance, REF[f"{case}/ensemble/test/t/ntk/cov"][2])


def test_times_zero_and_infinity_are_the_prior_and_the_posterior():
  with jax.enable_x64(True):
    fn = predict.gradient_descent_mse_ensemble(network(), REF["x_train"], REF["y_train"])
    at = fn(np.array([0.0, 1e9]), REF["x_test"], "ntk", compute_cov=True)
    inf = fn(None, REF["x_test"], "ntk", compute_cov=True)
  np.testing.assert_allclose(at.mean[0], 0.0, atol=1e-12)
  close(at.covariance[0], REF["nngp_tt"])  # untrained: the NNGP prior
  close(at.mean[1], inf.mean)
  close(at.covariance[1], inf.covariance)


@pytest.mark.parametrize("case", CASES)
def test_gradient_descent_mse_and_gp_inference_match_neural_tangents(case):
  diag_reg, absolute = CASES[case]
  kernels = {
    w: type("K", (), {"nngp": REF[f"nngp_{w}"], "ntk": REF[f"ntk_{w}"]}) for w in ("dd", "td", "tt")
  }
  with jax.enable_x64(True):
    gd = predict.gradient_descent_mse(
      REF["ntk_dd"],
      REF["y_train"],
      learning_rate=float(REF["learning_rate"]),
      diag_reg=diag_reg,
      diag_reg_absolute_scale=absolute,
    )
    for when, t in (("t", REF["ts"]), ("inf", None)):
      train, test = gd(t, REF["fx_train_0"], REF["fx_test_0"], REF["ntk_td"])
      close(train, REF[f"{case}/gd_mse/{when}/train"], when)
      close(test, REF[f"{case}/gd_mse/{when}/test"], when)
      # fx_train_0=None: test outputs only, with f_0(X) = 0 (as neural-tangents).
      close(
        gd(t, None, REF["fx_test_0"], REF["ntk_td"]), gd(t, 0.0, REF["fx_test_0"], REF["ntk_td"])[1]
      )
    gp = predict.gp_inference(
      kernels["dd"], REF["y_train"], diag_reg=diag_reg, diag_reg_absolute_scale=absolute
    )
    got = gp(("nngp", "ntk", "ntkgp"), kernels["td"], kernels["tt"])
  for g in ("nngp", "ntk", "ntkgp"):
    close(getattr(got, g).mean, REF[f"{case}/gp/{g}/mean"], g)
    close(getattr(got, g).covariance, REF[f"{case}/gp/{g}/cov"], g)


def test_max_learning_rate_matches_neural_tangents():
  size = REF["y_train"].size
  assert predict.max_learning_rate(REF["ntk_dd"], size) == pytest.approx(
    float(REF["max_lr"]), rel=1e-7
  )
  assert predict.max_learning_rate(REF["ntk_dd"], size, momentum=0.9) == pytest.approx(
    float(REF["max_lr_momentum"]), rel=1e-7
  )


def joint_generator(g, diag_reg):
  """`G` of the joint ODE `d[f_X; f_x]/dt = -(eta/N) G ([f_X; f_x] - [Y; 0])`."""
  n = len(REF["x_train"])
  k_dd = REF[f"{g}_dd"] + diag_reg * np.trace(REF[f"{g}_dd"]) / n * np.eye(n)
  m = len(REF["x_test"])
  gen = np.zeros((n + m, n + m))
  gen[:n, :n], gen[n:, :n] = k_dd, REF[f"{g}_td"]
  return gen


@pytest.mark.parametrize("g,diag_reg", [("ntk", 0.0), ("nngp", 0.0), ("ntk", 1e-2)])
def test_mean_matches_explicit_ode_integration(g, diag_reg):
  n, size, eta = len(REF["x_train"]), REF["y_train"].size, float(REF["learning_rate"])
  gen = joint_generator(g, diag_reg)
  target = np.concatenate([REF["y_train"], np.zeros((len(REF["x_test"]), 3))])

  def rhs(_, f):
    f = f.reshape(target.shape)
    return (-(eta / size) * gen @ (f - target)).reshape(-1)

  ts = REF["ts"][1:4]
  sol = scipy.integrate.solve_ivp(
    rhs, (0.0, ts[-1]), np.zeros(target.size), method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-14
  )
  with jax.enable_x64(True):
    fn = predict.gradient_descent_mse_ensemble(
      network(), REF["x_train"], REF["y_train"], learning_rate=eta, diag_reg=diag_reg
    )
    got = fn(ts, REF["x_test"], g)
  want = sol.y.T.reshape((len(ts),) + target.shape)[:, n:]
  np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.max(np.abs(want)))


def test_ntk_covariance_matches_the_propagated_prior():
  """Cov of `f_t = Y~ + e^{-eta G t/N} (f_0 - Y~)` with `f_0 ~ N(0, K_nngp)` on [X; x]."""
  n, size, eta = len(REF["x_train"]), REF["y_train"].size, float(REF["learning_rate"])
  gen = joint_generator("ntk", 0.0)
  prior = np.block([[REF["nngp_dd"], REF["nngp_td"].T], [REF["nngp_td"], REF["nngp_tt"]]])
  with jax.enable_x64(True):
    fn = predict.gradient_descent_mse_ensemble(
      network(), REF["x_train"], REF["y_train"], learning_rate=eta
    )
    test = fn(REF["ts"], REF["x_test"], "ntk", compute_cov=True).covariance
    train = fn(REF["ts"], None, "ntk", compute_cov=True).covariance
  for i, t in enumerate(REF["ts"]):
    prop = scipy.linalg.expm(-(eta / size) * t * gen)
    cov = prop @ prior @ prop.T
    np.testing.assert_allclose(test[i], cov[n:, n:], rtol=1e-7, atol=1e-9 * np.max(cov))
    np.testing.assert_allclose(train[i], cov[:n, :n], rtol=1e-7, atol=1e-9 * np.max(cov))


def test_bad_inputs_raise():
  kernel_fn = network()
  x, y = REF["x_train"], REF["y_train"]
  fn = predict.gradient_descent_mse_ensemble(kernel_fn, x, y)
  with pytest.raises(ValueError, match="t must be >= 0"):
    fn(-1.0, REF["x_test"])
  with pytest.raises(ValueError, match="t must be >= 0"):
    fn(np.array([1.0, -0.5]))
  with pytest.raises(ValueError, match="x_train has .* y_train"):
    predict.gradient_descent_mse_ensemble(kernel_fn, x[:-1], y)
  limit = predict.max_learning_rate(kernel_fn(x, None, "ntk"), y.size)
  predict.gradient_descent_mse_ensemble(
    kernel_fn, x, y, learning_rate=0.9 * limit, check_learning_rate=True
  )
  with pytest.raises(ValueError, match="learning_rate=.* above the stable maximum"):
    predict.gradient_descent_mse_ensemble(
      kernel_fn, x, y, learning_rate=1.1 * limit, check_learning_rate=True
    )
  with pytest.raises(ValueError, match="learning_rate must be > 0"):
    predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=0.0)
  with pytest.raises(ValueError, match="get must be"):
    fn(1.0, REF["x_test"], get="ntkgp")
  with pytest.raises(ValueError, match="trace_axes"):
    predict.gradient_descent_mse_ensemble(kernel_fn, x, y, trace_axes=())
  with pytest.raises(ValueError, match="y_train must be \\[n, c\\]"):
    predict.gradient_descent_mse_ensemble(kernel_fn, x, y[:, 0])
  gd = predict.gradient_descent_mse(REF["ntk_dd"], y)
  with pytest.raises(ValueError, match="needs k_test_train"):
    gd(1.0, 0.0, REF["fx_test_0"])
  with pytest.raises(ValueError, match="both None"):
    gd(1.0, None, None)
  with pytest.raises(ValueError, match="t must be >= 0"):
    gd(-2.0)
  gp = predict.gp_inference(REF["ntk_dd"], y)
  with pytest.raises(ValueError, match="NTK covariance needs both"):
    gp("ntk", REF["ntk_td"], REF["ntk_tt"])


def bad_kernels():
  """The reference NTK, then that kernel made not symmetric, not PSD (`K - 100 I`, whose
  gradient flow diverges like `e^{100 eta t / N}`) and not finite."""
  k = REF["ntk_dd"]
  skew = k.copy()
  skew[0, 1] += 1e-3 * np.max(np.abs(k))
  shifted = k - 100 * np.eye(len(k))
  assert np.linalg.eigvalsh(shifted)[0] < -60
  nan = k.copy()
  nan[2, 2] = np.nan
  return k, {"not symmetric": skew, "positive semi-definite": shifted, "NaN or infinite": nan}


def test_bad_train_kernels_raise_when_concrete():
  """Issue 23: `K - 100 I` used to give ~0 where the ODE gives values in the hundreds, and a
  non-symmetric kernel plausible numbers; the checks are kdjax.checks' (kdjax.krr's)."""
  _, bad = bad_kernels()
  y = REF["y_train"]
  with jax.enable_x64(True):
    for message, k in bad.items():
      with pytest.raises(ValueError, match=f"k_train_train .*{message}"):
        predict.gradient_descent_mse(k, y)
      with pytest.raises(ValueError, match=f"k_train_train.ntk .*{message}"):
        predict.gp_inference(k, y)("ntk", REF["ntk_td"])
      kernels = type("K", (), {"nngp": k, "ntk": REF["ntk_dd"]})
      with pytest.raises(ValueError, match=f"k_train_train.nngp .*{message}"):
        predict.gp_inference(kernels, y)("nngp", REF["ntk_td"])
  # Within kdjax.checks' tolerance (max(1e-6, 64 eps) relative) asymmetry is rounding.
  k = REF["ntk_dd"] + np.triu(np.full((10, 10), 1e-9 * np.max(REF["ntk_dd"])), 1)
  with jax.enable_x64(True):
    predict.gradient_descent_mse(k, y)(1.0)


def test_bad_train_kernels_give_nan_under_jit():
  good, bad = bad_kernels()
  y, ts, k_td = REF["y_train"], REF["ts"], REF["ntk_td"]

  def run(k):
    gd = predict.gradient_descent_mse(k, y, learning_rate=0.7)
    gp = predict.gp_inference(k, y)
    return (
      gd(ts, REF["fx_train_0"], REF["fx_test_0"], k_td),
      gd(None, 0.0, REF["fx_test_0"], k_td),
      gp("ntk", k_td),
    )

  with jax.enable_x64(True):
    jitted = jax.jit(run)
    want = run(good)  # eager, checked
    got = jitted(good)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    for message, k in bad.items():
      for leaf in jax.tree.leaves(jitted(k)):
        assert np.all(np.isnan(leaf)), message
