# Two commands on a fresh clone: `make demo` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_NO_PROGRESS := 1

.PHONY: install demo test lint ui bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set nothing is cached later, and every
# process would compile polars, duckdb and dagster again (imports ~2x slower).
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

install: $(VENV)/.synced ## virtual environment with exactly the locked packages

demo: install ## run the whole graph on the bundled sample into the embedded Engramia store
	$(BIN)/assistants-backfill run --input data/sample --data-dir $(DATA)
	$(BIN)/python -m pipelines.tools.demo_recall --data-dir $(DATA)

test: install ## the test suite (starts its own Engramia servers on 127.0.0.1)
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ui: install ## Dagster UI on http://127.0.0.1:3000 with DAGSTER_HOME under data/
	mkdir -p $(DATA)/dagster_home
	cp -n assets/dagster.yaml $(DATA)/dagster_home/dagster.yaml 2>/dev/null || true
	DAGSTER_HOME=$(abspath $(DATA)/dagster_home) BACKFILL_DATA_DIR=$(abspath $(DATA)) \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install ## benchmarks; results in benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(TOOLS) $(DATA)/staged $(DATA)/engramia $(DATA)/dagster_home $(DATA)/warehouse.duckdb
