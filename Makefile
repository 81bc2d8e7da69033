# The README names two targets: `make serve` and `make test`. Each sets itself up first.
.PHONY: serve test lint typecheck bench setup clean

VENV ?= .venv
PY := $(VENV)/bin/python

setup:
	@scripts/setup.sh

serve: setup
	$(VENV)/bin/evaljail doctor
	$(VENV)/bin/evaljail serve

test: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/engine_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
