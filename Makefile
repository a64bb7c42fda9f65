# comms-pipeline: the single entry point. `make demo` and `make test` work on a fresh machine:
# each creates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format bench install clean services

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Run the whole pipeline end to end on the embedded default (SQLite + local folders).
demo: $(STAMP)
	$(BIN)/comms demo

## The full suite, on SQLite and PostgreSQL, against real servers on 127.0.0.1.
test: $(STAMP) services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Everything but the slow crash test.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Start what the tests need when it is not running (PostgreSQL).
services:
	@bash .ci/services

lint: $(STAMP)
	$(BIN)/ruff check comms_pipeline tests bench sql

format: $(STAMP)
	$(BIN)/ruff check --fix comms_pipeline tests bench sql

## Benchmarks: each prints the pipeline's rate beside the raw limit measured in the same run.
bench: $(STAMP) services
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf var/demo .pytest_cache build *.egg-info
