"""A request the server's stop cuts off is answered in the API's JSON, saying what became of it.

uvicorn waits ``timeout_graceful_shutdown`` seconds (``facemtl serve``: 20) for the requests
still running once it is told to stop, then cancels their tasks (``Server.shutdown``); the
cancellation comes out of the application, and uvicorn answers a request not yet answered
with its own plain-text ``500 Internal Server Error`` (``run_asgi``, ``send_500_response``).
Here, such a request is answered 503 with ``Retry-After`` and one sentence instead.

A sync route (``POST /v1/analyze``) runs in a worker thread that the cancellation does not
stop: the upload may still reach the store after the 503. The request's
:class:`~facemtl.server.service.Handing` makes the outcome certain, and the sentence true: an
upload cut before it was handed to the store never will be ("send it again"); one handed
before is stored ("do not send it again").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from .limits import Receive, Scope, Send, send_error
from .service import Handing

log = logging.getLogger("facemtl.server")

#: Where a request's :class:`~facemtl.server.service.Handing` is, in its ASGI scope.
HANDING = "facemtl.handing"
#: Seconds a client cut off is asked to wait (``Retry-After``): a service manager restarts the
#: server within seconds, and its model loads in a few more.
RETRY_AFTER = 10

_STOPPED = "the server stopped before answering"
_NOT_STORED = f"{_STOPPED}; the upload was not stored: send it again"
_STORED = (f"{_STOPPED}, after the upload was handed to the database: it is stored (unless the database did not "
           "answer before the stop: the server log says so); do not send it again, a restarted server does not "
           "remember its Idempotency-Key")
_AGAIN = f"{_STOPPED}; send the request again"


class CutOff:
    """ASGI middleware: each HTTP request gets a :class:`~facemtl.server.service.Handing` (in
    ``scope[HANDING]``); one whose task is cancelled before its answer started (uvicorn's
    graceful-shutdown timeout) is answered 503 with :data:`RETRY_AFTER`, after ``cut(handing)``
    says whether an upload to ``uploads`` (paths) was handed to the store first."""

    def __init__(self, app: Any, cut: Callable[[Handing], bool], uploads: tuple[str, ...] = ()) -> None:
        self.app, self.cut, self.uploads = app, cut, uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handing = scope[HANDING] = Handing()
        started = False

        async def watched(msg: dict[str, Any]) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            if started:  # (an answer half sent, a live view: uvicorn closes the connection)
                raise
            upload = scope["path"] in self.uploads and scope["method"] == "POST"
            detail = (_STORED if self.cut(handing) else _NOT_STORED) if upload else _AGAIN
            log.warning("%s %s cut off by the server's stop: answered 503 (%s)", scope["method"], scope["path"],
                        detail)
            await send_error(send, 503, detail, [(b"retry-after", str(RETRY_AFTER).encode())])
            # The cancellation ends here: the task was answered and ends now either way; raised
            # again, it would add uvicorn's "Exception in ASGI application" traceback to the log.
