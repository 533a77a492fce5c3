# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
DASHBOARD_TOOLS := $(TOOLS)/.dashboard-tools-installed

.PHONY: install demo test test-unit test-integration test-e2e proto lint-proto buf haproxy prometheus kube dashboards clean

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

# promtool for the rule tests, prometheus for `ebbflow up --prometheus` (Debian's; its service is not started).
prometheus:
	@scripts/install_prometheus.sh

# kube-apiserver, kube-controller-manager and kube-scheduler built from Debian's source (once per machine, 8-12 min on
# 2 cores), cached in ~/.cache/ebbflow/kubernetes-1.20.2/bin, plus Debian's etcd: the tests' real Kubernetes API server.
kube:
	@nice -n 10 scripts/build-kube.sh

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --prefix $(TOOLS) @bufbuild/buf@1

buf: $(BUF)

# The dashboards' type-check (deploy/grafana): the TypeScript compiler and Grafana's schema types.
$(DASHBOARD_TOOLS):
	mkdir -p $(TOOLS)
	npm install --silent --prefix $(TOOLS) typescript@5 @grafana/schema@11
	touch $@

# Regenerate deploy/grafana/*.json from the typed sources (the tests check they match).
dashboards: $(DASHBOARD_TOOLS)
	node deploy/grafana/build.cjs

lint-proto: $(BUF)
	$(BUF) lint
	$(BUF) format --diff --exit-code

proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

test: $(STAMP) lint-proto haproxy prometheus kube $(DASHBOARD_TOOLS)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: $(STAMP) prometheus $(DASHBOARD_TOOLS)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP) haproxy kube
	$(BIN)/python -m pytest -q tests/integration

test-e2e: $(STAMP) haproxy prometheus $(DASHBOARD_TOOLS)
	$(BIN)/python -m pytest -q tests/e2e

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
