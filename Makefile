VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Proxies whose X-Forwarded-For is believed (the rate limit keys on the client address): none by
# default; behind a reverse proxy, its address, e.g. `make run FORWARDED_ALLOW_IPS=10.0.0.5`.
FORWARDED_ALLOW_IPS ?=
# The index torch comes from: empty is pip's default (PyPI: the CUDA build on Linux x86-64);
# `make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` gets the CPU-only build.
TORCH_INDEX_URL ?=

.PHONY: install system-deps run stop-ray test lint bench

$(VENV)/.installed: pyproject.toml requirements-cpu.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) -r requirements-cpu.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

system-deps:  ## Debian packages the browser and deployment tests use
	scripts/install_system_deps.sh

run: install  ## set up and serve on http://$(HOST):$(PORT)
	$(VENV)/bin/uvicorn app.main:app --host $(HOST) --port $(PORT) --forwarded-allow-ips '$(FORWARDED_ALLOW_IPS)'

stop-ray:  ## stop the embedded Ray of MB_DATA_DIR (it outlives the API, with its jobs), and only it
	$(PY) -m app.jobs.ray_runtime stop

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install system-deps  ## set up and run the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --durations=15
