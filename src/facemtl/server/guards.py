"""ASGI middleware that guards the server before a request reaches the framework: the
headers every response carries, and, for a server without a token, which ``Host`` and
``Origin`` it answers.

Why our own rather than Starlette's ``TrustedHostMiddleware``: that one matches host names
only, and a loopback server must also refuse a cross-site form POST (a ``multipart/form-data``
upload needs no CORS preflight), which it does not look at; both checks are a few lines.
"""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlsplit

from .auth import is_loopback
from .limits import Receive, Scope, Send, send_error

#: The page's Content-Security-Policy: its own script, style sheet and API only; images also
#: from ``data:`` (the annotated upload) and ``blob:`` (the live view); never framed.
PAGE_POLICY = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
#: The headers every answer carries (an answer to an unexpected error too: ``create_app``'s handler).
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Content-Security-Policy": PAGE_POLICY}


class SecurityHeaders:
    """Every response: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
    ``X-Frame-Options: DENY`` and :data:`PAGE_POLICY`; ``/v1`` answers that set no
    ``Cache-Control`` get ``no-store`` (faces are personal data: no proxy or browser cache keeps them)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/v1/")

        async def with_headers(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                if api:
                    extra.append((b"cache-control", b"no-store"))
                msg = {**msg, "headers": headers + [(k, v) for k, v in extra if k not in names]}
            await send(msg)

        await self.app(scope, receive, with_headers)


def _host_name(value: str) -> str:
    """The host name of a ``Host`` header or an origin's network location, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class LocalOnly:
    """For a server without a token, which answers this machine only: a request whose ``Host``
    names another host is refused (400), so that a web page cannot reach the API through a DNS
    name it re-points at 127.0.0.1 (DNS rebinding); and a POST sent by a page of another origin
    (its ``Origin`` header) is refused (403), so that a page the operator visits cannot store
    faces. ``names``: host names besides loopback ones (``localhost``, 127.0.0.0/8, ``::1``)
    that reach this server, e.g. the name it was bound to. A POST's ``Origin`` must be this very
    server (scheme aside, its host and port as the request's ``Host`` names them): a page served
    on another local port (a development server, a notebook) is another origin too."""

    def __init__(self, app: Any, names: Sequence[str] = ()) -> None:
        self.app = app
        self.names = {n.strip("[]").lower() for n in names}

    def local(self, name: str) -> bool:
        return name in self.names or is_loopback(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self.local(_host_name(host)):
            await send_error(send, 400, f"this server answers this machine only, not the host {host!r} (a web page "
                                        "reaching it through a DNS name?); to serve other names, set an API token")
            return
        origin = headers.get(b"origin", b"").decode("latin-1")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin:
            # "null": a sandboxed frame, a file; http and https of one host and port are one server here
            ours = origin != "null" and urlsplit(origin).netloc.lower() == host.strip().lower()
            if not ours:
                await send_error(send, 403, f"a request sent by a page of {origin} is refused: without an API token "
                                            f"this server takes uploads only from its own page (http://{host}) and "
                                            "from programs (no Origin); a page of another origin, another port of "
                                            "this machine included, needs the server to have a token")
                return
        await self.app(scope, receive, send)
