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

# Serves the example app over HTTP (all roles in one process, SQLite in $(DATA)). Without
# SWITCHBACK_ADMIN_TOKENS in the environment a development token "dev-token" is used.
PORT ?= 9099
up: install
	$(BIN)/switchback lint $(APP)
	@url=http://127.0.0.1:$(PORT); tok=$${SWITCHBACK_ADMIN_TOKENS:+<your token>}; tok=$${tok:-dev-token}; \
	echo ""; \
	echo "switchback gateway on $$url  (docs/gateway.md; Ctrl-C stops it)"; \
	echo "  curl -s $$url/sites -H 'Content-Type: application/json' -d @$(APP)/request.json"; \
	echo "  curl -s $$url/transactions -H 'Authorization: Bearer '$$tok"; \
	echo "  curl -s $$url/openapi.json | head -c 300; curl -s $$url/metrics | head"; \
	echo "  $(BIN)/switchback tx list --server $$url   (with SWITCHBACK_TOKEN=$$tok)"; \
	echo ""
	SWITCHBACK_ADMIN_TOKENS="$${SWITCHBACK_ADMIN_TOKENS:-dev=dev-token}" \
	QUICKSTART_DIR=$(DATA)/quickstart-inventory \
	exec $(BIN)/switchback serve $(APP) --data $(DATA) --port $(PORT)

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
