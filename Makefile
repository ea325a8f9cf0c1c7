# Every target creates the virtual environment and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Compiled kernels (Numba, cached next to their sources): compiled again when a source changes.
KERNELS := $(VENV)/.kernels
KERNEL_SOURCES := $(shell grep -rl --include=*.py "numba.njit" core)
ARGS   ?=

.PHONY: up test lint format install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Compiled here, once, so that no process spends its first minute compiling.
$(KERNELS): $(STAMP) $(KERNEL_SOURCES)
	@echo "compiling the scoring and learning kernels (about a minute the first time)"
	$(BIN)/fraudstream warm-up
	@touch $(KERNELS)

install: $(KERNELS)

## The main job: embedded broker, producer, scorer, trainer, MLflow store, live view.
up: $(KERNELS)
	$(BIN)/fraudstream up $(ARGS)

## Lint, then the whole suite (integration tests start their own broker processes).
test: $(KERNELS) lint
	$(BIN)/python -m pytest $(ARGS)

## ruff, then mypy (strict on core/ and schemas/; settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache mlflow.db mlruns .fraudstream
