r"""KD step time vs its parts: is distillation free beyond the teacher's forward pass?

  python -m benchmarks.train_step [--model=mlp|resnet] [--batch_size=256] [--student_width=..]
      [--teacher_width=..] [--iters=50] [--repeats=5]

Measures on all devices of this machine (data-parallel mesh, replicated parameters),
with the jitted, donated steps of kdjax.train:

* ``kd``: one KD train step (teacher forward + student forward/backward + update);
* ``student``: one supervised train step of the student (forward/backward + update);
* ``teacher``: one jitted teacher forward pass (eval mode);

and prints ``kd / (student + teacher)``; 1.00 means the KD step costs exactly its parts
(aim: <= 1.05). Times are medians over ``repeats`` of ``iters`` steps, after warm-up.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from experiments import kd_cifar100, kd_mnist5k
from kdjax import mesh as mesh_lib, models
from kdjax.train import objectives, state as state_lib, steps

_MODEL = flags.DEFINE_enum("model", "mlp", ["mlp", "resnet"], "Model family.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_STUDENT = flags.DEFINE_integer("student_width", 0, "Student width (0: family default).")
_TEACHER = flags.DEFINE_integer("teacher_width", 0, "Teacher width (0: family default).")
_ITERS = flags.DEFINE_integer("iters", 50, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings (the median is reported).")


def build_models():
  """(student, teacher, input shape, classes, optimizer block of the matching experiment)."""
  if _MODEL.value == "mlp":
    s, t = _STUDENT.value or 256, _TEACHER.value or 1200
    return (
      models.MLP(num_classes=10, hidden=(s,)),
      models.MLP(num_classes=10, hidden=(t, t)),
      (28, 28, 1),
      10,
      kd_mnist5k.get_config().optimizer,
    )
  s, t = _STUDENT.value or 32, _TEACHER.value or 32
  return (
    models.CifarResNet(num_classes=100, depth=8, widths=(s, 2 * s, 4 * s, 8 * s)),
    models.CifarResNet(num_classes=100, depth=32, widths=(t, 2 * t, 4 * t, 8 * t)),
    (32, 32, 3),
    100,
    kd_cifar100.get_config().optimizer,
  )


def timed(fn, iters, repeats):
  """Median seconds per call of ``fn()``: ``iters`` calls queue back to back, and
  ``common.time_call`` blocks on the last one (one untimed warm-up round: compilation)."""

  def many():
    for _ in range(iters):
      out = fn()
    return out

  return common.time_call(many, warmup=1, repeats=repeats) / iters


def stepper(step, state, *args):
  """``fn()`` that applies ``step`` to a carried (donated) state."""
  holder = [state]

  def fn():
    holder[0] = step(holder[0], *args)[0]
    return holder[0]

  return fn


def main(argv):
  del argv
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(_BATCH.value, mesh, "--batch_size")
  student, teacher, shape, classes, optimizer = build_models()
  rs = np.random.RandomState(0)
  batch = mesh_lib.global_batch(
    {
      "inputs": rs.rand(_BATCH.value, *shape).astype(np.float32),
      "labels": rs.randint(0, classes, _BATCH.value).astype(np.int32),
    },
    mesh,
  )
  tx = state_lib.make_optimizer(optimizer, 1000)
  tstate, tshardings = state_lib.create_state(teacher, tx, batch["inputs"], 1, mesh)
  teacher_vars = tstate.variables()
  teacher_shardings = {"params": tshardings.params, **tshardings.model_state}

  def fresh_student():
    return state_lib.create_state(student, tx, batch["inputs"], 0, mesh)

  kd_objective = objectives.distillation("kd_loss", {"temperature": 4.0}, ce_weight=0.1)
  state, shardings = fresh_student()
  kd_step = steps.jit_train_step(
    steps.make_train_step(student, tx, kd_objective, seed=0, teacher=teacher),
    mesh,
    shardings,
    teacher_shardings,
  )
  kd_time = timed(stepper(kd_step, state, batch, teacher_vars), _ITERS.value, _REPEATS.value)

  state, shardings = fresh_student()
  ce_step = steps.jit_train_step(
    steps.make_train_step(student, tx, objectives.supervised(), seed=0), mesh, shardings
  )
  student_time = timed(stepper(ce_step, state, batch), _ITERS.value, _REPEATS.value)

  teacher_fwd = jax.jit(
    lambda v, x: steps.teacher_logits(teacher, v, x),
    in_shardings=(teacher_shardings, mesh_lib.batch_sharding(mesh)),
    out_shardings=mesh_lib.batch_sharding(mesh),
  )
  teacher_time = timed(
    lambda: teacher_fwd(teacher_vars, batch["inputs"]), _ITERS.value, _REPEATS.value
  )
  parts = student_time + teacher_time
  print(f"{common.describe_devices()}  model: {_MODEL.value}  batch: {_BATCH.value}")
  print("| step | ms |\n|---|---|")
  print(f"| student fwd+bwd+update | {1e3 * student_time:.3f} |")
  print(f"| teacher fwd | {1e3 * teacher_time:.3f} |")
  print(f"| sum of parts | {1e3 * parts:.3f} |")
  print(f"| KD step | {1e3 * kd_time:.3f} |")
  print(f"| **KD / parts** | **{kd_time / parts:.3f}** |")


if __name__ == "__main__":
  app.run(main)
