"""An answer sent before the request's body was read (a 413) says ``Connection: close`` and the
server closes the connection; one that read its body keeps the connection alive. On a real
uvicorn, with both of its HTTP/1.1 implementations."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import servers

from app.core.config import settings
from app.main import app

SUMMARY = "/v1/models/summary"
GOOD = json.dumps({"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [1, 3]}).encode()
BAD = json.dumps({"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [0]}).encode()  # a 422


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The next answer on ``sock``: its head and its body (of its Content-Length)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def _post(sock: socket.socket, headers: str, body: bytes) -> tuple[bytes, bytes]:
    sock.sendall(
        f"POST {SUMMARY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n".encode()
        + body
    )
    return _answer(sock)


@pytest.fixture(scope="module", params=["h11", "httptools"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    with servers.serving(app, request.param) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        (f"Content-Length: {2 * settings.max_body_bytes}\r\n", b"{" * 1000),
        (
            "Transfer-Encoding: chunked\r\n",
            b"%x\r\n%s\r\n" % (settings.max_body_bytes + 1, b" " * (settings.max_body_bytes + 1)),
        ),
    ],
    ids=["declared", "chunked"],
)
def test_a_413_before_the_body_is_read_closes_the_connection(port: int, headers: str, sent: bytes) -> None:
    """The 413 left the connection open, the rest of the body still coming on it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        assert b" 200 " in _post(sock, f"Content-Length: {len(GOOD)}\r\n", GOOD)[0].split(b"\r\n")[0]
        head, body = _post(sock, headers, sent)  # the body is never finished
        assert b" 413 " in head.split(b"\r\n")[0], head
        assert json.loads(body)["detail"][0]["type"] == "body_too_large"
        assert b"connection: close" in head.lower(), head
        assert sock.recv(1) == b""  # and it is closed


def test_an_error_after_the_body_was_read_keeps_the_connection(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for body, status in [(BAD, b" 422 "), (GOOD, b" 200 "), (BAD, b" 422 ")]:
            head, _ = _post(sock, f"Content-Length: {len(body)}\r\n", body)
            assert status in head.split(b"\r\n")[0] and b"connection: close" not in head.lower(), head
