"""Tests of experiments.common.parse_arg, the one parser of every config's ``:arg``."""

import pytest

from experiments.common import parse_arg


def test_keys_bare_booleans_and_positional_words():
  a = parse_arg(
    "10,conv,runlocal",
    positional=("per_class", "kernel"),
    per_class=10,
    kernel="fc",
    runlocal=False,
    seed=0,
  )
  assert (a.per_class, a.kernel, a.runlocal, a.seed) == (10, "conv", True, 0)
  a = parse_arg("seed=3,runlocal=false,temperature=2", seed=0, runlocal=True, temperature=4.0)
  assert (a.seed, a.runlocal, a.temperature) == (3, False, 2.0)
  assert parse_arg(None, seed=1).seed == 1 and parse_arg("", seed=1).seed == 1


def test_errors_say_what_the_arg_means_and_its_valid_form():
  with pytest.raises(
    ValueError,
    match=r"'7x': per_class \(images per class\) must be an "
    r"integer such as 10",
  ):
    parse_arg("7x", positional=("per_class",), help={"per_class": "images per class"}, per_class=10)
  with pytest.raises(ValueError, match=r"unknown config arg 'sed'; known: \['runlocal', 'seed'\]"):
    parse_arg("sed=3", seed=0, runlocal=False)
  with pytest.raises(ValueError, match="runlocal must be a boolean"):
    parse_arg("runlocal=maybe", runlocal=False)
  with pytest.raises(ValueError, match=r"unknown config arg 'extra'; known: \['runlocal', 's"):
    parse_arg("extra", runlocal=False, seed=0)  # seed is not positional
