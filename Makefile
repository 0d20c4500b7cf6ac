# One environment, created from the lock file; every target depends on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8

.PHONY: env dev test browser lint typecheck pytest fmt clean docs

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-extras --quiet
	touch $@

env: $(VENV)/.synced

## Run the whole system locally: Postgres, broker, topics, migrations, four services, demo data.
dev: env
	$(BIN)/pmo dev

## Lint, type-check and run every test.
test: env browser lint typecheck pytest

## The dashboard test drives Debian's Chromium; install it when missing (needs root and apt).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v "$$PMO_CHROMIUM" >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: env
	$(BIN)/mypy

pytest: env
	$(BIN)/pytest $(PYTEST_ARGS)

fmt: env
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .pmo

## Regenerate the committed AsyncAPI and OpenAPI documents from the code.
docs: env
	$(BIN)/python -m shared.asyncapi > docs/asyncapi.json
	$(BIN)/python -m services.reporting.openapi > docs/openapi.json
