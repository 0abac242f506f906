# syntax=docker/dockerfile:1
# galore-serve image: TorchServe with the default model archive built in + the gRPC gateway + the KServe host. One
# image, three roles (deploy/docker/entrypoint.sh):
#   docker run galore-serve:0.1.0-cpu                 -> TorchServe (REST :8080, metrics :8082, gRPC 127.0.0.1:7070)
#   docker run galore-serve:0.1.0-cpu gateway [ARGS]  -> python -m galore_gateway (gRPC :50051, metrics :9091)
#   docker run galore-serve:0.1.0-cpu kserve [ARGS]   -> python -m galore_kserve (KServe v1/v2 REST :8080, gRPC :8081)
# Build:
#   docker build -t galore-serve:0.1.0-cpu .                                  # torch CPU wheels (default)
#   docker build --build-arg TORCH_VARIANT=cuda -t galore-serve:0.1.0-cuda .  # torch CUDA wheels
# The CUDA wheels carry the CUDA runtime; the node provides the driver (NVIDIA container toolkit).
# Debian packages are not version-pinned (DL3008): the base image tag fixes the Debian release and its
# security updates should flow in on rebuild.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: virtual environment, generated protobuf code, model archive -----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# gcc builds the one compiled module, the regions kernel (galore/_regions.c); the runtime stage needs no compiler.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# torch first and alone, from the index of the chosen variant (PyPI's Linux wheels are the CUDA builds).
RUN python -m venv /opt/venv \
 && case "${TORCH_VARIANT}" in \
      cpu)  index=https://download.pytorch.org/whl/cpu ;; \
      cuda) index=https://pypi.org/simple ;; \
      *)    echo "TORCH_VARIANT must be cpu or cuda, got ${TORCH_VARIANT}" >&2; exit 1 ;; \
    esac \
 && pip install --index-url "${index}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

WORKDIR /src
COPY pyproject.toml setup.py Makefile ./
COPY protos/ protos/
COPY galore/ galore/
COPY galore_wire/ galore_wire/
COPY galore_service/ galore_service/
COPY handlers/ handlers/
COPY galore_gateway/ galore_gateway/
COPY galore_kserve/ galore_kserve/
COPY galore_client/ galore_client/
COPY galore_cli/ galore_cli/
COPY model_store/ model_store/
COPY deploy/torchserve/ deploy/torchserve/

# Runtime dependencies + the project (not editable), then the Makefile's own recipes for the generated code and
# the archive, pointed at this venv (its stamp marks the venv as set up, so make installs nothing else); the
# final import runs isolated (-I), so it checks the installed packages, not /src.
# The CUDA image's archive has the GPU operating point (issue 20): one TorchServe worker per GPU (TorchServe gives
# each worker its gpu_id) and larger batches; 16 is a starting point until `make gpu-bench` measures 16-64.
ARG GPU_ARCHIVE_FLAGS="--workers 1 --batch-size 16"
RUN pip install . \
 && touch /opt/venv/.installed \
 && flags="" && if [ "${TORCH_VARIANT}" = cuda ]; then flags="${GPU_ARCHIVE_FLAGS}"; fi \
 && make protos archive VENV=/opt/venv PY=/opt/venv/bin/python STAMP=/opt/venv/.installed ARCHIVE_FLAGS="${flags}" \
 && pip install --no-deps --force-reinstall . \
 && python -I -c "import galore._regions, galore_wire, galore_service, handlers, galore_gateway, galore_kserve, galore_cli.main, galore_api.v1.explainer_pb2"

# ---- runtime: Java for the TorchServe frontend, the venv, the archive, the container config ----------------------
FROM ${PYTHON_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 model-server \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /home/model-server --shell /usr/sbin/nologin \
      model-server \
 && mkdir -p /home/model-server/model-store /home/model-server/config

COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/model_store/efficientnet_lite0.mar /home/model-server/model-store/
COPY deploy/k8s/base/torchserve/ /home/model-server/config/
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/galore-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/galore-healthcheck

# Everything the processes write goes under /tmp (an emptyDir in Kubernetes; the root filesystem stays read-only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/model-server \
    TEMP=/tmp \
    LOG_LOCATION=/tmp/logs \
    METRICS_LOCATION=/tmp/logs \
    XDG_CACHE_HOME=/tmp/cache \
    TORCH_HOME=/tmp/torch

USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 8082 50051 9091
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 CMD ["galore-healthcheck"]
# tini -g: SIGTERM reaches the whole process group (torchserve launcher, Java frontend, Python workers).
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "galore-entrypoint"]
CMD ["torchserve"]
