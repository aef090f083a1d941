# Salon's commands. `make demo` and `make test` set everything up first on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
NODE_CLIENT := clients/node
NODE_STAMP  := $(NODE_CLIENT)/node_modules/.package-lock.json

.PHONY: setup node-setup chromium demo serve test test-unit lint protos protos-check buf-lint buf-breaking bench check clean

## setup: create .venv and install the engine, the client package and the dev tools
setup: $(STAMP)
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

## node-setup: install the Node.js example client's dependencies (pinned by its package-lock.json)
node-setup: $(NODE_STAMP)
$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(NODE_CLIENT) && npm ci --silent --no-audit --no-fund && touch node_modules/.package-lock.json; \
	else echo "npm not found: the Node.js example client's dependencies are not installed"; fi

## chromium: the system's Chromium for the chat page's browser tests, installed from the OS packages when missing
## (Playwright drives it by path; it never downloads a browser of its own)
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium from the system's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium not found and apt-get not usable: the browser tests will be skipped"; fi

## demo: start Salon on embedded defaults and stream a conversation on three sessions
demo: setup
	$(VENV)/bin/salon demo

## serve: run the engine until Ctrl-C
serve: setup
	$(VENV)/bin/salon serve

## test: the whole suite (unit + integration with real NATS, Ray and gRPC), in three worker processes: most
## integration tests wait on real processes (leases expiring, servers restarting), so two cores serve three.
## Each worker starts its own nats-server and Ray; a test file stays on one worker.
test: setup node-setup chromium
	$(VENV)/bin/pytest -n 3 --dist loadfile --no-loadscope-reorder

test-unit: setup
	$(VENV)/bin/pytest tests/unit

## lint: ruff, mypy, the import contracts (lint-imports), generated code up to date, buf lint
lint: setup protos-check buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## protos: regenerate the Python stubs from protos/
protos: setup
	$(PY) scripts/gen_protos.py

protos-check: setup
	$(PY) scripts/gen_protos.py --check

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

buf-lint: $(BUF)
	$(BUF) lint

## buf-breaking: the API must stay compatible with the previous commit
buf-breaking: $(BUF)
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: no previous commit with an API to compare against"; fi

## bench: benchmarks (not part of the tests)
bench: setup
	$(PY) -m bench.bench_turns

## check: everything CI runs
check: lint buf-breaking test

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache $(NODE_CLIENT)/node_modules
