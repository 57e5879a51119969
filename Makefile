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

# Table 5 (3D and 2D memory/time vs depth), full-volume inference and training speed, written
# to results/ as JSON + markdown (+ PNG). MemCNN goes in without its torchvision dependency.
bench: install
	$(BIN)/python -m pip install --quiet --no-deps "memcnn==1.5.2" || echo "memcnn: mode skipped"
	$(BIN)/python pipelines/memory_table5.py --out results
	$(BIN)/dmri-revgan bench infer --out results
	$(BIN)/dmri-revgan bench train --out results
