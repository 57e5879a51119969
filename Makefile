# The README's commands. `make install` creates .venv, installs the pinned-as-tested torch first
# (CPU wheel; override with `make install TORCH="torch==2.5.1"`), then the project with its dev extra.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all lint bench

$(BIN)/dmri-revgan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/dmri-revgan

demo: install
	$(BIN)/dmri-revgan demo

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check dmri_revgan tests pipelines
	$(BIN)/ruff format --check dmri_revgan tests pipelines

bench: install
	$(BIN)/dmri-revgan bench memory
