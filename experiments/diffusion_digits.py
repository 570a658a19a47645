r"""Few-step students of a flow-matching U-Net teacher on scikit-learn's 8x8 digits.

``arg`` = ``[runlocal][,seed=N][,students=a+b][,teacher_workdir=PATH]``:

  python -m launch.main --config=experiments/diffusion_digits.py --workdir=runs/dd_digits
  python -m launch.main --config=experiments/diffusion_digits.py:runlocal --workdir=/tmp/ddd

All 1,797 digits scaled to [-1, 1] train a small U-Net (channels 32, 64; 8 -> 4) teacher;
the students are those of ``diffusion_toy2d.py``. Samples are mapped back to [0, 1]
(clipped) and judged by the Fréchet distance in the features of a small digits classifier
(``kdjax.diffusion.metrics.digits_features``) to all 1,797 digits.
"""

import ml_collections

from experiments import common, diffusion_toy2d


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    runlocal=False,
    seed=0,
    students="progressive+consistency+dmd+flow_map",
    teacher_workdir="",
  )
  c = diffusion_toy2d.base("digits")
  c.seed = a.seed
  c.students = a.students.replace("+", ",")
  c.teacher_workdir = a.teacher_workdir
  c.num_train = 1797  # all digits (read only for the toy2d pool size)
  c.batch_size = 128
  c.model = ml_collections.ConfigDict({"name": "unet", "channels": (32, 64), "time_dim": 64})
  c.num_steps = 3000
  c.eval_every = 3000
  c.progressive.steps_per_round = 300
  c.consistency.num_steps = 2000
  c.consistency.sigma_max = 80.0  # EDM's image setting
  c.dmd.num_steps = 1000
  c.dmd.num_pairs = 2048
  c.dmd.pair_nfe = 32
  c.flow_map.num_steps = 2000
  c.sample.num_samples = 4096
  if a.runlocal:
    c = diffusion_toy2d.runlocal(c)
    c.model = ml_collections.ConfigDict({"name": "unet", "channels": (8, 16), "time_dim": 16})
    c.batch_size = 32
  return c
