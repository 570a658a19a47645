"""RCIG (kdjax.distill.rcig): CG, the convexified inner problem against its float64 NumPy
closed form (empirical-NTK kernel ridge regression), the implicit meta-gradient against
finite differences and against differentiating a converged unrolled inner solve, the step
(deterministic in (seed, step), images and labels move) and the distill job's 'rcig'
(runlocal run and the NaN stop are slow-marked; the step test is their fast sibling)."""

import functools

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments import rcig_digits, rcig_mnist5k
from kdjax import data, models
from kdjax.distill import job, rcig
from kdjax.jobs import workdir as workdir_lib
from launch import sweep

REG = 0.3


def test_cg_solves_an_spd_system_and_a_zero_right_hand_side():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  a = a @ a.T + 0.5 * np.eye(6)
  b = {"u": rng.normal(size=4), "v": rng.normal(size=2)}
  with jax.enable_x64(True):

    @jax.jit
    def solve(b):
      return rcig.cg(lambda x: {"u": (a @ _flat(x))[:4], "v": (a @ _flat(x))[4:]}, b, steps=12)

    x, residual = solve(b)
    np.testing.assert_allclose(_flat(x), np.linalg.solve(a, _flat(b)), rtol=1e-9)
    assert float(residual) < 1e-9
    zero, residual = solve(jax.tree.map(np.zeros_like, b))
    assert not np.any(_flat(zero)) and float(residual) == 0.0


def _flat(tree):
  return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


class _TinyConv(nn.Module):
  """ConvNet's block with a smooth activation and no float32 cast (float64 differences)."""

  @nn.compact
  def __call__(self, x):
    h = nn.avg_pool(nn.softplus(nn.Conv(2, (3, 3), padding="SAME")(x)), (2, 2), strides=(2, 2))
    return nn.Dense(3)(h.reshape(h.shape[0], -1))


@functools.cache
def _tiny():
  """A width-2, 1-block ConvNet on 4x4 images, 3 classes, 4 support and 5 target images,
  float64 (23 linearised parameters: the conv's 20 and the readout bias's 3)."""
  rng = np.random.default_rng(1)
  model = _TinyConv()
  x_s, x_t = rng.normal(size=(4, 4, 4, 1)), rng.normal(size=(5, 4, 4, 1))
  y_s = np.eye(3)[[0, 1, 2, 0]] - 0.1 + 0.05 * rng.normal(size=(4, 3))
  y_t = np.eye(3)[rng.integers(0, 3, 5)] - 0.1
  variables = jax.jit(model.init)(jax.random.key(2), jnp.asarray(x_s, jnp.float32))
  variables = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
  return model, variables, x_s, y_s, x_t, y_t


def _problem(model, variables, x_t, y_t, clip=False, steps=40):
  def inner(delta, u):
    return rcig.inner_loss(model, variables, delta, u["x"], u["y"], reg=REG)

  def outer(delta, u):
    prediction = rcig.predict(model, variables, delta, u["x"], u["y"], x_t, reg=REG)
    return rcig.rfad.rfad_loss(prediction, y_t, loss="platt", log_scale=u["log_scale"])

  def meta(u):
    return rcig.meta_gradient(
      inner,
      outer,
      rcig.tangent_like(variables),
      u,
      inner_steps=steps,
      hinv_steps=steps,
      clip=clip,
      hvp=rcig.inner_hvp(model, variables, u["x"], u["y"], reg=REG),
      unroll=False,  # compiles faster
    )

  return inner, outer, meta


@functools.cache
def _meta():
  """The tiny problem's jitted ``meta(u)`` (exact: 40 CG iterations on 23 unknowns) and
  ``inner``, ``outer``; float64 (call under ``jax.enable_x64``)."""
  model, variables, _, _, x_t, y_t = _tiny()
  inner, outer, meta = _problem(model, variables, x_t, y_t)
  return inner, outer, jax.jit(meta)


def _jacobians(model, variables, x):
  """``(phi [n, F], J [n c, d])`` of the linearised model, by forward mode, jitted."""
  delta0 = rcig.tangent_like(variables)
  flat, unravel = jax.flatten_util.ravel_pytree(delta0)

  @jax.jit
  def both(x):
    out = lambda d: rcig.linearised(model, variables, unravel(d), x)[1].reshape(-1)
    return rcig.linearised(model, variables, delta0, x)[0], jax.jacfwd(out)(flat)

  return (*map(np.asarray, both(x)), unravel)


