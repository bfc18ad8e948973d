# pgpulse: `make demo` runs the whole system on throwaway local services,
# `make check` formatting, lint, types and the fast lane of tests (under 2 minutes),
# `make test` check, then every other suite against real PostgreSQL (pg_cron) and
# redis-server (CI).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_SECONDS ?= 120

.PHONY: demo test check bench docs deps clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	@touch $@

demo: deps
	$(BIN)/pgpulse demo --seconds $(DEMO_SECONDS)

# everything: the fast lane, then the tests outside it (slow ones last)
test: check
	$(BIN)/pytest -m "not check"

# formatting, lint, relay/'s types, then the lane of tests/conftest.py CHECK_LANE (unit,
# dev server and scheduling tests, none marked slow): run before every commit
check: deps
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -m check

bench: deps
	$(BIN)/pgpulse bench all

# docs/settings.md is generated from relay/config.py (a check-lane test compares them)
docs: deps
	$(BIN)/python -m relay.config > docs/settings.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# the unreleased revision's SQL, from sql/ (a check-lane test compares them); at a tag,
# `make release-manifest REVISION=0.2.0` records its files' hashes (then commit, then tag)
.PHONY: freeze release-manifest
freeze: deps
	$(BIN)/python -m migrations.freeze

release-manifest: deps
	$(BIN)/python -m migrations.released $(REVISION)
