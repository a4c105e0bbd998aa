# FleetWatch — the two commands: `make demo` and `make test`.
# Everything either needs is installed by these targets from pinned files
# (requirements*.lock, web/package-lock.json).

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q
VENDOR := web/static/vendor/leaflet/leaflet.js

.PHONY: demo test lint typecheck unit env dev-env assets system-deps bench-deps clean

demo: env assets
	$(BIN)/fleetwatch demo

test: dev-env assets system-deps lint typecheck unit

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest

env: $(VENV)/.runtime
dev-env: $(VENV)/.dev
assets: $(VENDOR)

$(VENV)/.runtime: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.lock $(VENV)/.runtime
	$(PIP) install -r requirements-dev.lock
	touch $@

# Leaflet comes from npm (pinned in web/package-lock.json), never from a CDN:
# monitoring rooms often sit on government intranets.
$(VENDOR): web/package.json web/package-lock.json web/build_assets.py $(VENV)/.runtime
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	$(BIN)/python web/build_assets.py

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
	rm -rf $(VENV) web/node_modules web/static/vendor .mypy_cache .ruff_cache .pytest_cache