def test_inner_solve_is_the_closed_form_and_predicts_empirical_ntk_krr():
  model, variables, x_s, y_s, x_t, y_t = _tiny()
  u = {"x": x_s, "y": y_s, "log_scale": np.float64(0.3)}
  with jax.enable_x64(True):
    inner, _, meta = _meta()
    value, _, _, info = meta(u)
    phi, jac, unravel = _jacobians(model, variables, np.concatenate([x_s, x_t]))
    probe = np.random.default_rng(4).normal(size=jac.shape[1])
    hvp = jax.jit(lambda v: _flat(rcig.inner_hvp(model, variables, x_s, y_s, reg=REG)(unravel(v))))
    got_hvp = np.asarray(hvp(probe))
    predict = lambda d: rcig.predict(model, variables, d, x_s, y_s, x_t, reg=REG)
    got_loss, got_prediction, at_zero = jax.jit(
      lambda d: (inner(d, u), predict(d), predict(jax.tree.map(jnp.zeros_like, d)))
    )(info["delta"])
    delta = np.asarray(_flat(info["delta"]))
  m, c = y_s.shape
  phi_s, phi_t, jac_s, jac_t = phi[:m], phi[m:], jac[: m * c], jac[m * c :]
  lam = REG * np.trace(phi_s @ phi_s.T) / m
  # The convex quadratic: (lam / 2mc) (vec(R)^T (A kron I_c) vec(R) + |delta|^2), R = Y - J delta.
  a = np.kron(np.linalg.inv(phi_s @ phi_s.T + lam * np.eye(m)), np.eye(c))
  y = y_s.reshape(-1)
  d = jac_s.shape[1]
  expected = np.linalg.solve(jac_s.T @ a @ jac_s + np.eye(d), jac_s.T @ a @ y)
  np.testing.assert_allclose(delta, expected, rtol=1e-7, atol=1e-9)
  hessian = lam / (m * c) * (jac_s.T @ a @ jac_s + np.eye(d))
  np.testing.assert_allclose(got_hvp, hessian @ probe, rtol=1e-9)
  r = y - jac_s @ expected
  np.testing.assert_allclose(
    float(got_loss), lam / (2 * m * c) * (r @ a @ r + expected @ expected), rtol=1e-9
  )
  # ... whose solution predicts as KRR with the empirical NTK of all the parameters,
  # J J^T + Phi Phi^T (x) I_c (the readout kernel's own block), ridge lam.
  ntk = lambda j1, p1, j2, p2: j1 @ j2.T + np.kron(p1 @ p2.T, np.eye(c))
  krr = ntk(jac_t, phi_t, jac_s, phi_s) @ np.linalg.solve(
    ntk(jac_s, phi_s, jac_s, phi_s) + lam * np.eye(m * c), y
  )
  np.testing.assert_allclose(got_prediction.reshape(-1), krr, rtol=1e-7, atol=1e-9)
  assert np.isfinite(float(value))
  # At delta = 0 the prediction is FRePo's KRR on the features of theta_0.
  np.testing.assert_allclose(
    at_zero, phi_t @ phi_s.T @ np.linalg.solve(phi_s @ phi_s.T + lam * np.eye(m), y_s), rtol=1e-9
  )


def test_implicit_meta_gradient_matches_finite_differences():
  model, variables, x_s, y_s, x_t, y_t = _tiny()
  u = {"x": x_s, "y": y_s, "log_scale": np.float64(0.3)}
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    _, _, meta = _meta()
    _, direct, implicit, _ = meta(u)
    total = jax.tree.map(np.add, direct, implicit)
    assert float(_flat(implicit) @ _flat(implicit)) > 1e-8  # the implicit part matters
    eps = 1e-6
    for _ in range(3):
      d = jax.tree.map(lambda a: rng.normal(size=np.shape(a)), u)
      plus = float(meta(jax.tree.map(lambda a, b: a + eps * b, u, d))[0])
      minus = float(meta(jax.tree.map(lambda a, b: a - eps * b, u, d))[0])
      np.testing.assert_allclose(
        float(_flat(total) @ _flat(d)), (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-10
      )
      # The direct part alone (the inner solution held fixed) is not the derivative.
      assert abs(float(_flat(direct) @ _flat(d)) - (plus - minus) / (2 * eps)) > 1e-4


@pytest.mark.slow  # its fast sibling: test_implicit_meta_gradient_matches_finite_differences
def test_implicit_meta_gradient_equals_differentiating_a_converged_unrolled_solve():
  model, variables, x_s, y_s, x_t, y_t = _tiny()
  u = {"x": x_s, "y": y_s, "log_scale": np.float64(0.3)}
  with jax.enable_x64(True):
    inner, outer, meta = _meta()
    _, direct, implicit, _ = meta(u)
    delta0 = rcig.tangent_like(variables)
    flat0, unravel = jax.flatten_util.ravel_pytree(delta0)
    hessian = jax.jit(jax.hessian(lambda d: inner(unravel(d), u)))(flat0)
    lipschitz = float(np.linalg.eigvalsh(np.asarray(hessian)).max())

    @jax.jit
    def unrolled(u):  # 3,000 plain gradient steps of size 1/L on the inner problem
      grad = jax.grad(lambda d: inner(unravel(d), u))
      flat = jax.lax.fori_loop(0, 3000, lambda _, d: d - grad(d) / lipschitz, flat0)
      return outer(unravel(flat), u)

    expected = jax.grad(unrolled)(u)
  got = jax.tree.map(np.add, direct, implicit)
  for key in u:
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-10, err_msg=key)


