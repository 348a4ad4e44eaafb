# voicebridge — every command works from a fresh clone with only Python >= 3.11 installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One install stamp per extra: make demo/run install only what the local stack runs ([local]),
# make test what the suite needs ([test]), make bench* adds the benchmark-only packages ([bench]).
LOCAL  := $(VENV)/.installed-local
TESTS  := $(VENV)/.installed-test
BENCH  := $(VENV)/.installed-bench
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Silences setuptools' "editable installation" banner from the build of voicebridge itself.
PIP    := PYTHONWARNINGS=ignore $(BIN)/python -m pip

.PHONY: help install test lint typecheck format run demo bench bench-api bench-dsp bench-edge bench-soak bench-outbound bench-console bench-recording build deploy \
        image push setup logs delete clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	@echo "==> creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	@echo "==> installing voicebridge[$*] into $(VENV) (the first time takes a minute or two; pip lists each package)"
	$(PIP) install --progress-bar on -e '.[$*]'
	@touch $@
	@echo "==> voicebridge[$*] installed"

install: $(VENV)/.installed-dev  ## create .venv with everything (local stack, tests, benchmarks)

lint: $(TESTS)  ## ruff (lint + format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TESTS)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(TESTS)  ## mypy: strict for voicebridge/ and the edge's pure core, clean everywhere else
	$(BIN)/mypy

test: lint typecheck  ## lint, types, the whole test suite, then the edge's suite again compiled
	$(BIN)/python -m pytest -q
	$(BIN)/python infra/edge_compile.py .build/edge-compiled
	cd .build/edge-compiled && VOICEBRIDGE_EDGE_BUILD=compiled $(abspath $(BIN))/python -m pytest -q \
		-p no:cacheprovider --import-mode=append --rootdir $(CURDIR) -c $(CURDIR)/pyproject.toml \
		$(CURDIR)/tests/media_edge

run: $(LOCAL)  ## the whole local stack in the foreground, one line per call event (JSON=1: raw logs)
	$(BIN)/python -m infra.local $(if $(JSON),--json)

demo: $(LOCAL)  ## a simulated call end to end, then a latency report
	$(BIN)/python -m infra.demo

bench: bench-api bench-dsp bench-edge bench-console bench-recording  ## all benchmarks; results go to BENCHMARKS.md by hand

bench-api: $(BENCH)  ## control-plane handler latency and import time
	$(BIN)/python -m benchmarks.api

bench-dsp: $(BENCH)  ## per-frame DSP cost, resampler quality, VAD accuracy
	@# silero-vad only for its packaged ONNX model: --no-deps keeps torch out (onnxruntime runs it)
	$(PIP) install --quiet --no-deps 'silero-vad>=5,<7'
	$(BIN)/python -m benchmarks.dsp

bench-edge: $(BENCH)  ## edge CPU, latency, memory at 1/100/250 calls, vs pipecat and a naive relay
	$(BIN)/python -m benchmarks.edge

bench-soak: $(BENCH)  ## the shipped edge under 100 calls for 30 min: CPU/RSS/fds plot
	$(BIN)/python -m benchmarks.soak_edge

bench-outbound: $(BENCH)  ## dialer: calls per second vs the cap, slot-to-dial latency, invocations
	$(BIN)/python -m benchmarks.outbound

bench-console: $(TESTS)  ## caption latency Vapi -> console page at 1 and 50 calls, 5 consoles (Chromium)
	$(BIN)/python -m benchmarks.console

bench-recording: $(BENCH)  ## what recording and the call's picture cost per frame and per call
	$(BIN)/python -m benchmarks.recording

clean:  ## remove the virtualenv and build output
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache

# ---- AWS deploy (README.md#deploy). Variables are evaluated only by the targets that use them.
ENV         ?= default
STACK       ?= $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('samconfig.toml', 'rb'))['$(ENV)']['global']['parameters']['stack_name'])")
AWS_REGION  ?= $(or $(shell aws configure get region 2>/dev/null),us-east-1)
# The commit, plus a timestamp when the edge's sources differ from it (ECR tags are immutable).
IMAGE_TAG   ?= $(shell git rev-parse --short=12 HEAD)$(shell git diff --quiet HEAD -- \
                 voicebridge media_edge infra/Dockerfile pyproject.toml || date +-dirty%s)
IMAGE_NAME  ?= voicebridge-edge
STACK_OUTPUT = $(shell aws cloudformation describe-stacks --region $(AWS_REGION) --stack-name $(STACK) \
                 --query "Stacks[0].Outputs[?OutputKey=='$(1)'].OutputValue" --output text)
