r"""Few-step students of a flow-matching U-Net teacher on scikit-learn's 8x8 digits.

``arg`` = ``[runlocal][,seed=N][,students=a+b][,teacher_workdir=PATH]``:

  python -m launch.main --config=experiments/diffusion_digits.py --workdir=runs/dd_digits
  python -m launch.main --config=experiments/diffusion_digits.py:runlocal --workdir=/tmp/ddd

All 1,797 digits scaled to [-1, 1] train a small U-Net (channels 16, 32; 8 -> 4) teacher
for 2,000 steps; the students (progressive 6 rounds of 150 steps, consistency distillation
started from the teacher, DMD 500 steps, a flow map started from the teacher with its
diagonal anchored to the teacher's velocity, 800 steps) are those of ``diffusion_toy2d.py``
with the settings below. Samples are mapped back to [0, 1] (clipped) and judged by the
Fréchet distance in the features of a small digits classifier
(``kdjax.diffusion.metrics.digits_features``) to all 1,797 digits. Measured FIDs: teacher
0.364 at 64 NFE; progressive 0.662, consistency 0.724, flow map 0.574 at 2 NFE; DMD 0.705
at 1 NFE. The whole job took 746 s of CPU (user + system) on loaded cores; docs/diffusion.md
has the figures, every setting tried and the time estimate.
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
  # A (16, 32) U-Net (92,929 parameters): the (32, 64) one costs 2.5x the CPU time per step
  # for the same FID (docs/diffusion.md), and the whole job must fit 10 minutes on 2 cores.
  c.model = ml_collections.ConfigDict({"name": "unet", "channels": (16, 32), "time_dim": 32})
  c.num_steps = 2000
  c.eval_every = 2000
  c.progressive.steps_per_round = 150
  # consistency distillation from the teacher's weights (Song et al. 2023 initialise CD from
  # the diffusion model): the 'flow' parametrization reads f off a velocity network
  c.consistency.num_steps = 500
  c.consistency.sigma_max = 80.0  # EDM's image setting
  c.consistency.parametrization = "flow"
  c.consistency.optimizer.learning_rate = 5e-4
  # DMD: a 10x larger generator lr and the L2 regression weighted 4 (the paper's 0.25 is for
  # LPIPS) reach in 500 steps what 1e-4 / 0.25 missed in 1,000 (docs/diffusion.md)
  c.dmd.num_steps = 500
  c.dmd.num_pairs = 2048
  c.dmd.pair_nfe = 32
  c.dmd.reg_weight = 4.0
  c.dmd.optimizer.learning_rate = 1e-3
  c.dmd.fake_optimizer.learning_rate = 4e-4  # the fake score tracks the generator faster
  # the flow map from the teacher, its diagonal anchored to the teacher's velocity (flow map
  # matching's distillation): with flow matching on x1 - x0 the diagonal drifted (its loss
  # rose from 0.45 to 0.7-0.8) and the FIDs varied run to run (docs/diffusion.md)
  c.flow_map.num_steps = 800
  c.flow_map.from_teacher = True
  c.flow_map.diagonal = "teacher"
  c.flow_map.optimizer.learning_rate = 2e-3
  c.sample.num_samples = 4096
  if a.runlocal:
    c = diffusion_toy2d.runlocal(c)
    c.model = ml_collections.ConfigDict({"name": "unet", "channels": (8, 16), "time_dim": 16})
    c.batch_size = 32
  return c
