# charlm — common tasks. `make help` lists them.
PY ?= python

.PHONY: help setup train test test-full lint format benchmark

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## install charlm with every extra (install torch first for a CPU-only build, see README)
	$(PY) -m pip install -q -e ".[all]"

train: setup  ## set up, then train the default LSTM on Tiny Shakespeare
	$(PY) scripts/train.py model=lstm trainer.devices=1

test: setup  ## set up, check lint and format, then the test suite less the slow tests (a few minutes on 2 cores)
	$(PY) -m ruff check src scripts tests && $(PY) -m ruff format --check src scripts tests
	$(PY) -m pytest -m "not slow"

test-full: setup  ## set up, check lint and format, then every test, the slow multi-process ones too
	$(PY) -m ruff check src scripts tests && $(PY) -m ruff format --check src scripts tests
	$(PY) -m pytest

lint:  ## ruff: lint and format check
	ruff check src scripts tests && ruff format --check src scripts tests

format:  ## ruff autofix and format
	ruff check --fix src scripts tests && ruff format src scripts tests

benchmark:  ## training and generation throughput against plain PyTorch loops
	$(PY) scripts/benchmark.py train && $(PY) scripts/benchmark.py generate
