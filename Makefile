# Every target bootstraps its own virtualenv (.venv) with nothing but python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest bench reference-suite e2e mock-api clean

$(STAMP): setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,fast]'
	touch $(STAMP)

## demo: real events to the bundled local Tracking API (a bad day, then an outage with a restart), with a report
demo: $(STAMP)
	$(BIN)/python e2e-cli/demo.py

## test: lint, type-check, then the whole test suite
test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check segment tests e2e-cli $(wildcard bench)
	$(BIN)/ruff format --check segment tests e2e-cli $(wildcard bench)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

## bench: compare against segment-analytics-python==2.4.0 (creates its own venv for the reference)
bench: $(STAMP)
	$(BIN)/python bench/run.py

## reference-suite: analytics-python 2.4.0's own tests, unmodified, against 2.4.0 and against this project
## (not part of `make test`; makes its own virtualenvs under .reference-suite/)
reference-suite:
	$(PYTHON) bench/reference_suite/run.py

## e2e: the e2e-cli scenario suites (or the shared sdk-e2e-tests when checked out beside the repo)
e2e: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash e2e-cli/run-e2e.sh

## mock-api: run the local Tracking API on port 8080
mock-api: $(STAMP)
	$(BIN)/python -m segment.analytics.testing --port 8080

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .reference-suite