ECR_REPO    ?= $(call STACK_OUTPUT,EdgeRepositoryUri)
STACK_LOG_GROUP = $(shell aws cloudformation describe-stack-resource --region $(AWS_REGION) \
                 --stack-name $(STACK) --logical-resource-id $(1) \
                 --query StackResourceDetail.PhysicalResourceId --output text)
EDGE_IMAGE  ?=
SAM         := SAM_CLI_TELEMETRY=0 $(BIN)/sam
# Lambda runs python3.12 on arm64 (glibc 2.34): wheels for that platform, never a local compiler.
LAMBDA_PIP  := --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
               --python-version 3.12 --implementation cp --only-binary=:all:

build: $(TESTS)  ## sam build: both Lambda bundles into .aws-sam/ (no Docker, no local python3.12)
	$(SAM) build --parallel --template-file template.yaml

# sam build calls these (via infra/lambda/Makefile) with ARTIFACTS_DIR; they are not for humans.
# Any python >= 3.11 with pip will do (sam build --parallel runs both at once: no venv setup here).
BUILD_PY     = $(firstword $(wildcard $(BIN)/python) $(PYTHON))
build-ApiFunction build-WorkerFunction build-DialerFunction build-ConsoleGatewayFunction:
	$(BUILD_PY) infra/deps.py lambda > "$(ARTIFACTS_DIR)/requirements.txt"
	$(BUILD_PY) -m pip install --quiet --no-compile $(LAMBDA_PIP) \
		--target "$(ARTIFACTS_DIR)" -r "$(ARTIFACTS_DIR)/requirements.txt"
	rm "$(ARTIFACTS_DIR)/requirements.txt"
	cp -R voicebridge functions "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -type d -prune -exec rm -rf {} +

deploy: build  ## sam deploy with samconfig.toml [ENV]; the first deploy asks what only you know
	$(BIN)/python -m infra.deploy --env $(ENV) --region $(AWS_REGION) \
		$(if $(EDGE_IMAGE),--edge-image $(EDGE_IMAGE))

# docker buildx builds for another CPU through QEMU: Docker Desktop ships it; a Linux x86 host
# registers it once with tonistiigi/binfmt (the command Docker's multi-platform guide gives).
image:  ## build the edge image for linux/arm64 with docker buildx (x86 hosts: QEMU set up first)
	@docker buildx version >/dev/null 2>&1 || { echo "make image needs docker buildx (Docker Desktop has it; on Linux install the docker-buildx-plugin package)"; exit 1; }
	@case "$$(uname -m)" in aarch64|arm64) ;; *) \
	  if ! docker buildx inspect --bootstrap 2>/dev/null | grep -q 'linux/arm64'; then \
	    echo "==> registering QEMU arm64 emulation: docker run --privileged --rm tonistiigi/binfmt --install arm64"; \
	    docker run --privileged --rm tonistiigi/binfmt --install arm64; \
	  fi;; esac
	docker buildx build --platform linux/arm64 --load -f infra/Dockerfile -t $(IMAGE_NAME):$(IMAGE_TAG) .

push: image  ## push the edge image to the stack's ECR repository; prints EDGE_IMAGE for make deploy
	@test -n "$(ECR_REPO)" && test "$(ECR_REPO)" != None || { echo "no stack $(STACK) in $(AWS_REGION): make deploy first"; exit 1; }
	aws ecr get-login-password --region $(AWS_REGION) | \
		docker login --username AWS --password-stdin $(firstword $(subst /, ,$(ECR_REPO)))
	docker tag $(IMAGE_NAME):$(IMAGE_TAG) $(ECR_REPO):$(IMAGE_TAG)
	docker push $(ECR_REPO):$(IMAGE_TAG)
	@echo "next: make deploy EDGE_IMAGE=$(ECR_REPO):$(IMAGE_TAG)"

setup: $(LOCAL)  ## NUMBER=+1... [ASSISTANT=id]: point a Twilio number and a Vapi assistant at the stack
	@test -n "$(NUMBER)" || { echo "usage: make setup NUMBER=+14155550123 [ASSISTANT=<vapi assistant id>] [DRY_RUN=1]"; exit 2; }
	$(BIN)/voicebridge setup --stack $(STACK) --region $(AWS_REGION) --number $(NUMBER) \
		$(if $(ASSISTANT),--assistant-id $(ASSISTANT)) $(if $(DRY_RUN),--dry-run)

logs: $(TESTS)  ## follow the API, worker and edge logs of the stack (Ctrl-C stops)
	$(SAM) logs --region $(AWS_REGION) --tail \
		$(foreach group,ApiLogGroup WorkerLogGroup EdgeLogGroup,--cw-log-group $(call STACK_LOG_GROUP,$(group)))

delete: $(TESTS)  ## delete the stack (asks first); README.md#teardown lists what is kept
	$(SAM) delete --stack-name $(STACK) --region $(AWS_REGION)
