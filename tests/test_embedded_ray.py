"""The embedded Ray cleans up after itself, on real server processes and a real embedded Ray.

- With no API attached and no job for ``MB_EMBEDDED_RAY_IDLE_SECONDS`` it stops itself; the API,
  stopping, says in one log line what stays and for how long.
- A job holds it up without an API: it stays until the job is over (collected by the next API).
- An API stopped (SIGTERM) while its Ray is still starting stops that start: nothing stays.
- An API killed (SIGKILL) while its Ray is starting leaves a start that comes up on its own; the
  next API on the data directory stops it before starting its own: one head, never two.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import clean_env, start_server, stop, wait_for

from app.examples import DIGITS_MLP, digits_job
from app.jobs import ray_runtime

IDLE_S = 3  # MB_EMBEDDED_RAY_IDLE_SECONDS of these servers
STOP_S = 60  # the Ray's processes are gone within this of its idle time being up (a loaded machine)
JOB = digits_job(DIGITS_MLP, optimizer={"type": "Adam", "lr": 0.01}, epochs=2, batch_size=64, device="cpu")


class Api:
    """``uvicorn app.main:app`` on ``data_dir``, in its own session (so SIGKILL takes its group)."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        env = clean_env(
            MB_DATA_DIR=str(data_dir), MB_RAY_NUM_CPUS="1", MB_EMBEDDED_RAY_IDLE_SECONDS=str(IDLE_S)
        )
        self.log = log
        self.proc, url = start_server(env, log=log, new_session=True)
        self.http = httpx.Client(base_url=url, timeout=30)

    def ray(self) -> str | None:
        return self.http.get("/readyz").json()["ray"]

    def terminate(self) -> None:
        """SIGTERM: a clean shutdown."""
        self.http.close()
        stop(self.proc)

    def kill(self) -> None:
        """SIGKILL the API's session (not its Ray's: that has a session of its own)."""
        self.http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    yield data
    ray_runtime.stop_embedded(data)


@pytest.fixture
def apis() -> Iterator[list[Api]]:
    started: list[Api] = []
    yield started
    for api in started:
        if api.proc.poll() is None:
            api.kill()


def start_api(data_dir: Path, log: Path, apis: list[Api]) -> Api:
    api = Api(data_dir, log)
    apis.append(api)
    return api


def gcs_pids(data_dir: Path) -> list[int]:
    return [pid for pid, cmd in ray_runtime.embedded_pids(data_dir).items() if "gcs_server" in cmd.split()[0]]


def ray_gone(data_dir: Path) -> bool:
    return not ray_runtime.embedded_pids(data_dir)


def test_an_unused_embedded_ray_stops_itself(tmp_path: Path, data_dir: Path, apis: list[Api]) -> None:
    api = start_api(data_dir, tmp_path / "api.log", apis)
    wait_for("the API and its Ray", lambda: api.ray() == "up")
    assert gcs_pids(data_dir)
    api.terminate()
    said = [line for line in api.log.read_text().splitlines() if "stays up with" in line]
    assert len(said) == 1, api.log.read_text()[-3000:]
    assert "0 active jobs" in said[0] and f"{IDLE_S} s (MB_EMBEDDED_RAY_IDLE_SECONDS)" in said[0]
    wait_for("the unused Ray to stop itself", lambda: ray_gone(data_dir), IDLE_S + STOP_S, 0.5)


def test_a_job_holds_its_embedded_ray_up_until_it_is_over(
    tmp_path: Path, data_dir: Path, apis: list[Api]
) -> None:
    first = start_api(data_dir, tmp_path / "first.log", apis)
    wait_for("the API and its Ray", lambda: first.ray() == "up")
    job_id = first.http.post("/v1/jobs", json=JOB).json()["id"]
    first.kill()  # the job runs on, then holds its weights for an API to collect
    gcs = gcs_pids(data_dir)
    assert gcs
    with pytest.raises(AssertionError, match="not within"):  # past 3x its idle time (22 polls), it stays
        wait_for("the Ray to stop", lambda: ray_gone(data_dir), 3 * IDLE_S + 2, 0.5)
    assert gcs_pids(data_dir) == gcs

    second = start_api(data_dir, tmp_path / "second.log", apis)
    wait_for(
        "the job to be collected",
        lambda: second.http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
    )
    second.terminate()
    wait_for("the Ray to stop once the job is over", lambda: ray_gone(data_dir), IDLE_S + STOP_S, 0.5)


def wait_for_ray_start(api: Api, data_dir: Path) -> None:
    """Until the API's `ray start` runs (its processes name the Ray's temp dir), before it is up."""
    wait_for("the API to start its Ray", lambda: ray_runtime.embedded_pids(data_dir), 120, 0.05)
    assert api.ray() == "starting"


def test_an_api_stopped_while_its_ray_starts_leaves_nothing(
    tmp_path: Path, data_dir: Path, apis: list[Api]
) -> None:
    api = start_api(data_dir, tmp_path / "api.log", apis)
    wait_for_ray_start(api, data_dir)
    api.terminate()
    assert "the embedded Ray was still starting: stopped it; nothing stays" in api.log.read_text()
    # Before: the start went on without its API, and a Ray came up that no one had asked for.
    wait_for("the half-started Ray to be gone", lambda: ray_gone(data_dir), 30, 0.5)
    with pytest.raises(AssertionError, match="not within"):
        wait_for("a Ray to come up", lambda: ray_runtime.embedded_pids(data_dir), 15, 0.5)


def test_an_api_killed_while_its_ray_starts_leaves_one_head(
    tmp_path: Path, data_dir: Path, apis: list[Api]
) -> None:
    first = start_api(data_dir, tmp_path / "first.log", apis)
    wait_for_ray_start(first, data_dir)
    first.kill()  # no clean shutdown: its `ray start` (a session of its own) goes on
    second = start_api(data_dir, tmp_path / "second.log", apis)
    wait_for("the second API and its Ray", lambda: second.ray() == "up")
    # Before: the first start came up too, with no address file, and the second API started
    # another head beside it: two control stores for one data directory.
    wait_for("one control store", lambda: len(gcs_pids(data_dir)) == 1, 30, 0.5)
    with pytest.raises(AssertionError, match="not within"):
        wait_for("a second control store", lambda: len(gcs_pids(data_dir)) > 1, 15, 0.5)
