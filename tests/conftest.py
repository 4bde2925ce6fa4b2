"""Shared fixtures. Tests that need real UTKFace images read them from ../shared
beside the checkout and skip, saying so, when it is absent."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
UTKFACE = REPO.parent / "shared" / "data" / "utkface"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    if not (UTKFACE / "UTKFace").is_dir():
        pytest.skip(f"UTKFace images not found at {UTKFACE} (the shared data folder beside the checkout)")
    return UTKFACE


def tiny_recipe(folder: Path, utkface_root: Path, limit: int, epochs: int, batch_size: int) -> Path:
    """``configs/tiny.yaml`` on ``limit`` real faces with ``epochs`` and ``batch_size``, written in ``folder``."""
    import yaml

    base = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    base["data"].update(root=str(utkface_root), limit=limit, workers=0)
    base["train"] = {"epochs": epochs, "batch_size": batch_size, "eval_batch_size": 50}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


# -- results database (facemtl[serve]) -------------------------------------------------------------
# Store tests run on SQLite always and on PostgreSQL when FACEMTL_TEST_PG_URL names a server
# they may create databases on (.ci/run starts a throwaway cluster and sets it).
PG_ENV = "FACEMTL_TEST_PG_URL"


def _fresh_pg_database(admin_url: str):
    import uuid

    import sqlalchemy as sa

    from facemtl.store.engine import database_url

    admin = sa.create_engine(database_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"facemtl_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(database_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    return admin, name, url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty results database: a SQLite file, or a new database on the PostgreSQL
    server of $FACEMTL_TEST_PG_URL (skipped, saying so, when that is not set)."""
    pytest.importorskip("sqlalchemy")
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return
    import os

    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (a server URL; .ci/run starts a throwaway cluster)")
    admin, name, url = _fresh_pg_database(admin_url)
    yield url
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# -- the shipped model and a served app (facemtl[serve]) ---------------------------------------------------


@pytest.fixture(scope="session")
def predictor():
    """The shipped model on the CPU, loaded once for the run."""
    pytest.importorskip("dlib")
    from facemtl.inference import load_predictor

    return load_predictor(device="cpu")


@contextlib.contextmanager
def uvicorn_in_thread(app, graceful: float | None = None):
    """``app`` served by uvicorn on a free loopback port, in a thread (``graceful``: seconds its stop
    waits for requests before cutting them off); yields ``(port, server)``: ``server.should_exit =
    True`` stops it, as a signal does. Stopped at the end."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = {} if graceful is None else {"timeout_graceful_shutdown": graceful}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **extra))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield port, server
    finally:
        server.should_exit = True
        thread.join(20)
