# pgpulse: `make demo` runs the whole system on throwaway local services,
# `make test` runs every suite against real PostgreSQL (pg_cron) and redis-server,
# `make check` lint, formatting and the unit tests (seconds).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_SECONDS ?= 120

.PHONY: demo test check bench deps clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	@touch $@

demo: deps
	$(BIN)/pgpulse demo --seconds $(DEMO_SECONDS)

test: deps
	$(BIN)/pytest

# lint and formatting, then the tests that need no service: run before every commit
check: deps
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/pytest -q tests/unit

bench: deps
	$(BIN)/pgpulse bench all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
