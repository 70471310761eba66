# Every target installs what it needs first, so each works on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: setup chromium demo test lint bench-speed bench-quality screenshots

setup: $(VENV)/.installed chromium

chromium:  ## Debian's Chromium for the console's browser tests (installed when missing and root)
	@sh scripts/ensure_chromium.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev,llama]"
	$(PY) -c "from core.assets import smollm2_gguf; smollm2_gguf()"  # the embedded model, cached once
	touch $@

demo: setup  ## the main job on the embedded default: SmolLM2-135M, WikiText-2, two sparsities
	$(VENV)/bin/gisp demo

test: setup  ## the whole test suite against the local PostgreSQL, Redis and a moto S3 server
	$(PY) -m pytest -q

lint: setup  ## style, formatting, types and the package layering the README states
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core api worker
	$(VENV)/bin/lint-imports

bench-speed: setup
	$(PY) benchmarks/engine_speed.py

bench-quality: setup
	$(PY) benchmarks/quality.py

screenshots: setup  ## docs/console-job.png and docs/console-curve.png from a tiny run
	$(PY) scripts/console_screenshots.py
