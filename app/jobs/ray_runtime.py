"""The process's one connection to Ray: an embedded local Ray, or a cluster named by address;
and the few calls the engine makes on it (start, find, kill a job's named actor).

Never a bare ``ray.init()``, which can attach to whatever cluster Ray last recorded on this
machine. The embedded Ray is ``ray start --head`` run as its own session (so it outlives the
API), bound to loopback, with no dashboard; its address is kept in the data directory, where a
restarted API, or a second API process, finds it. Token authentication is on in both modes
(joining a cluster needs its token in ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``; the
embedded Ray makes one in the data directory). Ray is imported lazily so that the loopback
switch, which Ray reads at import, can be set first.

The embedded Ray cleans up after itself: ``app.jobs.ray_idle`` runs beside it and stops it once it
has had no API attached and no job for ``MB_EMBEDDED_RAY_IDLE_SECONDS``. An API stopped while its
Ray is still starting stops that start (``leave``), and an API that finds the leftovers of a start
whose API died stops them before it starts its own: one data directory, one Ray head.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.config import settings
from app.jobs import ray_idle

log = logging.getLogger(__name__)
_lock = threading.Lock()
_probe_lock = threading.Lock()
_owner_tasks: queue.SimpleQueue = queue.SimpleQueue()
_owner: threading.Thread | None = None
_pending: concurrent.futures.Future | None = None
_connected = False
_start_lock = threading.Lock()  # a start of the embedded Ray against the API stopping (``leave``)
_starting: subprocess.Popen | None = None  # the `ray start` under way, if any
_abandoned: subprocess.Popen | None = None  # the one ``leave`` stopped
LOOPBACK = "127.0.0.1"
NAMESPACE = "model-builder"
# What a job's worker imports (see _head_env). torch._dynamo too: torch imports it (with sympy,
# 800 modules, seconds) at a job's first step, from torch.manual_seed and the optimizers.
PRELOAD = "app.jobs.worker,sklearn.datasets,torch._dynamo"
PRELOAD_ENV = "RAY_preload_python_modules"  # Ray's config: modules its workers import before work
_remote_classes: dict[type, Any] = {}


def cluster_address() -> str | None:
    """The Ray cluster to join, or None for an embedded local Ray."""
    return settings.ray_address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray() -> None:
    """Connect to Ray once per process (thread-safe); later calls return at once.

    Ray is always started from one thread that lives as long as the process: Ray ties its
    processes' lives to the thread that spawned them (Linux parent-death signal), so a start
    from a request thread that later exits would take Ray down with it.
    """
    if _connected:
        return
    _on_owner_thread(_connect).result()


def _on_owner_thread(fn: Callable[[], Any]) -> concurrent.futures.Future:
    """Run ``fn`` on the owner thread: a daemon that never ends, so it is not joined at exit
    (an executor's thread would be, before Ray's own exit handler, killing Ray under it)."""
    global _owner
    future: concurrent.futures.Future = concurrent.futures.Future()
    with _probe_lock:
        if _owner is None:
            _owner = threading.Thread(target=_owner_loop, name="ray-owner", daemon=True)
            _owner.start()
    _owner_tasks.put((fn, future))
    return future


def _owner_loop() -> None:
    while True:
        fn, future = _owner_tasks.get()
        _settle(future, fn)


def _settle(future: concurrent.futures.Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as e:
        future.set_exception(e)


def _connect() -> None:
    global _connected
    with _lock:
        address = cluster_address()
        if address is None:
            # With this unset Ray picks the machine's outward address; set, its node stays on loopback.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ["RAY_AUTH_MODE"] = "token"
        import ray

        if ray.is_initialized():
            _connected = True
            return
        common = {"logging_level": logging.WARNING, "log_to_driver": False, "namespace": NAMESPACE}
        if address is None:
            ray.init(address=embedded_address(), _node_ip_address=LOOPBACK, **common)
            ip = ray.util.get_node_ip_address()
            if ip != LOOPBACK:
                log.warning("embedded Ray runs on %s, not loopback: ray was imported before the app", ip)
        else:
            ray.init(address=address, **common)
        _connected = True


def embedded_dir(data_dir: Path | None = None) -> Path:
    """Where the embedded Ray's address, token, lock and start log are kept: the data directory."""
    return (data_dir or settings.data_dir).resolve() / "ray"


