# voicebridge — every command works from a fresh clone with only Python >= 3.11 installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install test lint format run demo bench bench-api bench-dsp bench-edge build deploy image push clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install voicebridge with its dev extras

lint: $(STAMP)  ## ruff (lint + format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint  ## lint, then the whole test suite (unit, socket, end-to-end, template checks)
	$(BIN)/python -m pytest -q

run: $(STAMP)  ## the whole local stack in the foreground (embedded AWS, API, worker, edge, Vapi emulator)
	$(BIN)/python -m infra.local

demo: $(STAMP)  ## a simulated call end to end, then a latency report
	$(BIN)/python -m infra.demo

bench: bench-api bench-dsp bench-edge  ## all benchmarks; results go to BENCHMARKS.md by hand

bench-api: $(STAMP)  ## control-plane handler latency and import time
	$(BIN)/python -m benchmarks.api

bench-dsp: $(STAMP)  ## per-frame DSP cost, resampler quality, VAD accuracy
	@# silero-vad only for its packaged ONNX model: --no-deps keeps torch out (onnxruntime runs it)
	$(BIN)/python -m pip install --quiet --no-deps 'silero-vad>=5,<7'
	$(BIN)/python -m benchmarks.dsp

bench-edge: $(STAMP)  ## edge CPU and added latency at 100/250/500 concurrent calls
	$(BIN)/python -m benchmarks.edge

clean:  ## remove the virtualenv and build output
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache
