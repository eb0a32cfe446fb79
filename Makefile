PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install system-packages test test-all lint bench demo clean

install:  ## virtual environment + the project with its dev tools (DeepSpeed without compiled ops)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e '.[dev]'
	@$(MAKE) --no-print-directory system-packages

system-packages:  ## WordNet (METEOR) and Chromium (the HTML report's rendering test): apt-get as root, else the command to run
	@missing=""; \
	{ [ -f /usr/share/wordnet/index.sense ] && [ -f /usr/share/wordnet/data.noun ]; } || missing=" wordnet-base wordnet-sense-index"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then \
		:; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } || \
		echo "apt-get could not install$$missing: METEOR is recorded as missing and the Chromium test skips until they are"; \
	else \
		echo "optional system packages: run 'sudo apt-get install$$missing' (until then METEOR is recorded as missing and the tests that need them skip)"; \
	fi

test:  ## the fast offline suite (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow"

test-all:  ## including tests marked slow
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench:  ## performance figures (JSON lines), not tests
	$(BIN)/python benchmarks/prepare.py

demo:  ## the embedded default: synthetic corpus -> dataset -> examples -> tiny UniMP -> baselines -> leaderboard + report (demo/)
	$(BIN)/unimp-bench demo --out demo

clean:
	rm -rf data/synthetic demo bench-out .pytest_cache