@functools.cache
def _digits_step():
  ds = data.preprocess_dataset(data.load("digits"), "standardize", zca_strength=0.1)
  index = data.class_balanced_indices(ds.y_train, 1, seed=0)
  y = np.eye(10, dtype=np.float32)[ds.y_train] - 0.1
  model = models.ConvNet(num_classes=10, width=4, depth=1, normalization="none")
  init, step, init_model = rcig.make_rcig_step(
    model,
    optax.adam(0.01),
    model_optimizer=optax.adam(1e-3),
    reg=1e-2,
    pool_size=2,
    max_updates=2,
    pool_steps=1,
    inner_steps=1,
    hinv_steps=1,
    seed=0,
  )
  x_t, y_t = jnp.asarray(ds.x_train[:32]), jnp.asarray(y[:32])
  return ds.x_train[index], y[index], x_t, y_t, jax.jit(init), step


def _run(steps):
  x, y, x_t, y_t, init, step = _digits_step()
  state = init(x, y)
  records = []
  for _ in range(steps):
    state, metrics = step(state, x_t, y_t)
    records.append({k: float(v) for k, v in metrics.items()})
  return jax.tree.map(np.asarray, state), records


def test_steps_are_deterministic_move_the_support_and_recycle_the_pool():
  x, y, *_ = _digits_step()
  first, records = _run(3)
  again, records_again = _run(3)
  assert records == records_again  # every draw is a function of (seed, step)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  assert not np.allclose(first.x, x) and not np.allclose(first.y, y)
  assert float(first.log_scale) != 0.0 and int(first.step) == 3
  assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in records)
  assert all(0 < r["implicit_norm"] for r in records)
  # Ages count the pool's Adam steps; a model is reset (age 0) on reaching max_updates=2.
  # 3 updates over 2 models: exactly one reset, so the ages sum to 3 - 2 = 1.
  assert np.all(first.age < 2) and int(first.age.sum()) == 1


def test_bad_arguments():
  make = functools.partial(
    rcig.make_rcig_step,
    models.ConvNet(),
    optax.adam(0.1),
    model_optimizer=optax.adam(0.1),
    reg=1e-2,
    pool_size=1,
    max_updates=1,
    pool_steps=1,
    inner_steps=1,
    hinv_steps=1,
    seed=0,
  )
  for key in ("pool_size", "max_updates", "pool_steps", "inner_steps", "hinv_steps"):
    with pytest.raises(ValueError, match=f"{key} must be >= 1, got 0"):
      make(**{key: 0})
  with pytest.raises(ValueError, match="reg must be > 0"):
    make(reg=float("nan"))
  with pytest.raises(ValueError, match="loss must be one of"):
    make(loss="l1")
  with pytest.raises(ValueError, match="steps must be >= 0"):
    rcig.cg(lambda x: x, jnp.ones(2), steps=-1)


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("rcig.inner_steps", 0, r"config.rcig.inner_steps must be an integer >= 1, got 0"),
    ("rcig.hinv_steps", 0, r"config.rcig.hinv_steps must be an integer >= 1, got 0"),
    ("rcig.pool_steps", -1, r"config.rcig.pool_steps must be an integer >= 1"),
    ("rcig.reg", float("nan"), r"config.rcig.reg must be a finite number > 0"),
    ("rcig.loss", "l1", r"config.rcig.loss must be one of"),
    ("rcig.clip_implicit", 1, r"config.rcig.clip_implicit must be true or false"),
    ("rcig.normalization", "batch", r"config.rcig.normalization must be one of"),
    ("rcig.model_learning_rate", 0.0, r"config.rcig.model_learning_rate must be a finite"),
  ],
)
def test_bad_config_names_the_key_before_the_workdir(tmp_path, key, value, match):
  config = rcig_digits.get_config("1,runlocal").to_dict()
  section, _, name = key.rpartition(".")
  config[section][name] = value
  config = ml_collections.ConfigDict(config, type_safe=False)  # as from a JSON file
  with pytest.raises(ValueError, match=match):
    job.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", [rcig_digits, rcig_mnist5k])
def test_configs_and_sweeps(module):
  for arg in ("1", "10", "2,runlocal"):
    c = module.get_config(arg)
    job.validate(c)
    assert c.method == "rcig"
  c = module.get_config("10")
  for point in module.sweep():
    sweep.apply_point(c, point)


@pytest.mark.slow
def test_runlocal(tmp_path):
  config = rcig_digits.get_config("2,runlocal")
  summary = job.run(config, str(tmp_path))
  with np.load(tmp_path / "support.npz") as f:
    assert f["x"].shape == (20, 8, 8, 1)
    assert not np.allclose(f["y"], np.repeat(np.eye(10) - 0.1, 2, 0))  # labels are learned
  for key in ("test_accuracy", "transfer_test_accuracy", "transfer_test_accuracy_init"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path))] == [0, 2, 4]


@pytest.mark.slow
def test_a_nan_meta_loss_stops_the_run_naming_the_step(tmp_path):
  config = rcig_digits.get_config("1,runlocal")
  config.optimizer.learning_rate = 1e38  # the images overflow after the first update
  with pytest.raises(FloatingPointError, match=r"\[rcig\].*step 2"):
    job.run(config, str(tmp_path))
