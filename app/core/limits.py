"""Rejects oversized and over-nested request bodies before anything parses them.

A pure ASGI middleware: it reads the body up to ``max_body_bytes`` (413 past it, without
reading the rest), scans its JSON nesting depth without recursion (422 past
``max_json_depth``) and its strings for lone surrogates (422), then hands the buffered body on
unchanged. Paths in ``streamed`` (uploads) pass untouched: their routes stream the body to disk
and hold it to limits of their own.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import send_error

# A string, or an unterminated one running to the end (the closing quote is optional): every
# scan position either starts a string that this match consumes, or is one bracket. A pattern
# that must find the closing quote retries from every later quote of an unterminated string,
# which is at least quadratic (64 kB of escaped quotes took 27 s on the event loop).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')


def json_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON text (strings skipped); linear time, no recursion."""
    return json_scan(body)[0]


def json_scan(body: bytes) -> tuple[int, bool]:
    """The deepest bracket nesting of a JSON text, and whether a string in it holds a lone UTF-16
    surrogate (``"\\ud800"``: valid JSON escapes, but no Unicode text: it cannot be encoded, not
    even in an error message echoing it). Linear time, no recursion."""
    depth = deepest = 0
    lone_surrogate = False
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token.startswith(b'"'):
            lone_surrogate = lone_surrogate or (b"\\u" in token and _has_lone_surrogate(token))
        elif token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest, lone_surrogate


def _has_lone_surrogate(token: bytes) -> bool:
    try:
        text = json.loads(token)  # pairs escaped surrogate pairs into one character
    except ValueError:
        return False  # not a whole string: the JSON parser refuses the body anyway
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, max_json_depth: int, streamed: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or self._streams(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        depth, lone_surrogate = json_scan(body)
        if depth > self.max_json_depth:
            msg = f"JSON nested {depth} levels deep; the limit is {self.max_json_depth}"
            ctx = {"limit": self.max_json_depth, "got": depth}
            await send_error(send, 422, "json_too_deep", ["body"], msg, ctx)
            return
        if lone_surrogate:
            msg = "a string in the body holds a lone UTF-16 surrogate (such as \\ud800): not Unicode text"
            await send_error(send, 422, "json_invalid", ["body"], msg)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _streams(self, scope: Scope) -> bool:
        path, root = scope["path"], scope.get("root_path", "")
        return (path[len(root) :] if root and path.startswith(root) else path) in self.streamed

    async def _too_large(self, send: Send) -> None:
        msg = f"request body exceeds {self.max_body_bytes} bytes"
        await send_error(send, 413, "body_too_large", ["body"], msg, {"limit": self.max_body_bytes})
