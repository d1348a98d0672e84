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

.PHONY: serve test test-newest test-postgres test-gpu chaos check lint typecheck imports bench install

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

# Four test processes even on two cores: the tests mostly wait (on servers they started,
# retries, deadlines), and on this project's 2-core CI machine -n 4 took the suite from 420 s
# to 307 s. Every wait in the tests is on a condition with a generous bound, not a timing.
test: check
	$(UV) run --frozen pytest -n 4 --ignore=tests/gpu $(ARGS)

# The suite again on the newest CPython (NEWEST_PYTHON: a version uv can find, or the path
# of an interpreter) in an environment of its own, with the newest SQLAlchemy of the
# registry instead of the locked one: the store compiles statements through SQLAlchemy's
# compiler internals (store/query.py), so a release that changes them is seen here first.
NEWEST_PYTHON ?= 3.13
NEWEST_VENV := .venv-newest

test-newest: | $(UV)
	UV_PROJECT_ENVIRONMENT=$(NEWEST_VENV) $(UV) sync --frozen --quiet --python $(NEWEST_PYTHON)
	$(UV) pip install --python $(NEWEST_VENV)/bin/python --quiet --upgrade "sqlalchemy[asyncio]"
	$(NEWEST_VENV)/bin/python -c 'import sqlalchemy, sys; print("Python", sys.version.split()[0], "SQLAlchemy", sqlalchemy.__version__)'
	$(NEWEST_VENV)/bin/python -m pytest -n 4 --ignore=tests/gpu $(ARGS)

# The API suite again with every test server on its own PostgreSQL database (the
# machine's, at IMAGINE_TEST_POSTGRES); tests of engine-free code (settings refused at
# start, log formats), of the CLI's commands on a data dir, or that already run on both
# engines are left out, as are the clients of the API (the pages in Chromium, the SDK, a
# generated client, the docs' commands), which see the same API whatever its engine.
POSTGRES_PASS_SKIPS := --ignore=tests/browser --ignore=tests/client \
	--ignore=tests/test_generated_client.py --ignore=tests/test_docs_commands.py \
	--ignore=tests/test_quickstart.py --ignore=tests/test_packaging.py \
	--ignore=tests/test_api_docs.py --ignore=tests/test_openapi_document.py \
	--ignore=tests/test_architecture.py --ignore=tests/test_media.py \
	--ignore=tests/test_rules.py --ignore=tests/test_fetch_safety.py \
	--ignore=tests/test_deploy_files.py --ignore=tests/test_lifecycle.py \
	--ignore=tests/test_ledger_properties.py --ignore=tests/test_migrations.py \
	--ignore=tests/storage/test_storage_contract.py --ignore=tests/test_cli.py \
	--ignore=tests/test_shared_budgets.py --ignore=tests/test_schema_check.py \
	--ignore=tests/test_readiness.py --ignore=tests/test_provider_settings.py \
	--ignore=tests/test_logging.py --ignore=tests/gpu

test-postgres: install
	IMAGINE_TEST_ENGINE=postgres $(UV) run --frozen pytest -n 4 $(POSTGRES_PASS_SKIPS) $(ARGS)

# The local provider (docs/gpu.md) on tiny random pipelines, on the CPU, in an environment
# of its own: torch and diffusers stay out of .venv and of `make install`. The project's
# locked dependencies come from uv.lock (uv); torch, which uv can't be pointed at
# without naming where it lies, through pip, which finds the CPU build this machine keeps
# on disk (its find-links; elsewhere pip takes PyPI's build). The environment is kept and
# rebuilt only when the lock, this file or pyproject.toml change.
GPU_VENV := .venv-gpu
GPU_PACKAGES := torch==2.13.0 diffusers==0.42.1 transformers==5.18.0 accelerate==1.16.0
GPU_TEST_PACKAGES := pytest pytest-asyncio pytest-xdist httpx asyncpg

$(GPU_VENV)/.ready: uv.lock pyproject.toml Makefile | $(UV)
	rm -rf $(GPU_VENV)
	$(PYTHON) -m venv $(GPU_VENV)
	$(UV) export --frozen --no-hashes --no-emit-project --extra postgres --group dev \
		--output-file $(GPU_VENV)/locked.txt --quiet
	$(UV) export --frozen --no-hashes --no-emit-project --extra postgres --no-dev \
		--output-file $(GPU_VENV)/runtime.txt --quiet
	$(UV) pip install --python $(GPU_VENV)/bin/python --quiet -r $(GPU_VENV)/runtime.txt \
		-c $(GPU_VENV)/locked.txt $(GPU_TEST_PACKAGES)
	$(UV) pip install --python $(GPU_VENV)/bin/python --quiet --no-deps -e .
	$(GPU_VENV)/bin/pip install -qq --disable-pip-version-check \
		-c $(GPU_VENV)/locked.txt $(GPU_PACKAGES)
	touch $@

test-gpu: $(GPU_VENV)/.ready
	IMAGINE_TEST_GPU=1 $(GPU_VENV)/bin/python -m pytest tests/gpu $(ARGS)

chaos: install
	$(UV) run --frozen pytest -n 2 -m chaos tests/chaos $(ARGS)

bench: install
	$(UV) run --frozen python -m bench.api $(ARGS)
