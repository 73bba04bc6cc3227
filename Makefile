# switchback — the two quick-start commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= .switchback
APP ?= examples/provision

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
	bash scripts/system-deps.sh netconfd openssh-server openssh-client frr

# Starts the platform with the example app (examples/provision): its real peers on loopback, each
# when it can run here — moto's server (AWS) and a NETCONF device (netconfd behind its own sshd;
# needs root and the Debian packages, which system-deps installs when run as root) — then
# `switchback up`: the controller (xDS control plane + local runtime + releases) deploys the app as
# v1 of `production`, every role with its Envoy sidecar, behind an ingress on $(PORT). SQLite in
# $(DATA). Ctrl-C stops everything. Without SWITCHBACK_ADMIN_TOKENS in the environment a
# development token "dev-token" is used.
PORT ?= 9099
up: install
	-@$(MAKE) --no-print-directory system-deps || echo "make up: Debian packages missing: the NETCONF device will not start" >&2
	$(BIN)/switchback lint $(APP)
	SWITCHBACK_ADMIN_TOKENS="$${SWITCHBACK_ADMIN_TOKENS:-dev=dev-token}" \
	QUICKSTART_DIR=$(DATA)/quickstart-inventory PYTHONPATH=examples/provision \
	exec $(BIN)/python -m provision_app.lab up --app $(APP) --data $(DATA) --port $(PORT)

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
