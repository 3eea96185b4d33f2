# One task runner for README, CI and developers. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint pytest bench clean vendor browser prometheus

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

pytest: $(STAMP) browser prometheus
	$(BIN)/pytest $(PYTEST_ARGS)

## Debian's chromium for the pages' tests (tests/services/edge/web; Playwright's own browser
## download is not reachable here): installed with apt when missing and possible.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x "$(CHROMIUM)" || command -v chromium >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "installing chromium (apt)" && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	{ echo "the browser tests need Chromium: apt-get install -y chromium (or CHROMIUM=/path/to/it)"; exit 1; }

## Debian's prometheus (promtool, and a real server scraping a real serve in
## tests/test_prometheus.py): installed with apt when missing and possible.
prometheus:
	@command -v promtool >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "installing prometheus (apt)" && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null 2>&1; }; }; } || \
	{ echo "the Prometheus tests need promtool and prometheus: apt-get install -y prometheus"; exit 1; }

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

## Refresh the browser libraries the edge serves (services/edge/web/static/vendor) from the
## versions package-lock.json pins.
vendor: $(STAMP)
	cd services/edge/web && npm ci --no-audit --no-fund
	$(BIN)/python -m services.edge.web.vendor
