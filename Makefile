# r1-pipeline: one entry point per job. `make setup` is idempotent; everything else builds on it.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup lint format test test-fast run pipeline services services-down bench bench-seeds clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU wheel that satisfies the project's range; then the project and test tools.
setup: $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	@$(BIN)/r1 --help >/dev/null && echo "setup: ok"

# House style, enforced: ruff lint + formatter check (config in pyproject.toml). `make format` rewrites.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup
	$(BIN)/python -m pytest -q --durations=25

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

# The main job: the full pipeline on the default tiny profile.
run: setup
	$(BIN)/r1 run

pipeline: setup
	$(BIN)/dvc repro

services: setup
	$(BIN)/r1 services up

services-down:
	$(BIN)/r1 services down

bench: setup
	$(BIN)/python bench/pipeline_times.py

# The tiny profile on 3 seeds x 2 torch thread counts, plus the curated-cold-start comparison per seed (~35 min).
bench-seeds: setup
	$(BIN)/python bench/pipeline_times.py --seeds 0,1,2 --threads 1,2 --curated

clean:
	rm -rf outputs checkpoints mlflow.db mlartifacts .services
