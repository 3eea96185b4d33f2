# One task runner for README, CI and developers. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## Run the service (embedded Valkey when REDIS_URL is unset; the sample documents at
## /documents/ unless DOCUMENTS_DIR says otherwise).
run: $(STAMP)
	DOCUMENTS_DIR="$${DOCUMENTS_DIR:-samples/documents}" $(BIN)/rdisplay serve

## The whole test suite: linters, type checks, then pytest.
test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
