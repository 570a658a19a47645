# Two commands on a fresh clone with Python 3.11:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/kip_mnist5k_10

.PHONY: demo test test-all lint format venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The main job: KIP-distil the embedded MNIST digits into 10 images per class.
demo: venv
	$(PY) -m launch.main --config=experiments/kip_mnist5k.py:10 --workdir=$(WORKDIR)

# Default test run (slow tests skipped): at most 5 minutes on 2 CPU cores. Two pytest-xdist
# workers, each taking whole test files (module fixtures run once); PYTEST_WORKERS=0 runs
# in one process. It lists the 15 slowest tests so that the budget stays visible.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

test: venv
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=15

test-all: venv
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=15 -m ''

# Linter and formatter check (ruff; configuration in pyproject.toml). `make format` applies both.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) runs
