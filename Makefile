# The two commands of the README: `make demo` (local stack + demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo dev test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/outdial demo

dev: setup
	$(BIN)/outdial dev

# Two pytest workers, whole files each (a file's test servers and fixtures are per module).
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n 2 --dist loadfile

# Benchmarks against a baseline measured in the same run (README, Performance). The 10,000 waiting
# orders take a while on a small machine.
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/orchestration.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/placement.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/windows.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/semaphore.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/waiting.py

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