def embedded_temp_dir(data_dir: Path | None = None) -> Path:
    """The embedded Ray's own temp dir (sessions, logs, sockets): short, as unix sockets need, and
    one per data directory, so its processes can be told apart from any other Ray's."""
    digest = hashlib.sha256(str(embedded_dir(data_dir)).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mbray-{digest}"


def embedded_address() -> str:
    """The address of this data directory's Ray, started here if none answers.

    Ray runs as its own processes (``ray start --head``, a session of its own), so it outlives
    the API: a restarted API finds it again through the address file. A file lock makes one
    of several API processes start it; the others wait and join it.
    """
    state = embedded_dir()
    state.mkdir(parents=True, exist_ok=True)
    _use_token(state)
    with open(state / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
        address_file = state / "address"
        if address_file.exists():
            address = address_file.read_text().strip()
            if _answers(address):
                return address
            log.warning("the embedded Ray at %s is gone; starting a new one", address)
        _clear_leftovers()
        address = _start_head(state)
        tmp = state / f".address.{os.getpid()}"
        tmp.write_text(address)
        os.replace(tmp, address_file)
        return address


def _use_token(state: Path) -> None:
    """Token auth for the embedded Ray: the operator's token, else one kept in the data directory."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = state / "auth_token"
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


def _answers(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something listens at Ray's control store port (a dead Ray refuses at once)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _clear_leftovers() -> None:
    """Stop what is left of this data directory's Ray when its address does not answer: a start
    whose API died midway (it would come up as a second head), or a Ray whose control store died."""
    leftovers = embedded_pids()
    if leftovers:
        log.warning("stopping %d processes left of an embedded Ray that does not answer", len(leftovers))
        stop_embedded()


def _start_head(state: Path) -> str:
    with socket.socket() as s:  # a free port for the control store
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
        f"--node-ip-address={LOOPBACK}", f"--port={port}", "--include-dashboard=false",
        "--disable-usage-stats", f"--temp-dir={embedded_temp_dir()}",
    ]  # fmt: skip
    if settings.ray_num_cpus is not None:
        command.append(f"--num-cpus={settings.ray_num_cpus}")
    env, address = _head_env(), f"{LOOPBACK}:{port}"
    # First: should this API die before the Ray is up, the watcher still stops it in the end.
    ray_idle.start(address, settings.data_dir, settings.embedded_ray_idle_seconds, env)
    _run_start(command, env, state / "ray-start.log")
    log.info("started the embedded Ray at %s (temp dir %s)", address, embedded_temp_dir())
    return address


def _head_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])  # this checkout, importable by the workers
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps the node on loopback
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray's idle workers import the job's code (torch, the layers, scikit-learn's datasets)
        # before they take work, so a job's actor starts warm.
        PRELOAD_ENV: os.environ.get(PRELOAD_ENV, PRELOAD),
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


def _run_start(command: list[str], env: dict[str, str], log_path: Path) -> None:
    """Run `ray start`; ``leave`` may stop it meanwhile (then this raises)."""
    global _starting
    with _start_lock, open(log_path, "wb") as out:
        # Its own session: a signal to the API's process group (Ctrl-C, kill -- -PID) spares it.
        proc = _starting = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        returncode = proc.wait(timeout=300)
    finally:
        with _start_lock:
            _starting = None
            if _abandoned is proc:  # ``leave`` stopped it, and stops what it started
                raise RuntimeError("the API stopped while its embedded Ray was starting")
    if returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"ray start failed ({returncode}): {' / '.join(tail)}")


def embedded_pids(data_dir: Path | None = None) -> dict[int, str]:
    """The processes of a data directory's embedded Ray (found by its temp dir): pid -> command line."""
    marker = str(embedded_temp_dir(data_dir)).encode()
    pids = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if marker in cmdline:
                    pids[int(proc.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return pids


def stop_embedded(data_dir: Path | None = None) -> int:
    """Stop a data directory's embedded Ray, and only it (never ``ray stop``, which stops every
    Ray of the machine); how many processes were killed. Its jobs die with it.

    Every process of it shares the session ``ray start`` was given (workers rename themselves,
    so they are found by session, not by command line)."""
    killed, sessions = 0, set()
    for _ in range(5):  # again while any is found: a `ray start` still starting spawns more
        sessions |= {_session(pid) for pid in embedded_pids(data_dir)} - {None, os.getsid(0)}
        found = [
            pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _session(pid) in sessions
        ]
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += len(found)
        if not found:
            break
        time.sleep(0.2)
    with contextlib.suppress(FileNotFoundError):
        (embedded_dir(data_dir) / "address").unlink()
    return killed


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # gone
        return None


def leave(active_jobs: int | None) -> str:
    """What stays of Ray when this API process stops, said in one log line (returned): a start
    of the embedded Ray still under way is stopped (and with it what it started); a running Ray
    stays with its jobs. ``active_jobs``: the store's queued and running jobs (None: unknown)."""
    global _abandoned
    with _start_lock:
        starting = _abandoned = _starting
        if starting is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(starting.pid, signal.SIGKILL)
    if starting is not None:
        stop_embedded()
        line = "the embedded Ray was still starting: stopped it; nothing stays"
    else:
        line = _what_stays(active_jobs)
    log.warning("%s", line)
    return line


def _what_stays(active_jobs: int | None) -> str:
    jobs = "its jobs" if active_jobs is None else f"{active_jobs} active jobs"
    address = cluster_address()
    if address is not None:
        return f"{jobs} stay on the Ray cluster at {address}"
    if not embedded_pids():
        return "no embedded Ray runs: nothing stays"
    idle = settings.embedded_ray_idle_seconds
    return (
        f"the embedded Ray of {settings.data_dir} stays up with {jobs}; it stops itself once it "
        f"has had no API and no job for {idle:g} s (MB_EMBEDDED_RAY_IDLE_SECONDS), or now with "
        "`make stop-ray`"
    )


def started() -> bool:
    """Whether this process has connected to Ray (without importing it: see ensure_ray)."""
    return _connected and sys.modules["ray"].is_initialized()


def alive(timeout_s: float = 2.0) -> bool:
    """Whether Ray answers with at least one live node within ``timeout_s``.

    Asked in a separate thread because a Ray whose control store died blocks callers for a
    long time; one probe at a time, so a dead Ray cannot pile threads up.
    """
    global _pending
    if not started():
        return False
    with _probe_lock:
        if _pending is None or _pending.done():
            _pending = concurrent.futures.Future()
            threading.Thread(target=_settle, args=(_pending, _any_node_alive), daemon=True).start()
        pending = _pending
    try:
        return pending.result(timeout=timeout_s)
    except Exception:
        return False


def _any_node_alive() -> bool:
    import ray

    return any(node.get("Alive") for node in ray.nodes())


def gpu_count() -> float:
    """GPUs the cluster has in total (0 when none)."""
    import ray

    return ray.cluster_resources().get("GPU", 0.0)


def room_for(memory: int) -> int:
    """How many more actors of 1 CPU and ``memory`` bytes Ray has room for now (cluster-wide)."""
    import ray

    free = ray.available_resources()
    return int(min(free.get("CPU", 0.0), free.get("memory", 0.0) / memory))


def named_actors() -> list[str]:
    """The names of the live named actors in the ``model-builder`` namespace."""
    import ray

    return ray.util.list_named_actors()


def actor_name(job_id: str) -> str:
    """The name of a job's actor in the ``model-builder`` namespace."""
    return f"job-{job_id}"


def start_actor(
    actor_class: Any,
    name: str,
    args: tuple,
    *,
    num_gpus: int,
    max_restarts: int,
    memory: int | None = None,
    max_concurrency: int = 1,
) -> Any:
    """Start a detached, named actor (its handle): it outlives this process, and any API process
    finds it by name.

    ``memory``: bytes Ray reserves for it (placed only where that much is free);
    ``max_concurrency``: its method calls served at once (each in a thread of its own).
    """
    import ray

    remote = _remote_classes.get(actor_class)
    if remote is None:
        remote = _remote_classes[actor_class] = ray.remote(actor_class)
    return remote.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        max_restarts=max_restarts,
        num_cpus=1,
        num_gpus=num_gpus,
        memory=memory,
        max_concurrency=max_concurrency,
    ).remote(*args)


def find_actor(name: str) -> Any | None:
    """A handle on a named actor, or None when there is none."""
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def kill_actor(name: str) -> bool:
    """Kill a named actor for good (no restart); False when there is none."""
    import ray

    handle = find_actor(name)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


def actor_state(name: str) -> str | None:
    """A named actor's state (``ALIVE``, ``PENDING_CREATION``, ``RESTARTING``, ...), or None when
    no such actor lives (it finished, was killed, or Ray lost it).

    Ray's public state API needs the dashboard, which the embedded Ray does not run; this reads
    the same table from the control store (``ray._private.state``).
    """
    from ray._private import state

    handle = find_actor(name)
    if handle is None:
        return None
    info = state.actors(handle._actor_id.hex())
    return None if not info or info["State"] == "DEAD" else info["State"]


if __name__ == "__main__":  # python -m app.jobs.ray_runtime stop
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m app.jobs.ray_runtime stop   (stops MB_DATA_DIR's embedded Ray)")
    print(f"stopped {stop_embedded()} processes of the embedded Ray of {settings.data_dir}")
