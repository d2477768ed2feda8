# Two commands: `make repro` (run the pipeline) and `make test` (run the tests). Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch pinned to the releases these offline machines carry; plain pip on any other machine resolves them too.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup repro test lint clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	@test -d .git || (echo "make repro needs a git checkout (DVC runs inside one)"; exit 1)
	DVC_NO_ANALYTICS=1 $(BIN)/dvc repro


test: setup
	DVC_NO_ANALYTICS=1 $(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
