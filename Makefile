# The two set-up commands (see README): `make demo` runs the main job, `make test` runs the tests.
PY := .venv/bin/python
SETUP_INPUTS := pyproject.toml scripts/setup.sh scripts/setup_bqemulator.sh scripts/constraints.txt

.PHONY: setup demo test ui bench bench-graph
setup: .venv/.installed
.venv/.installed: $(SETUP_INPUTS)
	bash scripts/setup.sh

demo: setup
	$(PY) -m emberharmony_assets.main $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

ui: setup
	DAGSTER_HOME=$(CURDIR)/data/dagster_home .venv/bin/dagster dev

bench: setup
	$(PY) -m emberharmony_core.bench $(ARGS)

bench-graph: setup
	$(PY) -m emberharmony_assets.bench $(ARGS)
