# The two set-up commands (see README): `make demo` runs the main job, `make test` runs the tests.
PY := .venv/bin/python
SETUP_INPUTS := pyproject.toml scripts/setup.sh scripts/setup_bqemulator.sh scripts/constraints.txt

# One data folder and one Dagster instance for `make demo`, `make ui` and docs/ui.md's `dagster` CLI
# commands: data/ and data/dagster_home under this repository (absolute). Set EMBERHARMONY_HOME or
# DAGSTER_HOME (in the environment or as `make ui DAGSTER_HOME=...`) to use others. Not exported to
# `make test`: the tests make their own.
EMBERHARMONY_HOME ?= $(CURDIR)/data
DAGSTER_HOME ?= $(EMBERHARMONY_HOME)/dagster_home
demo ui: export EMBERHARMONY_HOME := $(EMBERHARMONY_HOME)
demo ui: export DAGSTER_HOME := $(DAGSTER_HOME)

.PHONY: setup demo test test-fast lint ui bench bench-graph docs
setup: .venv/.installed
.venv/.installed: $(SETUP_INPUTS)
	bash scripts/setup.sh

demo: setup
	$(PY) -m emberharmony_assets.main $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

# The core tests only: no server, no browser (the numpy backend and the others installed).
test-fast: setup
	$(PY) -m pytest tests/core -q $(ARGS)

# ruff (lint + format check) and mypy, configured in pyproject.toml; .pre-commit-config.yaml runs the same.
# It covers every Python file of the tree: the core, the Dagster wiring, the benchmarks and all of tests/.
LINT_PATHS := emberharmony_core emberharmony_assets benchmarks tests
lint: setup
	.venv/bin/ruff check $(LINT_PATHS)
	.venv/bin/ruff format --check $(LINT_PATHS)
	.venv/bin/mypy $(LINT_PATHS)

ui: setup
	$(PY) -c 'import emberharmony_assets.main as m; m.ensure_instance()'
	.venv/bin/dagster dev -w workspace.yaml

bench: setup
	$(PY) -m benchmarks.bench_core $(ARGS)

bench-graph: setup
	$(PY) -m benchmarks.bench_graph $(ARGS)

docs: setup
	.venv/bin/mkdocs build --strict
