# comms-pipeline: the single entry point. `make demo` and `make test` work on a fresh machine:
# each creates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format bench install clean services

# The product with every gateway's library (what `make demo` needs) ...
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	@touch $(STAMP)

# ... and the test servers and tools on top (what `make test`, lint and bench need).
$(TSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(TSTAMP)

install: $(TSTAMP)

## Run the whole pipeline end to end on the embedded default (SQLite + local folders).
demo: $(STAMP)
	$(BIN)/comms demo

## The full suite, on SQLite and PostgreSQL, against real servers on 127.0.0.1.
test: $(TSTAMP) services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Everything but the slow tests (the crash test, the README tour).
test-fast: $(TSTAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Start what the tests need when it is not running (PostgreSQL).
services:
	@bash .ci/services

## Style (ruff), the layers' import contracts (import-linter), types (mypy).
lint: $(TSTAMP)
	$(BIN)/ruff check comms_pipeline tests bench sql setup.py
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(TSTAMP)
	$(BIN)/ruff check --fix comms_pipeline tests bench sql setup.py

## Benchmarks: each prints the pipeline's rate beside the raw limit measured in the same run.
bench: $(TSTAMP) services
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf var/demo .pytest_cache build *.egg-info
