# Model Builder: one image for the API, the Ray head and the Ray workers (the command picks the role).
#
#   docker build -t model-builder:cpu .                                   # CPU (the default)
#   docker build -t model-builder:gpu --build-arg TORCH_VARIANT=cu128 .   # CUDA PyTorch, GPU workers
#
# It installs exactly as `make install` (and so CI) does: the torch pin from requirements-cpu.txt,
# then the project from pyproject.toml. TORCH_VARIANT only picks which build of that pin pip gets.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# cpu, or a CUDA tag of the PyTorch wheel index (cu126, cu128, ...) for GPU workers.
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
# The torch pin first, from the index of the chosen build (so pip never pulls the default CUDA
# wheel into a CPU image); cached as its own layer since it is the heavy one.
COPY requirements-cpu.txt ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" -r requirements-cpu.txt
COPY pyproject.toml README.md ./
COPY layers ./layers
COPY app ./app
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MB_DATA_DIR=/data \
    FORWARDED_ALLOW_IPS=""
# A fixed unprivileged user; /data is where jobs persist (mount a volume there).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app \
    && mkdir /data \
    && chown app:app /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/app
USER 10001:10001
EXPOSE 8000
# The slim base has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# uvicorn believes X-Forwarded-For only from FORWARDED_ALLOW_IPS (empty: from nobody), so the
# rate limit keys on the real peer; behind a reverse proxy, set it to the proxy's address.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
