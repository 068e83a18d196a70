"""A bounded load test on loopback: a real uvicorn server, concurrent clients, seconds not minutes.

One server process (embedded Ray, a temporary data directory) takes concurrent summaries of mixed
sizes (small CNNs to a 12-layer transformer, repeated and unique, valid and invalid) while
training jobs are submitted, and a probe keeps calling ``/healthz``. Asserted: no 5xx, every
answer is the expected one, every accepted job reaches a final state and is listed, the server's
resident memory stays bounded from one round to the next, and ``/healthz`` keeps answering.

A second test queues many slow summaries at once (far more than the trace slots) while the routes
that do not trace are probed: every probe answers, and each route answers many times while the
summaries still wait (a waiting summary holds no thread).

Only what cannot depend on the machine is asserted. How long a job may take is scaled from one job
timed alone in the same run (``calibration``); the latencies are printed (``-s``) and measured for
real by ``bench/load_latency.py``, with the load average beside them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import running_server

from app.examples import LSTM_CLASSIFIER, SEED_MODEL, SMALL_CNN, digits_job

CONCURRENCY = 16
ROUNDS = 3
PER_ROUND = 60  # summaries per round, mixed
RSS_GROWTH_LIMIT = 150 << 20  # after the warm-up round, growth stays under this
QUEUED_SUMMARIES = 120  # at once (3x the 40 threads of the pool), each tenths of a second of tracing, 2 slots
JOBS = 6  # submitted while the summaries run
# A job under this test's load may take this many times as long as one timed alone in the same
# run, plus the floor: enough at load 20 on 2 cores, where the calibration is slow too.
SLOWDOWN = 10
FLOOR_S = 60.0
HANG_S = 900.0  # a request that takes longer hangs (a guard, not a speed check)

TRANSFORMER_12 = {
    "layers": [
        {"type": "Embedding", "num_embeddings": 32000, "embedding_dim": 768},
        *({"type": "TransformerEncoderLayer", "nhead": 12, "dim_feedforward": 3072} for _ in range(12)),
        {"type": "LayerNorm"},
        {"type": "Linear", "out_features": 32000},
    ]
}
MISMATCH = {"layers": [{"type": "Flatten"}, {"type": "Linear", "in_features": 7, "out_features": 2}]}
JOB = digits_job(
    {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 16},
            {"type": "ReLU"},
            {"type": "Linear", "out_features": 10},
        ]
    },
    optimizer={"type": "Adam", "lr": 0.01},
    epochs=1,
    device="cpu",
)


TRANSFORMER_6 = {"layers": [*TRANSFORMER_12["layers"][:7], *TRANSFORMER_12["layers"][-2:]]}


def summary_body(i: int) -> tuple[dict, int]:
    """The i-th request of a round and the status it must get. Odd batch sizes make most requests
    unique (the summary cache misses); the rest repeat (it hits)."""
    batch = 1 + i % 7
    bodies = [
        ({"model": SEED_MODEL, "input_shape": [batch, 3, 8, 8]}, 200),
        ({"model": SMALL_CNN, "input_shape": [batch, 1, 28, 28]}, 200),
        ({"model": LSTM_CLASSIFIER, "input_shape": [batch, 64], "input_dtype": "int64"}, 200),
        ({"model": TRANSFORMER_12, "input_shape": [batch, 128], "input_dtype": "int64"}, 200),
        ({"model": MISMATCH, "input_shape": [batch, 3, 4, 4]}, 422),
    ]
    return bodies[i % len(bodies)]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def server_env(data_dir: Path) -> dict[str, str]:
    """The load server's environment: its own data directory, one CPU for jobs, a short queue."""
    return {**os.environ, "MB_DATA_DIR": str(data_dir), "MB_MAX_QUEUED_JOBS": "4", "MB_RAY_NUM_CPUS": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    env = server_env(tmp_path_factory.mktemp("load-jobs"))
    with running_server(env, args=("--log-level", "warning")) as (url, proc):
        yield url, proc.pid


async def wait_jobs(client: httpx.AsyncClient, job_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Job id -> final status, for those of ``job_ids`` that end within ``timeout_s``."""
    finished: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while len(finished) < len(job_ids) and time.monotonic() < deadline:
        for job_id in set(job_ids) - set(finished):
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] not in ("queued", "running"):
                finished[job_id] = job["status"]
        await asyncio.sleep(0.2)
    return finished


async def time_one_job(url: str) -> float:
    """Seconds from POST to the end of one job on the idle server (the calibration)."""
    async with httpx.AsyncClient(base_url=url, timeout=HANG_S) as client:
        started = time.monotonic()
        job_ids = await submit_jobs(client, 1)
        assert await wait_jobs(client, job_ids, 600) == {job_ids[0]: "succeeded"}
        return time.monotonic() - started


@pytest.fixture(scope="module")
def calibration(server: tuple[str, int]) -> float:
    """How long one job takes on this machine, now, with nothing else on the server."""
    seconds = asyncio.run(time_one_job(server[0]))
    print(f"\ncalibration: one job alone took {seconds:.1f} s (load average {os.getloadavg()[0]:.1f})")
    return seconds


def job_deadline(calibration: float, jobs: int) -> float:
    """Seconds ``jobs`` jobs may take under this test's load (they run one at a time)."""
    return FLOOR_S + SLOWDOWN * calibration * jobs


async def summaries(client: httpx.AsyncClient, count: int) -> list[tuple[int, int]]:
    """``count`` summaries from ``CONCURRENCY`` concurrent clients: (expected, got) statuses."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    results: list[tuple[int, int]] = []

    async def worker() -> None:
        while not queue.empty():
            body, expected = summary_body(queue.get_nowait())
            response = await client.post("/v1/models/summary", json=body)
            results.append((expected, response.status_code))
            if response.status_code != expected:
                print(f"unexpected {response.status_code} for {body['input_shape']}: {response.text[:600]}")
            elif expected == 422:
                assert response.json()["detail"][0]["loc"][:4] == ["body", "model", "layers", 1]

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


async def probe_health(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("/healthz")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
        await asyncio.sleep(0.1)
    return latencies


async def submit_jobs(client: httpx.AsyncClient, count: int) -> list[str]:
    """Submit ``count`` small jobs; a full queue (429) is retried after its Retry-After."""
    ids = []
    for seed in range(count):
        while True:
            response = await client.post("/v1/jobs", json={**JOB, "seed": seed})
            if response.status_code != 429:
                break
            await asyncio.sleep(min(float(response.headers["retry-after"]), 1.0))
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def load(url: str, pid: int, jobs_timeout_s: float) -> dict:
    limits = httpx.Limits(max_connections=CONCURRENCY + 4)
    async with httpx.AsyncClient(base_url=url, timeout=HANG_S, limits=limits) as client:
        stop = asyncio.Event()
        probe = asyncio.create_task(probe_health(client, stop))
        statuses = await summaries(client, PER_ROUND)  # warm-up round: caches, lazy imports
        rss = [rss_bytes(pid)]
        jobs = asyncio.create_task(submit_jobs(client, JOBS))
        for _ in range(ROUNDS):
            statuses += await summaries(client, PER_ROUND)
            rss.append(rss_bytes(pid))
        job_ids = await jobs
        stop.set()
        health = await probe
        finished = await wait_jobs(client, job_ids, jobs_timeout_s)
        listed = (await client.get("/v1/jobs", params={"limit": 100})).json()
    return {
        "statuses": statuses,
        "rss": rss,
        "health": health,
        "jobs": finished,
        "ids": job_ids,
        "listed": listed,
    }


def test_concurrent_summaries_and_jobs_hold_up(server: tuple[str, int], calibration: float) -> None:
    url, pid = server
    result = asyncio.run(load(url, pid, job_deadline(calibration, JOBS)))

    statuses = result["statuses"]
    assert len(statuses) == PER_ROUND * (ROUNDS + 1)
    assert not [got for _, got in statuses if got >= 500], "server errors under load"
    assert all(expected == got for expected, got in statuses), [s for s in statuses if s[0] != s[1]]

    assert sorted(result["jobs"]) == sorted(result["ids"]), "a job never finished"
    assert set(result["jobs"].values()) == {"succeeded"}, result["jobs"]
    assert set(result["ids"]) <= {job["id"] for job in result["listed"]["data"]}

    rss = result["rss"]
    assert max(rss) - rss[0] < RSS_GROWTH_LIMIT, f"resident memory per round (MiB): {[r >> 20 for r in rss]}"
    health = result["health"]
    assert health, "no /healthz probe answered during the load"  # each one that did answered 200
    print(  # shown with -s (bench/load_latency.py measures them)
        f"\nload: {len(statuses)} summaries, {len(result['ids'])} jobs; RSS per round (MiB) "
        f"{[r >> 20 for r in rss]}; /healthz {len(health)} probes, slowest {max(health) * 1000:.0f} ms"
    )


async def probe_routes(client: httpx.AsyncClient, job_id: str, stop: asyncio.Event) -> dict[str, list[float]]:
    """Latency of each route that does not trace, round-robin until ``stop``."""

    async def sse() -> int:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            text = b"".join([chunk async for chunk in response.aiter_bytes()])
            assert b"event: done" in text
            return response.status_code

    probes = {
        "/readyz": lambda: client.get("/readyz"),
        "GET /v1/jobs": lambda: client.get("/v1/jobs"),
        "GET /v1/jobs/{id}": lambda: client.get(f"/v1/jobs/{job_id}"),
        "SSE /v1/jobs/{id}/events": sse,
    }
    latencies: dict[str, list[float]] = {name: [] for name in probes}
    while not stop.is_set():
        for name, call in probes.items():
            started = time.perf_counter()
            result = await call()
            latencies[name].append(time.perf_counter() - started)
            assert (result if isinstance(result, int) else result.status_code) == 200, name
            await asyncio.sleep(0.02)
    return latencies


async def queued_summaries_and_probes(
    url: str, job_timeout_s: float
) -> tuple[list[int], dict[str, list[float]]]:
    limits = httpx.Limits(max_connections=QUEUED_SUMMARIES + 8)
    async with httpx.AsyncClient(base_url=url, timeout=HANG_S, limits=limits) as client:
        job_id = (await submit_jobs(client, 1))[0]  # its finished stream is one of the probes
        assert await wait_jobs(client, [job_id], job_timeout_s), "the probe's job did not finish"
        bodies = [  # unique batch sizes: every one is traced (no cache hit)
            {"model": TRANSFORMER_6, "input_shape": [100 + i, 64], "input_dtype": "int64"}
            for i in range(QUEUED_SUMMARIES)
        ]
        summaries = [asyncio.create_task(client.post("/v1/models/summary", json=b)) for b in bodies]
        await asyncio.sleep(1.0)  # let them queue up
        stop = asyncio.Event()
        probe = asyncio.create_task(probe_routes(client, job_id, stop))
        responses = await asyncio.gather(*summaries)
        stop.set()
        return [r.status_code for r in responses], await probe


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_routes_answer_while_summaries_queue(server: tuple[str, int], calibration: float) -> None:
    url, _ = server
    statuses, latencies = asyncio.run(queued_summaries_and_probes(url, job_deadline(calibration, 1)))
    assert statuses == [200] * QUEUED_SUMMARIES
    every = [t for times in latencies.values() for t in times]
    figures = {name: f"n={len(t)} max={max(t) * 1000:.0f} ms" for name, t in latencies.items()}
    print(
        f"\nwhile {QUEUED_SUMMARIES} summaries queued: p99 {percentile(every, 0.99) * 1000:.0f} ms over "
        f"{len(every)} probes; {figures}"
    )
    # Each probe round waits for its answers, so ten rounds while the queue drains means no route
    # waited behind the queued summaries (a waiting summary holding a thread made them wait).
    assert all(len(t) >= 10 for t in latencies.values()), figures
