r"""Few-step students of a flow-matching teacher on an exact 2-D distribution.

``arg`` = ``<dataset>[,runlocal][,seed=N][,students=a+b][,teacher_workdir=PATH]`` with
``dataset`` one of ``eight_gaussians`` (default), ``two_moons``:

  python -m launch.main --config=experiments/diffusion_toy2d.py:eight_gaussians --workdir=runs/dd_8g
  python -m launch.main --config=experiments/diffusion_toy2d.py:two_moons,runlocal --workdir=/tmp/dd

The job (``kdjax.diffusion.job``) trains a TimeMLP flow-matching teacher (4,000 Adam steps),
then progressive distillation (64 -> 1 Euler steps, 6 rounds of 500 steps), consistency
distillation (Heun teacher steps, N = 21 levels, sigma_max = 10: 80 left the 1-step
samples at energy distance 0.02 after 6,000 steps, 10 at 0.0008), DMD (one-step generator,
regression on 4,096 teacher pairs) and a Lagrangian self-distilled flow map, and writes
``samples/<name>_nfe<k>.npy``, their energy distances to fresh exact samples in
``summary.json`` and scatter plots. docs/diffusion.md has the measured figures.
"""

import ml_collections

from experiments import common


def base(dataset: str) -> ml_collections.ConfigDict:
  """The toy2d defaults for ``dataset`` (every key the diffusion job reads)."""
  c = ml_collections.ConfigDict()
  c.job = "diffusion"
  c.seed = 0
  c.dataset = ml_collections.ConfigDict({"name": dataset})
  c.num_train = 100_000
  c.batch_size = 256
  c.num_steps = 4000  # the teacher's
  c.log_every = 500
  c.eval_every = 4000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 2
  c.teacher_workdir = ""
  c.students = "progressive,consistency,dmd,flow_map"
  c.model = ml_collections.ConfigDict({"name": "time_mlp", "hidden": 128, "depth": 3})
  c.teacher = ml_collections.ConfigDict(
    {"optimizer": common.optimizer("adam", 2e-3, final_lr_fraction=0.05)}
  )
  c.progressive = ml_collections.ConfigDict(
    {
      "teacher_steps": 64,
      "rounds": 6,
      "steps_per_round": 500,
      "optimizer": common.optimizer("adam", 1e-3, final_lr_fraction=0.05),
    }
  )
  c.consistency = ml_collections.ConfigDict(
    {
      "mode": "distillation",
      "num_steps": 6000,
      "s0": 20,
      "s1": 20,
      "sigma_min": 0.002,
      "sigma_max": 10.0,
      "solver": "heun",
      "ema_decay": 0.0,  # 0: stop-gradient target (iCT); > 0: EMA target (Song et al. 2023)
      "parametrization": "edm",  # 'flow': the teacher's velocity network, started from it
      "optimizer": common.optimizer("adam", 1e-3, final_lr_fraction=0.05),
    }
  )
  c.dmd = ml_collections.ConfigDict(
    {
      "num_steps": 2000,
      "reg_weight": 0.25,
      "num_pairs": 4096,
      "pair_nfe": 64,
      # fake-score updates per generator update (DMD2, Yin et al. 2024b, "Improved distribution
      # matching distillation": a two time-scale update rule with 5; DMD uses 1)
      "fake_updates": 1,
      # the DM gradient's flow times t ~ U[t_min, t_max] (t = 1 is data): DMD samples its
      # noise level away from both ends, T_min = 0.02 T and T_max = 0.98 T
      "t_min": 0.02,
      "t_max": 0.98,
      "optimizer": common.optimizer("adam", 1e-4, final_lr_fraction=0.05),  # the generator's
      "fake_optimizer": common.optimizer("adam", 1e-4, final_lr_fraction=0.05),
    }
  )
  c.flow_map = ml_collections.ConfigDict(
    {
      "num_steps": 4000,
      "objective": "lagrangian",
      "from_teacher": False,  # True: start as the teacher's Euler step (job.two_time_from_teacher)
      # the diagonal's target: 'data' (flow matching on x1 - x0, Boffi et al. 2025) or
      # 'teacher' (the frozen teacher's velocity: flow map matching's distillation, 2024)
      "diagonal": "data",
      # the off-diagonal target: 'self' (the model's own diagonal, self-distillation) or
      # 'teacher' (the teacher's velocity: Lagrangian / Eulerian map distillation, 2024)
      "target": "self",
      "optimizer": common.optimizer("adam", 2e-3, final_lr_fraction=0.05),
    }
  )
  c.sample = ml_collections.ConfigDict(
    {
      "num_samples": 4096,
      "teacher_nfe": "1,2,4,8,16,32,64",
      "student_nfe": "1,2,4",
      "method": "euler",
    }
  )
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A smoke run of a minute: tiny model, few steps of every phase (same keys)."""
  c.num_steps = 60
  c.log_every = c.checkpoint_every = c.eval_every = 20
  c.batch_size = 64
  c.num_train = 4096
  c.model.hidden = 32
  c.model.depth = 1
  c.progressive.steps_per_round = 10
  c.consistency.num_steps = 40
  c.dmd.num_steps = 20
  c.dmd.num_pairs = 256
  c.dmd.pair_nfe = 8
  c.flow_map.num_steps = 40
  c.sample.num_samples = 4096
  c.sample.teacher_nfe = "1,4,64"
  return c


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    positional=("dataset",),
    help={"dataset": "the 2-D distribution: eight_gaussians or two_moons"},
    dataset="eight_gaussians",
    runlocal=False,
    seed=0,
    students="progressive+consistency+dmd+flow_map",
    teacher_workdir="",
  )
  if a.dataset not in ("eight_gaussians", "two_moons"):
    raise ValueError(
      f"config arg dataset must be 'eight_gaussians' or 'two_moons', got {a.dataset!r}"
    )
  c = base(a.dataset)
  c.seed = a.seed
  c.students = a.students.replace("+", ",")
  c.teacher_workdir = a.teacher_workdir
  return runlocal(c) if a.runlocal else c
