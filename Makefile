PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-all lint bench demo clean

install:  ## virtual environment + the project with its dev tools (DeepSpeed without compiled ops)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e '.[dev]'

test:  ## the fast offline suite (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow"

test-all:  ## including tests marked slow
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench:  ## performance figures (JSON lines), not tests
	$(BIN)/python benchmarks/prepare.py

demo:  ## the embedded default: synthetic corpus -> dataset -> examples -> baselines -> leaderboard (demo/)
	$(BIN)/unimp-bench demo --out demo --overwrite

clean:
	rm -rf data/synthetic demo bench-out .pytest_cache
