# The two commands of the README: `make up` (install + run) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := $(shell grep -E '^torch==' requirements.lock)

.PHONY: install browser up down status demo test lint format bench compose-check clean

install: $(VENV)/.installed

# torch comes through pip: pip honours a machine's local wheel cache (find-links) and on a
# plain machine takes PyPI's build; uv then installs the rest of the lock, torch already there.
$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v java >/dev/null 2>&1 || { \
	  echo "ERROR: Java (17+) is required by Spark but 'java' is not on PATH."; \
	  echo "       Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless"; \
	  echo "       macOS: brew install openjdk@17"; exit 1; }
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "ERROR: $(PYTHON) not found (Python 3.11 is required)."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv "$(TORCH)"
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install --quiet -r requirements.lock
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install --quiet --no-deps -e .
	@touch $@

up: install
	$(BIN)/python -m pipelines services up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m pipelines services down; fi

status: install
	$(BIN)/python -m pipelines services status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The Airflow UI test drives Debian's Chromium (never a downloaded browser build).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "NOTE: /usr/bin/chromium is missing, the browser test will be skipped" \
	    "(install it: sudo apt-get install chromium)"; fi; }

test: install browser lint
	$(BIN)/python -m pytest

# The compose stack on a Docker engine, driven through the user's journey, then removed.
# COMPOSE_CHECK_FLAGS: e.g. --local-images, --set FRAUD_HISTORY_DAYS=40, --keep.
compose-check: install
	$(BIN)/python -m pipelines.platform.cli compose-check $(COMPOSE_CHECK_FLAGS)

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: down
	rm -rf var
