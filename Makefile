# `make fit` and `make test` create .venv if it is missing, install the project into it, then run.
# Extra arguments go through ARGS, e.g. make fit ARGS="--data.data_dir ~/cifar10 --max_epochs 5".
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: fit test install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

fit: $(STAMP)
	$(VENV)/bin/python scripts/fit.py $(ARGS)

# One pytest worker per core (pytest-xdist): the tests are mostly single-threaded start-up of scripts.
# ARGS="-n 0" runs them in one process.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n auto $(ARGS)
