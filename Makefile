# mespot — set-up and checks. `make install` once, then `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint format bench clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes, so a second `make install` returns at once.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "mespot needs Python >= 3.10, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --progress-bar off -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Preprocessing speed, flow accuracy and memory → experiments/bench/preprocess.{json,md} (~5 min);
# model sizes, train/infer speed and epoch memory → experiments/bench/training.{json,md} (~5 min).
bench: install
	$(BIN)/python -m mespot.bench.preprocess
	$(BIN)/python -m mespot.bench.training

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
