"""The process's one connection to Ray: an embedded local Ray, or a cluster named by address.

Never a bare ``ray.init()``, which can attach to whatever cluster Ray last recorded on this
machine. Embedded Ray is bound to loopback and has no dashboard; token authentication is on
in both modes (joining a cluster needs its token in ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH``). Ray is imported lazily so that the loopback switch, which Ray reads
at import, can be set first.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from app.core.config import settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_probe_lock = threading.Lock()
_owner_tasks: queue.SimpleQueue = queue.SimpleQueue()
_owner: threading.Thread | None = None
_pending: concurrent.futures.Future | None = None
_connected = False
LOOPBACK = "127.0.0.1"


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
        common = {"logging_level": logging.WARNING, "log_to_driver": False, "namespace": "model-builder"}
        if address is None:
            ray.init(
                address="local",
                include_dashboard=False,
                num_cpus=settings.ray_num_cpus,
                _node_ip_address=LOOPBACK,
                **common,
            )
            ip = ray.util.get_node_ip_address()
            if ip != LOOPBACK:
                log.warning("embedded Ray runs on %s, not loopback: ray was imported before the app", ip)
        else:
            ray.init(address=address, **common)
        _connected = True


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
