# Two commands for a fresh machine (see README):
#   make run    create .venv, install, then `mlflow run . -P dataset=$(DATASET)`
#   make test   create .venv, install with dev extras, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?=
OVERRIDES ?=
DATASET ?= $(if $(CONFIG),,mnist)
# Local data: the offline copies next to the repo when present, else torchvision downloads into ./data.
DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),)
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns/mlflow.db
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run run-isolated test install lock docs ui dashboard lint bench clean-work

# Every install takes the versions pinned in requirements.lock (pip constraints): two installs a week
# apart resolve the same numpy, scikit-learn, hdbscan and optuna. pip prints each package as it goes.
$(BIN)/.installed: pyproject.toml requirements.txt requirements.lock
	@echo "i2x: installing into $(VENV) from requirements.lock (the first time: about 2-5 minutes; torch is the largest)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock pip
	rm -rf i2x.egg-info  # a stale one in the checkout would hide the new entry points (the MLflow store plugin) from `mlflow`
	set -o pipefail; $(BIN)/python -m pip install -c requirements.lock -e '.[dev]' 2>&1 \
	  | { grep --line-buffered -v -E 'is ignored: it is neither a file|^Requirement already satisfied' || true; }
	touch $@
	@echo "i2x: installed ($$($(BIN)/python -m pip freeze --exclude-editable | wc -l) pinned packages)"

# A new requirements.lock from a fresh environment (after changing requirements.txt or the dev extras).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ head -2 requirements.lock; echo "# Resolved $$(date +%F) on $$(uname -s) $$(uname -m), Python 3.11, from PyPI and the local torch wheels."; \
	  echo "pip==$$(.lock-venv/bin/python -m pip --version | cut -d' ' -f2)"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > requirements.lock.new && mv requirements.lock.new requirements.lock
	rm -rf .lock-venv

install: $(BIN)/.installed

run: install
	mkdir -p mlruns
	$(BIN)/python -c "from i2x.platform.tracking import init_store; init_store()"  # create the store's tables once, under a lock
	$(BIN)/mlflow run . -P dataset=$(DATASET) -P config=$(CONFIG) -P data_dir=$(DATA_DIR) -P overrides=$(OVERRIDES) --env-manager local

# The same job in the environment MLflow builds from python_env.yaml (first build: minutes).
run-isolated: install
	mkdir -p mlruns
	$(BIN)/python -c "from i2x.platform.tracking import init_store; init_store()"
	$(BIN)/mlflow run . -P dataset=$(DATASET) -P data_dir=$(DATA_DIR)

test: install
	$(BIN)/python -m pytest -q

docs: install  # the generated parts of docs/: the config reference
	$(BIN)/python -c "from i2x.platform.config_io import config_table; print(config_table())" > docs/config.md

lint: install
	$(BIN)/ruff check i2x pipelines tests bench

ui: install
	@echo "MLflow UI: open a runs table below (these URLs ask for the runs view: MLflow 3 opens on its GenAI view otherwise)"
	@$(BIN)/python -c "import mlflow; from i2x.platform.tracking import where_to_look; c = mlflow.MlflowClient(); \
	  [print(f'  {e.name}: ' + where_to_look(e.experiment_id)[1]) for e in c.search_experiments() if c.search_runs([e.experiment_id], max_results=1)]" \
	  || echo "  (no runs yet: make run first)"
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

dashboard: install
	$(BIN)/i2x dashboard --port 8080

bench: install
	$(BIN)/python bench/train_mnist.py

clean-work:
	rm -rf mlruns/i2x-work
