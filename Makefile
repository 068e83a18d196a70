VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install system-deps run stop-ray test lint bench

$(VENV)/.installed: pyproject.toml requirements-cpu.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-cpu.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

system-deps:  ## Debian packages the browser and deployment tests use
	scripts/install_system_deps.sh

run: install  ## set up and serve on http://$(HOST):$(PORT)
	$(VENV)/bin/uvicorn app.main:app --host $(HOST) --port $(PORT)

stop-ray:  ## stop the embedded Ray of MB_DATA_DIR (it outlives the API, with its jobs), and only it
	$(PY) -m app.jobs.ray_runtime stop

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install system-deps  ## set up and run the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q
