"""Regenerates `predict.npz`: neural-tangents 0.6.5 `nt.predict` outputs for kdjax's tests.

Run it with Python from a venv holding jax==0.4.23 and neural-tangents==0.6.5 (the same
venv as `generate.py` in this directory), from the repository root:

  ntref-venv/bin/python tests/kernels/reference/generate_predict.py

One network (`SPEC`, neural-tangents' names, rebuilt with `kdjax.kernels.stax` by
`tests/kernels/test_predict.py`), inputs from `np.random.default_rng(0)`, float64:

* `x_train` [10, 6], `y_train` [10, 3], `x_test` [4, 6], `ts` (times), `learning_rate`,
  `fx_train_0`, `fx_test_0` (network outputs at t=0 for `gradient_descent_mse`);
* the kernels `<nngp|ntk>_<dd|td|tt>` (train-train, test-train, test-test);
* per regulariser case `<case>` in `CASES` (`diag_reg`, `diag_reg_absolute_scale`):
  - `<case>/ensemble/<test|train>/<t|inf>/<nngp|ntk>/<mean|cov>`:
    `gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate, diag_reg,
    diag_reg_absolute_scale)(t, x_test or None, ('nngp', 'ntk'), compute_cov=True)` at
    `t=ts` ("t") or `t=None` ("inf");
  - `<case>/gd_mse/<t|inf>/<train|test>`: `gradient_descent_mse(ntk_dd, y_train,
    learning_rate, diag_reg, diag_reg_absolute_scale)(t, fx_train_0, fx_test_0, ntk_td)`;
  - `<case>/gp/<nngp|ntk|ntkgp>/<mean|cov>`: `gp_inference(kernels_dd, y_train, diag_reg,
    diag_reg_absolute_scale)(get, kernels_td, kernels_tt)`;
* `max_lr`, `max_lr_momentum` (momentum 0.9): `max_learning_rate(ntk_dd, y_train.size)`.
"""

from __future__ import annotations

import json
import os

import jax

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = [
  ["Dense", {"width": 512, "W_std": 1.6, "b_std": 0.1}],
  ["Relu", {}],
  ["Dense", {"width": 512, "W_std": 1.6, "b_std": 0.1}],
  ["Relu", {}],
  ["Dense", {"width": 3, "W_std": 1.6, "b_std": 0.1}],
]
CASES = {"noreg": (0.0, False), "relreg": (1e-2, False), "absreg": (3e-2, True)}
TS = np.array([0.0, 0.3, 3.0, 30.0, 300.0])
LEARNING_RATE = 0.7


def main():
  assert nt.__version__ == "0.6.5", nt.__version__
  rng = np.random.default_rng(0)
  x_train = rng.normal(size=(10, 6))
  y_train = rng.normal(size=(10, 3))
  x_test = rng.normal(size=(4, 6))
  fx_train_0 = 0.3 * rng.normal(size=(10, 3))
  fx_test_0 = 0.3 * rng.normal(size=(4, 3))
  layers = [
    getattr(stax, name)(
      *([kw["width"]] if "width" in kw else []), **{k: v for k, v in kw.items() if k != "width"}
    )
    for name, kw in SPEC
  ]
  _, _, kernel_fn = stax.serial(*layers)
  out = {
    "spec": json.dumps(SPEC),
    "x_train": x_train,
    "y_train": y_train,
    "x_test": x_test,
    "ts": TS,
    "learning_rate": LEARNING_RATE,
    "fx_train_0": fx_train_0,
    "fx_test_0": fx_test_0,
  }
  k_dd = kernel_fn(x_train, None, ("nngp", "ntk"))
  k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"))
  k_tt = kernel_fn(x_test, None, ("nngp", "ntk"))
  for g in ("nngp", "ntk"):
    out[f"{g}_dd"], out[f"{g}_td"], out[f"{g}_tt"] = (getattr(k, g) for k in (k_dd, k_td, k_tt))
  for case, (diag_reg, absolute) in CASES.items():
    ensemble = nt.predict.gradient_descent_mse_ensemble(
      kernel_fn,
      x_train,
      y_train,
      learning_rate=LEARNING_RATE,
      diag_reg=diag_reg,
      diag_reg_absolute_scale=absolute,
    )
    for where, x in (("test", x_test), ("train", None)):
      for when, t in (("t", TS), ("inf", None)):
        result = ensemble(t, x, ("nngp", "ntk"), compute_cov=True)
        for g in ("nngp", "ntk"):
          out[f"{case}/ensemble/{where}/{when}/{g}/mean"] = getattr(result, g).mean
          out[f"{case}/ensemble/{where}/{when}/{g}/cov"] = getattr(result, g).covariance
    gd = nt.predict.gradient_descent_mse(out["ntk_dd"], y_train, LEARNING_RATE, diag_reg, absolute)
    for when, t in (("t", TS), ("inf", None)):
      train, test = gd(t, fx_train_0, fx_test_0, out["ntk_td"])
      out[f"{case}/gd_mse/{when}/train"], out[f"{case}/gd_mse/{when}/test"] = train, test
    gp = nt.predict.gp_inference(k_dd, y_train, diag_reg, absolute)
    result = gp(("nngp", "ntk", "ntkgp"), k_td, k_tt)
    for g in ("nngp", "ntk", "ntkgp"):
      out[f"{case}/gp/{g}/mean"] = getattr(result, g).mean
      out[f"{case}/gp/{g}/cov"] = getattr(result, g).covariance
  out["max_lr"] = nt.predict.max_learning_rate(out["ntk_dd"], y_train.size)
  out["max_lr_momentum"] = nt.predict.max_learning_rate(out["ntk_dd"], y_train.size, momentum=0.9)
  out = {k: np.asarray(v) for k, v in out.items()}
  path = os.path.join(HERE, "predict.npz")
  np.savez_compressed(path, **out)
  print(f"wrote {path}: {len(out)} arrays")


if __name__ == "__main__":
  main()
