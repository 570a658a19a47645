r"""KIP on the embedded mnist5k digits with the FC2-ReLU NTK (README main job).

``python -m launch.main --config=experiments/kip_mnist5k.py:10 --workdir=runs/kip10``

``arg`` = images per class (1, 10 or 50; default 10), ``,runlocal`` for a seconds-long
smoke run. The kernel is the README's KRR baseline
(mnist5k, 95.2%): 2 x [Dense(W_std=sqrt(2), b_std=0.1), Relu], Dense, NTK
parameterisation, ``reg = 1e-6 tr(K)/m``, per-image standardised pixels, one-hot minus
0.1 labels. KIP learns the images (and, at 1/class, the labels) with Adam (lr 0.03,
cosine decay, 3,000 steps; 1,200 at 50/class, whose steps cost more; Nguyen, Chen &
Lee, 2021, "Dataset Meta-Learning from Kernel Ridge-Regression") on target batches of
1,000 real training digits; ``test_accuracy`` is KRR on the 1,000 held-out digits using
only the support set. Label learning (``--config.kip.learn_labels=True``) reaches the
same KRR accuracy at 10/class but its images transfer much worse to a finite MLP (62%
vs 90%); at 1/class it adds a point of KRR accuracy.
"""

from experiments import common, distill_base


def get_config(arg=None):
  """``arg``: ``[images_per_class][,runlocal]`` (default 10)."""
  a = common.parse_arg(
    arg, positional=("per_class",), help=distill_base.KIP_ARG_HELP, per_class=10, runlocal=False
  )
  c = distill_base.kip_base(a.per_class)
  if a.runlocal:
    distill_base.kip_runlocal(c)
  return c


def sweep(arg=None):
  """Images per class x {KIP images+labels, KIP images only} (``arg`` ignored)."""
  return [
    {
      "name": f"ipc{n}_{'labels' if labels else 'images'}",
      "kip.per_class": n,
      "kip.learn_labels": labels,
    }
    for n in (1, 10, 50)
    for labels in (True, False)
  ]
