"""Real server processes for tests: a free loopback port, polling until ready, and uvicorn
running the app in its own process (started, waited for, stopped)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[1]
START_S = 300  # upper bound on a server (embedded Ray, warm job actor) coming up on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    what: str,
    check: Callable[[], object],
    timeout_s: float = START_S,
    every_s: float = 0.2,
    ignore: tuple[type[Exception], ...] = (httpx.TransportError,),
) -> object:
    """Call ``check`` until it returns something truthy (returned); errors in ``ignore`` (by
    default: the server not answering yet) count as "not yet"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
        except ignore:
            result = None
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


def clean_env(drop: tuple[str, ...] = ("RAY_", "MB_"), **variables: str) -> dict[str, str]:
    """This process's environment without the variables starting with ``drop``, plus ``variables``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | variables


def uvicorn_command(port: int, *args: str) -> list[str]:
    """``uvicorn app.main:app`` on loopback, as ``make run`` starts it (not ``--fd``: uvicorn takes
    a handed-over socket for a Unix one and leaves Nagle on, adding ~40 ms per small request)."""
    host = ["--host", "127.0.0.1", "--port", str(port), "--forwarded-allow-ips", ""]
    return [sys.executable, "-m", "uvicorn", "app.main:app", *host, *args]


def start_server(
    env: Mapping[str, str],
    *,
    args: tuple[str, ...] = (),
    log: Path | None = None,
    new_session: bool = False,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start the app on a free port (not waiting for it): the process and its base URL. Output goes
    to ``log`` when given, else to this process's; ``new_session`` lets a caller kill its group;
    ``preexec_fn`` runs in the child before uvicorn (e.g. to set a resource limit)."""
    port = free_port()
    out = open(log, "wb") if log else None  # noqa: SIM115 - the child keeps its own copy
    try:
        proc = subprocess.Popen(
            uvicorn_command(port, *args),
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=new_session,
            preexec_fn=preexec_fn,
        )
    finally:
        if out:
            out.close()
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (a clean shutdown), SIGKILL if it takes over 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_server(
    env: Mapping[str, str],
    *,
    args: tuple[str, ...] = (),
    log: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The app under uvicorn until ``/healthz`` answers 200; yields its base URL and process,
    stops it on exit."""
    proc, url = start_server(env, args=args, log=log, preexec_fn=preexec_fn)
    seen = f"; see {log}" if log else ""

    def healthy() -> bool:
        assert proc.poll() is None, f"the server exited with {proc.returncode}{seen}"
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    try:
        wait_for(f"the server{seen}", healthy)
        yield url, proc
    finally:
        stop(proc)


@contextmanager
def serving(app: ASGIApp, http: str) -> Iterator[str]:
    """``app`` under a real uvicorn (``http``: its HTTP/1.1 implementation) in this process, so a
    test can inject a bug; without the lifespan (no job store, no Ray); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=http, lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for("the server", lambda: server.started, timeout_s=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
