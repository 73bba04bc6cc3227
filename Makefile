# switchback — the two quick-start commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= .switchback
APP ?= examples/quickstart

.PHONY: install system-deps up test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian packages the integration tests need (real peers). Idempotent and quiet when present.
system-deps:
	bash scripts/system-deps.sh

up: install
	$(BIN)/switchback lint $(APP)
	QUICKSTART_DIR=$(DATA)/quickstart-inventory $(BIN)/switchback run $(APP) provision --input $(APP)/request.json --data $(DATA)
	@echo "Next: $(BIN)/switchback tx list --data $(DATA)   (see README.md)"

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

test: install system-deps lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/engine.py --concurrency 8

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .ruff_cache .hypothesis
