# Two commands set everything up on a fresh machine with Python 3.11+:
#   make serve   serve the API on the embedded default (SQLite, ./imagine-data, preview engine)
#   make test    lint, type-check and run the tests
# uv (pinned) is bootstrapped into .tools/ so nothing is installed outside this folder.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
ARGS ?=

# The suite starts hundreds of Python processes (test servers, workers, the CLI). Where
# the environment turns Python's bytecode cache off (PYTHONDONTWRITEBYTECODE, common in
# container images) each of them compiles every module again: 4.6 s to import the app
# instead of 1.7 s on this project's CI machine. The cache is only ever a speed-up.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: serve test test-postgres chaos check lint typecheck imports bench install

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --frozen

serve: install
	$(UV) run --frozen imagine serve $(ARGS)

lint: install
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen ruff check src tests bench

typecheck: install
	$(UV) run --frozen mypy

# The import contracts of pyproject.toml ([tool.importlinter]): layers one way only.
imports: install
	$(UV) run --frozen lint-imports

check: lint typecheck imports

test: check
	$(UV) run --frozen pytest -n 2 $(ARGS)

# The API suite again with every test server on its own PostgreSQL database (the
# machine's, at IMAGINE_TEST_POSTGRES); tests of engine-free code (settings refused at
# start, log formats), of the CLI's commands on a data dir, or that already run on both
# engines are left out.
POSTGRES_PASS_SKIPS := --ignore=tests/test_architecture.py --ignore=tests/test_media.py \
	--ignore=tests/test_rules.py --ignore=tests/test_fetch_safety.py \
	--ignore=tests/test_deploy_files.py --ignore=tests/test_lifecycle.py \
	--ignore=tests/test_ledger_properties.py --ignore=tests/test_migrations.py \
	--ignore=tests/storage/test_storage_contract.py --ignore=tests/test_cli.py \
	--ignore=tests/test_shared_budgets.py --ignore=tests/test_schema_check.py \
	--ignore=tests/test_readiness.py --ignore=tests/test_provider_settings.py \
	--ignore=tests/test_logging.py

test-postgres: install
	IMAGINE_TEST_ENGINE=postgres $(UV) run --frozen pytest -n 2 $(POSTGRES_PASS_SKIPS) $(ARGS)

chaos: install
	$(UV) run --frozen pytest -n 2 -m chaos tests/chaos $(ARGS)

bench: install
	$(UV) run --frozen python -m bench.api $(ARGS)
