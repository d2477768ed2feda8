# Two commands: `make repro` (run the pipeline) and `make test` (run the tests). Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch pinned to the releases these offline machines carry; plain pip on any other machine resolves them too.
TORCH := torch==2.14.1 torchvision==0.29.1
TIMINGS := .m2m-timings.jsonl
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	@git rev-parse --git-dir >/dev/null 2>&1 || { echo "make repro needs a git checkout (DVC runs inside one)"; exit 1; }
	rm -f $(TIMINGS)
	time PATH="$(abspath $(BIN)):$$PATH" M2M_TIMINGS=$(abspath $(TIMINGS)) $(BIN)/dvc repro
	@if [ -s $(TIMINGS) ]; then $(BIN)/m2m timings $(TIMINGS); fi

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
