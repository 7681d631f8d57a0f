# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench cluster clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when a project file changes.
$(STAMP): $(BIN)/python pyproject.toml $(wildcard clients/python/pyproject.toml)
	$(BIN)/pip install --quiet -e '.[test]'
	if [ -f clients/python/pyproject.toml ]; then $(BIN)/pip install --quiet -e clients/python; fi
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/broker run --config config.toml

test: $(STAMP) browser-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check broker

browser-deps:
	@if [ -f tests/browser/package.json ] && command -v npm >/dev/null; then \
		cd tests/browser && npm install --silent --no-audit --no-fund; fi

cluster: $(STAMP)
	$(BIN)/broker cluster --nodes 3

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m load.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info load/build

# A longer fuzz run of the peer link (the normal test run does 200 cases per phase).
.PHONY: fuzz-peer
fuzz-peer: $(STAMP)
	BROKER_FUZZ_EXAMPLES=$${BROKER_FUZZ_EXAMPLES:-5000} $(BIN)/python -m pytest -q tests/cluster/test_peer_link_fuzz.py
