# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install glioseg, run the main job on an embedded default
#   make test   create .venv if needed, install the dev extras, run the test suite
# Every install is constrained by requirements/constraints.txt (exact versions CI tested).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
# torch and torchvision are installed first and as a pair (see README, "Install").
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_output
PYTEST_ARGS ?=

.PHONY: demo test test-fast check lint install install-dev bench lock clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"

$(VENV)/.glioseg-runtime: $(VENV)/bin/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) $(TORCH_PAIR)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.glioseg-dev: $(VENV)/.glioseg-runtime
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(VENV)/.glioseg-runtime
install-dev: $(VENV)/.glioseg-dev

demo: $(VENV)/.glioseg-runtime
	$(VENV)/bin/glioseg demo --out $(DEMO_OUT)

# The whole suite, lint and format included (what CI runs through .ci/run).
test: check

# ruff's lint and format checks, then the whole test suite.
check: lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.glioseg-dev
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/ruff format --check src tests scripts benchmarks

# Everything but the tests marked slow (training, whole pipelines): a quick loop while editing.
test-fast: $(VENV)/.glioseg-dev
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.glioseg-dev
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[bench]"

# Re-pin every version after a dependency change (writes the constraints file).
lock: $(VENV)/.glioseg-dev
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev,bench]"
	{ echo "# Exact versions CI tested (Python 3.11, x86_64). Used as pip constraints by the Makefile."; \
	  echo "# Regenerate: make lock (after changing dependencies in pyproject.toml)."; \
	  $(PIP) freeze --exclude-editable | grep -v '^glioseg'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build src/*.egg-info
