# The two commands a user needs are `make run` and `make test`; everything else here serves them.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# The stamp records that the venv matches the pinned requirements, so a second `make test` installs nothing.
INSTALLED := $(VENV)/.installed

.PHONY: install test test-quick lint run infer-config bench lock clean env docs docs-build

install: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	# --compile-bytecode: this machine sets PYTHONDONTWRITEBYTECODE=1, and without .pyc files every
	# Airflow and MLflow process starts 2-4x slower.
	$(UV) pip install --python $(PY) --compile-bytecode -r requirements.txt -r requirements-dev.txt
	touch $@

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# The import rules of pyproject.toml; plugins/ is on the path, as Airflow puts it there.
	PYTHONPATH=plugins $(VENV)/bin/lint-imports --no-cache

# Two workers on two cores (pytest-xdist): the e2e tests' stack mostly waits on its runs, and the other worker runs
# the rest meanwhile. A test file goes to one worker whole, the e2e package's files together, the longest first
# (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The edit loop (about 2 minutes here): the library, the lakeFS server's contract, the charts, the request schema
# and the docs site (a new config field needs its description), with the MLflow and lakeFS servers they need but
# no Airflow, model service or stack. `make test` runs everything, as CI does.
QUICK_TESTS := tests/mlops tests/lakefs_server tests/deploy tests/serving/test_schema.py \
	tests/test_no_credentials_in_the_repository.py tests/test_docs.py

test-quick: lint
	$(PY) -m pytest $(QUICK_TESTS) $(PYTEST_ARGS)

run: $(INSTALLED)
	$(PY) -m devstack $(ARGS)

# A model's config drafted from a sample of its data, to review before use (docs/getting-started.md, "Bring your own data"):
#   make infer-config ARGS="exports/ --target churned --name churn -o include/config/churn.yaml"
# `@`: without -o the config goes to standard output, where an echo of the command would corrupt it.
infer-config: $(INSTALLED)
	@$(PY) -m include.mlops.infer_config $(ARGS)

# Speed and memory figures, printed as tables and kept as JSON in benchmarks/results/.
BENCHMARKS := data_pipeline training_overhead boosting categories serving drift_check pipeline local_stack_memory mlops_page \
	batch_scoring performance_estimate

bench: $(INSTALLED)
	for benchmark in $(BENCHMARKS); do $(PY) -m benchmarks.$$benchmark || exit 1; done

lock: | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip compile --python-version 3.11 requirements.in -o requirements.txt
	$(UV) pip compile --python-version 3.11 requirements-dev.in -o requirements-dev.txt

# The documentation site (MkDocs with Material; mkdocs.yml): `make docs` serves it at http://127.0.0.1:8000 and
# rebuilds on every change; `make docs-build` builds it into site/, strict (a broken link or anchor, a page left out
# of the nav, or a config field without a description fails, naming it), as tests/test_docs.py does.
# NO_MKDOCS_2_WARNING: Material prints a banner about MkDocs 2 on every build otherwise.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8000

docs-build: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

# docker compose's .env with random secrets, from .env.example; an existing .env is left as it is. Standard
# library only, so it needs no venv.
env:
	$(PYTHON) -m devstack.compose_env

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache site
