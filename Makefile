# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf

.PHONY: install demo test test-unit test-integration test-e2e proto lint-proto buf haproxy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP) haproxy
	PYTHONUNBUFFERED=1 $(BIN)/ebbflow demo

# The router's HAProxy front (best effort: without it the Python router serves alone).
haproxy:
	@scripts/install_haproxy.sh

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --prefix $(TOOLS) @bufbuild/buf@1

buf: $(BUF)

lint-proto: $(BUF)
	$(BUF) lint
	$(BUF) format --diff --exit-code

proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

test: $(STAMP) lint-proto haproxy
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP) haproxy
	$(BIN)/python -m pytest -q tests/integration

test-e2e: $(STAMP) haproxy
	$(BIN)/python -m pytest -q tests/e2e

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
