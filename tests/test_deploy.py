"""The deployment files: what CI can check without a Docker engine.

hadolint lints the Dockerfile, Debian's ``docker-compose config`` validates and normalises the
compose file, and the assertions below pin what the deployment promises: a GPU reservation on the
worker, a CPU-only worker profile, token auth on every Ray process, and no port published but
the API's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.jobs import ray_runtime

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_ENV = {"RAY_AUTH_TOKEN": "t" * 32, "MB_API_KEY": "k" * 24, "MB_POSTGRES_PASSWORD": "p" * 24}
RAY_SERVICES = ("ray-head", "api", "worker", "worker-cpu")


def _tool(name: str) -> str:
    """Path of a CLI tool; in CI a missing one fails (``make test`` installs it), elsewhere skips."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; make test (scripts/install_system_deps.sh) installs it")
        pytest.skip(f"{name} is not installed")
    return found


def _compose_config(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **COMPOSE_ENV}
    env.pop("COMPOSE_PROFILES", None)
    return subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), *args, "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as ``docker-compose config`` resolves it (anchors, variables, defaults)."""
    result = _compose_config()
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_like_ci() -> None:
    """The image runs the Makefile's two installs, non-root, with a healthcheck on /healthz."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements-cpu.txt" in makefile and "-r requirements-cpu.txt" in dockerfile
    assert re.search(r"pip install .*'\.\[dev\]'", makefile)
    assert re.search(r"^RUN pip install --no-cache-dir \.$", dockerfile, re.M)
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2, "multi-stage build"
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.M)
    assert 'CMD ["uvicorn", "app.main:app"' in dockerfile


def test_compose_refuses_to_start_without_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert any(secret in result.stderr for secret in COMPOSE_ENV), result.stderr


def test_compose_refuses_to_start_without_the_database_password() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MB_POSTGRES_PASSWORD"}
    env |= {k: v for k, v in COMPOSE_ENV.items() if k != "MB_POSTGRES_PASSWORD"}
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "MB_POSTGRES_PASSWORD" in result.stderr


def test_compose_services(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {*RAY_SERVICES, "postgres"}
    assert services["worker"]["profiles"] == ["gpu"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert "profiles" not in services["api"] and "profiles" not in services["ray-head"]
    assert "--head" in services["ray-head"]["command"]
    for name in ("api", "worker", "worker-cpu"):
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_worker_reserves_nvidia_gpus(compose: dict) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert compose["services"]["worker"]["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert "compute" in compose["services"]["worker"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"]
    assert "deploy" not in compose["services"]["worker-cpu"]


def test_workers_share_the_api_data_volume(compose: dict) -> None:
    """A worker writes a job's checkpoints under the API's MB_DATA_DIR (jobs/<id>/checkpoint/)."""
    data_dir = compose["services"]["api"]["environment"]["MB_DATA_DIR"]
    for name in ("api", "worker", "worker-cpu"):
        # docker-compose v1 normalises a volume to "source:target:mode", v2 to a mapping
        volumes = [
            v.split(":")[:2] if isinstance(v, str) else [v["source"], v["target"]]
            for v in compose["services"][name]["volumes"]
        ]
        assert ["mb-data", data_dir] in volumes, name


def test_only_the_api_port_is_published(compose: dict) -> None:
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name
        if name != "api":
            assert "ports" not in service, f"{name} publishes {service['ports']}"
    # A host port range, so that `--scale api=2` gives each replica its own port (8000, 8001).
    assert compose["services"]["api"]["ports"] == [{"published": "8000-8001", "target": 8000}]


def test_the_api_scales_to_two_replicas(compose: dict) -> None:
    """No fixed container name or single host port that a second replica would clash on."""
    for name, service in compose["services"].items():
        assert "container_name" not in service, name
    low, high = map(int, compose["services"]["api"]["ports"][0]["published"].split("-"))
    assert high - low + 1 >= 2


def test_jobs_files_are_one_volume_on_the_api_and_every_worker(compose: dict) -> None:
    """A job's actor writes its checkpoints where the API (and any replica) reads them: the same
    volume at the same path on every node that can run a job."""
    for name in ("api", "worker", "worker-cpu"):
        assert "mb-data:/data:rw" in compose["services"][name]["volumes"], name


def test_ray_token_auth_and_api_lock_are_on(compose: dict) -> None:
    for name in RAY_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == COMPOSE_ENV["RAY_AUTH_TOKEN"], name
        assert env["RAY_preload_python_modules"] == ray_runtime.PRELOAD, name
    api = compose["services"]["api"]["environment"]
    assert yaml.safe_load(api["MB_API_KEYS"]) == [COMPOSE_ENV["MB_API_KEY"]]
    assert float(api["MB_RATE_LIMIT_PER_S"]) > 0
    assert api["RAY_ADDRESS"] == "ray-head:6379"


def test_data_directory_is_a_volume(compose: dict) -> None:
    api = compose["services"]["api"]
    assert api["environment"]["MB_DATA_DIR"] == "/data"
    assert any(v.startswith("mb-data:/data") for v in api["volumes"])
    assert "mb-data" in compose["volumes"]


def test_every_way_to_serve_believes_no_forwarded_for_by_default(compose: dict) -> None:
    """The rate limit keys on the client address: X-Forwarded-For only counts from a configured proxy."""
    from servers import uvicorn_command

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^FORWARDED_ALLOW_IPS \?=$", makefile, re.M)
    assert "--forwarded-allow-ips '$(FORWARDED_ALLOW_IPS)'" in makefile
    command = uvicorn_command(8000)
    assert command[command.index("--forwarded-allow-ips") + 1] == ""  # the tests serve as make run does
    assert re.search(r'^\s+FORWARDED_ALLOW_IPS=""$', (ROOT / "Dockerfile").read_text(), re.M)
    assert compose["services"]["api"]["environment"]["FORWARDED_ALLOW_IPS"] == ""


def test_jobs_are_stored_in_postgres_on_the_compose_network(compose: dict) -> None:
    """The official image, healthy before the API starts, its data in a volume, its port not
    published; the API and every worker (the jobs' actors write their progress) share it."""
    postgres = compose["services"]["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"
    assert "profiles" not in postgres and "ports" not in postgres
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert postgres["volumes"][0].startswith("mb-postgres:/var/lib/postgresql/data")
    assert "mb-postgres" in compose["volumes"]
    env = postgres["environment"]
    assert env["POSTGRES_PASSWORD"] == COMPOSE_ENV["MB_POSTGRES_PASSWORD"]
    url = f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    for name in ("api", "worker", "worker-cpu"):
        assert compose["services"][name]["environment"]["MB_DATABASE_URL"] == url, name
    assert compose["services"]["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
