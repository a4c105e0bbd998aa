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

# Debian packages the browser tests need (the machines run as root): chromium, and a CJK
# font so the Chinese page renders in screenshots.
system-deps:
	@command -v chromium >/dev/null 2>&1 && dpkg -s fonts-wqy-zenhei >/dev/null 2>&1 || { \
	  echo "installing Debian chromium and a CJK font for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; }

# PostGIS, for the geofence benchmark's baseline only.
bench-deps:
	@dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq postgresql-15-postgis-3 >/dev/null; }

clean:
	rm -rf $(VENV) $(FRONT)/node_modules web/static/app .mypy_cache .ruff_cache .pytest_cache
