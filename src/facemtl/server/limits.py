"""Upload size limit, enforced before the request reaches the framework.

The body of a limited route is read here, up to the limit: past it the client gets
413 at once (a ``Content-Length`` over the limit is refused before any byte is read),
and nothing downstream ever holds more than the limit in memory. On a server with a
token, a request without it gets its 401 here, before any byte of its body is read (the
framework's own check comes after the body is read and parsed: a security review sent 12
uploads of 19 MB without a token and the server grew by 800 MB to answer 401).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from .auth import bearer_problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_error(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()  # as JSONResponse writes it
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class UploadLimit:
    """ASGI middleware: bodies sent to ``paths`` may hold at most ``max_bytes``, and, with a
    ``token``, come with ``Authorization: Bearer <token>`` (401 before the body is read)."""

    def __init__(self, app: Any, max_bytes: int, paths: tuple[str, ...], token: str | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths
        self.token = token.encode() if token else None

    def too_large(self) -> str:
        return f"the upload is over the server's limit of {self.max_bytes / 2**20:g} MiB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.token is not None:
            problem = bearer_problem(headers.get(b"authorization", b"").decode("latin-1"), self.token)
            if problem:
                await send_error(send, 401, problem, [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_error(send, 400, "the Content-Length header is not a number")
                return
            if declared > self.max_bytes:
                await send_error(send, 413, self.too_large())
                return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, self.too_large())
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
