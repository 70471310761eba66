# Two images from one file:
#   docker build --target api    -t gisp-api .     # FastAPI + Celery client; no torch
#   docker build --target worker -t gisp-worker .  # Celery worker with CUDA torch (PyPI wheels bundle CUDA)
# Build arguments (the defaults build the production images from PyPI):
#   BASE_IMAGE        any image with Python 3.11 as `python3` (and venv, pip). A machine without registry
#                     access uses a Debian bookworm base made locally (see docker-compose.local.yml).
#   PIP_INSTALL_ARGS  extra options of every pip install, e.g. "--no-index --find-links /wheelhouse" to
#                     install only from ./wheelhouse: wheels built on the host (see wheelhouse/README.md).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS source
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations

# Wheels are built in throw-away stages so the runtime images carry no compilers, caches or wheelhouse.
# Each target's stages come before it: the legacy builder (no BuildKit) builds every stage up to its target.
FROM source AS api-build
ARG PIP_INSTALL_ARGS=""
COPY wheelhouse /wheelhouse
RUN python3 -m venv /venv && /venv/bin/pip install $PIP_INSTALL_ARGS --upgrade pip \
 && /venv/bin/pip install $PIP_INSTALL_ARGS ".[api]"

FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH="/venv/bin:$PATH"
RUN useradd --create-home --uid 10001 gisp
WORKDIR /app

FROM runtime AS api
COPY --from=api-build /venv /venv
COPY --from=source /app /app
USER gisp
EXPOSE 8000
# WEB_CONCURRENCY server processes share their metrics through files in PROMETHEUS_MULTIPROC_DIR (api/metrics.py);
# the folder is emptied at every start, so a restarted container does not add up its previous processes' files.
ENV WEB_CONCURRENCY=2 PROMETHEUS_MULTIPROC_DIR=/tmp/gisp-metrics
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && exec uvicorn --factory api.main:create_app --host 0.0.0.0 --port 8000 --proxy-headers"]

FROM source AS worker-build
ARG PIP_INSTALL_ARGS=""
COPY wheelhouse /wheelhouse
RUN python3 -m venv /venv && /venv/bin/pip install $PIP_INSTALL_ARGS --upgrade pip \
 && /venv/bin/pip install $PIP_INSTALL_ARGS ".[worker]"

FROM runtime AS worker
COPY --from=worker-build /venv /venv
COPY --from=source /app /app
# Exists (owned by gisp) in the image, so a named volume mounted here inherits a writable owner.
RUN mkdir -p /home/gisp/.cache/huggingface && chown -R gisp:gisp /home/gisp/.cache
USER gisp
ENV GISP_WORKER_DEVICE=cuda GISP_WORKER_DTYPE=bfloat16 HF_HOME=/home/gisp/.cache/huggingface
CMD ["gisp", "worker", "--concurrency", "1"]
