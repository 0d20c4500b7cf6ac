# One environment, created from the lock file; every target depends on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8

.PHONY: env dev test tools lint typecheck pytest fmt clean docs bench reliability

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
test: env tools lint typecheck pytest

## Debian packages some tests drive: Chromium (the dashboard test) and kubectl (rendering the
## Kubernetes overlays). Installed when missing (needs root and apt).
tools:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || command -v "$$PMO_CHROMIUM" >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubectl"; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: env
	$(BIN)/mypy

## In parallel (pytest-xdist), a worker a core, at most four: most of a test's time is spent
## waiting for a consumer group's join, a service's start or a broker's answer, not on a core.
## PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= auto
pytest: env
	$(BIN)/pytest --numprocesses=$(PYTEST_WORKERS) --maxprocesses=4 $(PYTEST_ARGS)

## The fault suite at the sizes its guarantees are stated for (10,000 events, 30 s outages);
## make test runs the same scenarios small. See docs/guarantees.md.
reliability: env
	PMO_RELIABILITY_FULL=1 $(BIN)/pytest tests/reliability $(PYTEST_ARGS)

fmt: env
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .pmo

## Regenerate the committed AsyncAPI and OpenAPI documents from the code.
docs: env
	$(BIN)/python -m shared.asyncapi > docs/asyncapi.json
	$(BIN)/python -m services.reporting.openapi > docs/openapi.json

## Benchmarks against this machine's own limits (see docs/performance.md); writes bench-results/.
bench: env
	$(BIN)/python -m bench.run
