# voicebridge — every command works from a fresh clone with only Python >= 3.11 installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install test lint format run demo bench bench-api bench-dsp bench-edge bench-outbound build deploy image push clean

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

bench-outbound: $(STAMP)  ## dialer: calls per second vs the cap, slot-to-dial latency, invocations
	$(BIN)/python -m benchmarks.outbound

clean:  ## remove the virtualenv and build output
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache

# ---- AWS deploy (README.md#deploy). Variables are evaluated only by the targets that use them.
STACK       ?= voicebridge
AWS_REGION  ?= $(or $(shell aws configure get region 2>/dev/null),us-east-1)
# The commit, plus a timestamp when the edge's sources differ from it (ECR tags are immutable).
IMAGE_TAG   ?= $(shell git rev-parse --short=12 HEAD)$(shell git diff --quiet HEAD -- \
                 voicebridge media_edge infra/Dockerfile pyproject.toml || date +-dirty%s)
IMAGE_NAME  ?= voicebridge-edge
ECR_REPO    ?= $(shell aws cloudformation describe-stacks --region $(AWS_REGION) --stack-name $(STACK) \
                 --query "Stacks[0].Outputs[?OutputKey=='EdgeRepositoryUri'].OutputValue" --output text)
EDGE_IMAGE  ?=
SAM         := $(BIN)/sam
# Lambda runs python3.12 on arm64 (glibc 2.34): wheels for that platform, never a local compiler.
LAMBDA_PIP  := --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
               --python-version 3.12 --implementation cp --only-binary=:all:

build: $(STAMP)  ## sam build: both Lambda bundles into .aws-sam/ (no Docker, no local python3.12)
	SAM_CLI_TELEMETRY=0 $(SAM) build --parallel --template-file template.yaml

# sam build calls these (via infra/lambda/Makefile) with ARTIFACTS_DIR; they are not for humans.
# Any python >= 3.11 with pip will do (sam build --parallel runs both at once: no venv setup here).
BUILD_PY     = $(firstword $(wildcard $(BIN)/python) $(PYTHON))
build-ApiFunction build-WorkerFunction build-DialerFunction:
	$(BUILD_PY) infra/deps.py lambda > "$(ARTIFACTS_DIR)/requirements.txt"
	$(BUILD_PY) -m pip install --quiet --no-compile $(LAMBDA_PIP) \
		--target "$(ARTIFACTS_DIR)" -r "$(ARTIFACTS_DIR)/requirements.txt"
	rm "$(ARTIFACTS_DIR)/requirements.txt"
	cp -R voicebridge functions "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -type d -prune -exec rm -rf {} +

deploy: build  ## sam deploy (--guided until samconfig.toml exists); EDGE_IMAGE=<uri> rolls the edge
	SAM_CLI_TELEMETRY=0 $(SAM) deploy --stack-name $(STACK) --region $(AWS_REGION) \
		$(if $(wildcard samconfig.toml),,--guided) \
		$(if $(EDGE_IMAGE),--parameter-overrides EdgeImageUri=$(EDGE_IMAGE))

image:  ## build the edge image for linux/arm64 (needs Docker with buildx/QEMU on x86 hosts)
	docker build --platform linux/arm64 -f infra/Dockerfile -t $(IMAGE_NAME):$(IMAGE_TAG) .

push: image  ## push the edge image to the stack's ECR repository; prints EDGE_IMAGE for make deploy
	@test -n "$(ECR_REPO)" && test "$(ECR_REPO)" != None || { echo "no stack $(STACK) in $(AWS_REGION): make deploy first"; exit 1; }
	aws ecr get-login-password --region $(AWS_REGION) | \
		docker login --username AWS --password-stdin $(firstword $(subst /, ,$(ECR_REPO)))
	docker tag $(IMAGE_NAME):$(IMAGE_TAG) $(ECR_REPO):$(IMAGE_TAG)
	docker push $(ECR_REPO):$(IMAGE_TAG)
	@echo "next: make deploy EDGE_IMAGE=$(ECR_REPO):$(IMAGE_TAG)"
