# FleetWatch — the two commands: `make demo` and `make test`.
# Everything either needs is installed by these targets from pinned files
# (requirements*.lock, web/frontend/package-lock.json).

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q
FRONT := web/frontend
NODE_STAMP := $(FRONT)/node_modules/.package-lock.json
APP_INDEX := web/static/app/index.html
FRONT_SRC := $(shell find $(FRONT)/src -type f 2>/dev/null) $(FRONT)/index.html \
	$(FRONT)/vite.config.ts $(FRONT)/tsconfig.json

.PHONY: demo test lint typecheck unit env dev-env assets front-test screenshots system-deps bench-deps clean

demo: env assets
	$(BIN)/fleetwatch demo

test: dev-env assets system-deps lint typecheck front-test unit

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest

env: $(VENV)/.runtime
dev-env: $(VENV)/.dev
assets: $(APP_INDEX)

$(VENV)/.runtime: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.lock $(VENV)/.runtime
	$(PIP) install -r requirements-dev.lock
	touch $@

# The page is a Vite application (web/frontend/: Vue 3, TypeScript, Element Plus, Leaflet,
# ECharts), installed from npm with its lock file, built into web/static/app/ (git-ignored),
# never fetched from a CDN: monitoring rooms sit on sealed government networks. Both steps
# are incremental: npm ci only when the lock file changes, vite build only when a source does.
$(NODE_STAMP): $(FRONT)/package.json $(FRONT)/package-lock.json
	npm ci --prefix $(FRONT) --no-audit --no-fund --loglevel=error
	touch $@

$(APP_INDEX): $(NODE_STAMP) $(FRONT_SRC)
	cd $(FRONT) && npx vite build --logLevel warn

# Unit tests of the pure TypeScript modules, and the type check of the whole application.
front-test: $(NODE_STAMP)
	cd $(FRONT) && npx vitest run
	cd $(FRONT) && npx vue-tsc --noEmit -p tsconfig.json

# docs/screenshots/: every view of the application, in Debian's chromium, against the demo.
screenshots: dev-env assets system-deps
	$(BIN)/python -m web.screenshots docs/screenshots

# Debian packages the tests need (the machines run as root): chromium and a CJK font for the
# browser tests (the Chinese page renders in screenshots); etcd, haproxy and nats-server for
# the cluster tests, which start their own (none is left running as a service).
SYSTEM_DEPS := chromium fonts-wqy-zenhei etcd-server haproxy nats-server
system-deps:
	@dpkg -s $(SYSTEM_DEPS) >/dev/null 2>&1 || { \
	  echo "installing Debian packages for the tests: $(SYSTEM_DEPS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq $(SYSTEM_DEPS) >/dev/null; }

# PostGIS, for the geofence benchmark's baseline; Patroni, for `fleetwatch bench failover`.
BENCH_DEPS := postgresql-15-postgis-3 patroni
bench-deps: system-deps
	@dpkg -s $(BENCH_DEPS) >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq $(BENCH_DEPS) >/dev/null; }

clean:
	rm -rf $(VENV) $(FRONT)/node_modules web/static/app .mypy_cache .ruff_cache .pytest_cache
