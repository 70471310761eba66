# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target api    -t gisp-api .     # FastAPI + Celery client; no torch
#   docker build --target worker -t gisp-worker .  # Celery worker with CUDA torch (PyPI wheels bundle CUDA)

FROM python:3.11-slim AS source
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations

# Wheels are built in throw-away stages so the runtime images carry no compilers or caches.
FROM source AS api-build
RUN python -m venv /venv && /venv/bin/pip install --upgrade pip && /venv/bin/pip install ".[api]"

FROM source AS worker-build
RUN python -m venv /venv && /venv/bin/pip install --upgrade pip && /venv/bin/pip install ".[worker]"

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH="/venv/bin:$PATH"
RUN useradd --create-home --uid 10001 gisp
WORKDIR /app

FROM runtime AS api
COPY --from=api-build /venv /venv
COPY --from=source /app /app
USER gisp
EXPOSE 8000
ENV WEB_CONCURRENCY=2
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]

FROM runtime AS worker
COPY --from=worker-build /venv /venv
COPY --from=source /app /app
# Exists (owned by gisp) in the image, so a named volume mounted here inherits a writable owner.
RUN mkdir -p /home/gisp/.cache/huggingface && chown -R gisp:gisp /home/gisp/.cache
USER gisp
ENV GISP_WORKER_DEVICE=cuda HF_HOME=/home/gisp/.cache/huggingface
CMD ["gisp", "worker", "--concurrency", "1"]
