"""The API token: where it comes from and how a request proves it has it.

A token comes from ``$FACEMTL_API_TOKEN`` or a file (its first line). When one is set,
every ``/v1`` route except ``/v1/health`` wants ``Authorization: Bearer <token>``; a
server that binds anything but a loopback address refuses to start without one.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ENV_TOKEN = "FACEMTL_API_TOKEN"


def load_token(token_file: str | None = None) -> str | None:
    """The token from ``token_file`` (first line) or ``$FACEMTL_API_TOKEN``; ``None`` if neither.
    A named file that is missing or empty is an error (``FileNotFoundError`` / ``ValueError``)."""
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"token file {path} does not exist")
        lines = path.read_text().strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    return os.environ.get(ENV_TOKEN) or None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bearer_problem(authorization: str | None, token: bytes) -> str | None:
    """Why an ``Authorization`` header's value does not prove ``token`` (one sentence for the
    401), or ``None`` when it does: ``Bearer <token>``, compared in constant time."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return "this server wants its API token: send 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(given.encode("latin-1", "replace"), token):
        return "wrong API token"
    return None


def token_dependency(token: str) -> Callable[..., None]:
    """A FastAPI dependency that refuses (401) a request without the bearer ``token``."""
    bearer = HTTPBearer(auto_error=False, description="the server's API token (FACEMTL_API_TOKEN)")
    expected = token.encode()

    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # (``credentials`` only declares the scheme in the API's document; the header is read as
        # UploadLimit reads it, so the two checks cannot drift apart)
        problem = bearer_problem(request.headers.get("authorization"), expected)
        if problem:
            raise HTTPException(401, problem, headers={"WWW-Authenticate": "Bearer"})

    return check
