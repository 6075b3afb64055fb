# Two commands a user needs: `make run` and `make test`. Each bootstraps .venv idempotently.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service.stack

lint: $(STAMP)
	$(BIN)/ruff check service workers tests bench
	$(BIN)/ruff format --check service workers tests bench
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/progress_rate.py
	$(BIN)/python bench/sse_fanout.py
	$(BIN)/python bench/progress_latency.py
	$(BIN)/python bench/chaos.py
	$(BIN)/python bench/cluster.py

fmt: $(STAMP)
	$(BIN)/ruff format service workers tests bench
	$(BIN)/ruff check --fix service workers tests bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
