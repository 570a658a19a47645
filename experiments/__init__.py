"""Experiment configs: ``experiments/NAME.py`` defines ``get_config(arg=None)`` and
``sweep(arg=None)``.

Run one with ``python -m launch.main --config=experiments/NAME.py[:arg] --workdir=DIR``;
import one with ``from experiments import kip_mnist5k; kip_mnist5k.get_config("runlocal")``.
Every config parses its ``arg`` with :func:`experiments.common.parse_arg`.
"""
