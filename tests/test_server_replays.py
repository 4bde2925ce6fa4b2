"""POST /v1/analyze with an Idempotency-Key (an upload sent again is answered, not stored twice),
and a request the server's stop cuts off (a JSON 503 saying whether the upload was stored, not
uvicorn's plain-text 500)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from conftest import uvicorn_in_thread  # noqa: E402

from facemtl.server.replays import MAX_KEY, Answer, Claim, Replays, parse_key  # noqa: E402
from facemtl.server.service import ServiceError  # noqa: E402

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


# -- the key store -------------------------------------------------------------------------------------------


def test_a_key_is_one_to_255_characters_quoted_or_not():
    assert parse_key(None) is None
    assert parse_key('"abc-1"') == parse_key("abc-1") == "abc-1"  # the draft's quoted form, Stripe's bare one
    assert parse_key("k" * MAX_KEY) == "k" * MAX_KEY
    for bad, said in (("", "is empty"), ("  ", "is empty"), ('""', "is empty"),
                      ("k" * (MAX_KEY + 1), "256 characters")):
        with pytest.raises(ServiceError) as e:
            parse_key(bad)
        assert e.value.status == 400 and said in e.value.detail, (bad, e.value.detail)


def test_replays_remember_each_answer_and_forget_the_oldest_past_their_bounds():
    replays = Replays(max_keys=3, max_bytes=10_000)
    for i in range(4):
        claim = replays.claim(f"k{i}", b"fp")
        assert isinstance(claim, Claim)
        replays.keep(claim, Answer(f'{{"n":{i}}}'.encode(), "yes"))
    assert len(replays) == 3
    assert replays.claim("k3", b"fp") == Answer(b'{"n":3}', "yes")  # remembered: the same answer
    assert isinstance(replays.claim("k0", b"fp"), Claim)  # the oldest was forgotten: this one runs
    with pytest.raises(ServiceError) as e:
        replays.claim("k2", b"another photo")
    assert e.value.status == 422 and "used for another request" in e.value.detail

    small = Replays(max_bytes=100)  # bytes: two answers of 40 (and a key of 2) fit, a third drops the first
    for i in range(3):
        small.keep(small.claim(f"b{i}", b"fp"), Answer(b"x" * 40, "kept"))
    assert len(small) == 2 and isinstance(small.claim("b0", b"fp"), Claim)
    assert small.claim("b2", b"fp") == Answer(b"x" * 40, "kept")

    brief = Replays(keep_for=0.05)
    brief.keep(brief.claim("t", b"fp"), Answer(b"{}", "yes"))
    assert isinstance(brief.claim("t", b"fp"), Answer)
    time.sleep(0.1)
    assert isinstance(brief.claim("t", b"fp"), Claim) and len(brief) == 0  # expired: runs again


def test_a_repeat_waits_for_the_first_answer_a_bounded_time_and_runs_after_an_error():
    replays = Replays(wait=0.3)
    first = replays.claim("k", b"fp")
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as e:  # the first never answers within the wait
        replays.claim("k", b"fp")
    assert e.value.status == 409 and "still being answered after 0.3 s" in e.value.detail
    assert 0.25 < time.monotonic() - t0 < 2
    threading.Timer(0.1, replays.keep, args=(first, Answer(b'{"a":1}', "yes"))).start()
    assert replays.claim("k", b"fp") == Answer(b'{"a":1}', "yes")  # waited for it

    failing = replays.claim("e", b"fp")
    threading.Timer(0.1, replays.drop, args=(failing,)).start()
    again = replays.claim("e", b"fp")  # the first failed: not remembered, this one runs
    assert isinstance(again, Claim) and again is not failing and len(replays) == 1


# -- the route -----------------------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path, predictor):
    from fastapi.testclient import TestClient

    from facemtl.server import create_app
    from facemtl.store import Store

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    with TestClient(create_app(store, predictor), raise_server_exceptions=False) as c:
        yield c
    store.close()


def upload(client, key: str | None = None, data: bytes | None = None, **params):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/v1/analyze", params={"source": "kiosk", **params}, headers=headers,
                       files={"file": ("a.jpg", PHOTO.read_bytes() if data is None else data, "image/jpeg")})


def stored(client) -> int:
    return len(client.get("/v1/faces", params={"source": "kiosk"}).json()["items"])


def test_an_upload_sent_again_with_its_idempotency_key_is_answered_not_stored_again(client, monkeypatch):
    service = client.app.state.service
    analysed = []
    original = service.analyze
    monkeypatch.setattr(service, "analyze", lambda *a, **k: analysed.append(1) or original(*a, **k))
    key = str(uuid.uuid4())
    first = upload(client, key, annotate=True)
    assert first.status_code == 200 and first.headers["x-facemtl-stored"] == "yes"
    assert "idempotent-replayed" not in first.headers and len(first.json()["faces"]) == 1
    again = upload(client, key, annotate=True)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-facemtl-stored"] == "yes" and again.content == first.content
    assert again.headers["content-type"] == "application/json" and again.headers["cache-control"] == "no-store"
    assert len(analysed) == 1 and stored(client) == 1  # neither analysed nor stored again

    for changed in ({"annotate": False}, {"source": "other"}, {"data": PHOTO.read_bytes() + b"\0"}):
        r = upload(client, key, **{"annotate": True, **changed})
        assert r.status_code == 422, changed
        assert r.json() == {"detail": "this Idempotency-Key was used for another request (another photo, annotate "
                                      "or source); use a new key for a new upload"}
    assert len(analysed) == 1 and stored(client) == 1
    r = upload(client, "")
    assert r.status_code == 400 and r.json()["detail"].startswith("the Idempotency-Key header is empty")
    r = upload(client, "k" * 256)
    assert r.status_code == 400 and "256 characters long; at most 255" in r.json()["detail"]
    assert len(analysed) == 1 and stored(client) == 1

    assert upload(client, str(uuid.uuid4())).headers["x-facemtl-stored"] == "yes"  # a new key: a new upload
    plain = [upload(client) for _ in range(2)]  # no key: as before, each stored
    assert [r.headers["x-facemtl-stored"] for r in plain] == ["yes", "yes"]
    assert all("idempotent-replayed" not in r.headers for r in plain)
    assert len(analysed) == 4 and stored(client) == 4


def test_an_error_is_not_remembered_and_a_repeat_waits_for_the_first(client, monkeypatch):
    service = client.app.state.service
    original = service.analyze
    fail, gate = [ServiceError(503, "the model is away")], threading.Event()

    def analyze(*a, **k):
        if fail:
            raise fail.pop()
        gate.wait(10)
        return original(*a, **k)

    monkeypatch.setattr(service, "analyze", analyze)
    r = upload(client, "k1")
    assert r.status_code == 503 and r.json() == {"detail": "the model is away"}
    gate.set()
    r = upload(client, "k1")  # the error was not remembered: this one runs, and is stored
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers and stored(client) == 1

    gate.clear()
    client.app.state.replays.wait = 0.5
    answers = []
    first = threading.Thread(target=lambda: answers.append(upload(client, "k2")))
    first.start()
    time.sleep(0.3)  # the first waits at the gate
    r = upload(client, "k2")
    assert r.status_code == 409
    assert r.json() == {"detail": "the first request with this Idempotency-Key is still being answered after 0.5 s; "
                                  "retry shortly with the same key"}
    client.app.state.replays.wait = 10
    threading.Timer(0.3, gate.set).start()
    r = upload(client, "k2")  # waits for the first's answer
    first.join(30)
    assert answers[0].status_code == 200 and answers[0].headers["x-facemtl-stored"] == "yes"
    assert r.status_code == 200 and r.headers["idempotent-replayed"] == "true" and r.content == answers[0].content
    assert stored(client) == 2


def test_the_api_document_says_the_memory_is_lost_at_a_restart(client):
    doc = client.get("/openapi.json").json()["paths"]["/v1/analyze"]["post"]
    assert "in the memory of the server process: a restart forgets them" in " ".join(doc["description"].split())
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in doc["parameters"])


# -- a request the stop cuts off -----------------------------------------------------------------------------


def test_a_request_cut_off_before_it_is_answered_gets_a_json_503():
    """At the ASGI level, as uvicorn's graceful-shutdown timeout does it: the app's task cancelled."""
    from facemtl.server.cutoff import CutOff

    async def slow(scope, receive, send):
        await asyncio.sleep(60)

    async def half(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(60)

    async def cut(app, path="/v1/faces", method="GET"):
        sent = []

        async def send(msg):
            sent.append(msg)

        task = asyncio.ensure_future(CutOff(app, cut=lambda h: False, uploads=("/v1/analyze",))(
            {"type": "http", "path": path, "method": method, "headers": []}, None, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled(), sent

    cancelled, sent = asyncio.run(cut(slow))
    assert not cancelled and sent[0]["status"] == 503
    assert {(b"retry-after", b"10"), (b"content-type", b"application/json")} <= set(sent[0]["headers"])
    assert json.loads(sent[1]["body"]) == {"detail": "the server stopped before answering; send the request again"}
    _, sent = asyncio.run(cut(slow, "/v1/analyze", "POST"))
    assert json.loads(sent[1]["body"])["detail"] == ("the server stopped before answering; the upload was not "
                                                     "stored: send it again")
    cancelled, sent = asyncio.run(cut(half))  # an answer already started: nothing more to say, the cut goes on
    assert cancelled and [m["status"] for m in sent] == [200]


@contextlib.contextmanager
def serving(app, graceful: float):
    """``app`` served by uvicorn in a thread, cutting off requests ``graceful`` s after its stop;
    yields ``(port, stop)``: ``stop()`` tells it to stop, as a signal does."""
    with uvicorn_in_thread(app, graceful) as (port, server):
        yield port, lambda: setattr(server, "should_exit", True)


def post(port: int, key: str) -> tuple[int, dict, bytes]:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + PHOTO.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/v1/analyze?source=kiosk", body, {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                        "Idempotency-Key": key})
    r = c.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_upload_the_stop_cuts_off_is_a_json_503_that_says_truly_whether_it_was_stored(tmp_path, predictor,
                                                                                        monkeypatch, when):
    """A real uvicorn server cutting off a slow upload 0.5 s after its stop: uvicorn's own answer
    was a plain-text 500 "Internal Server Error", and the upload's worker thread, which the cut does
    not end, stored it all the same. Held ``before`` its faces are handed to the store, it is never
    stored (the stop's close waits for the thread: the cut alone, not the closed service, keeps it
    out); held ``after``, it is, and the 503 says so."""
    from facemtl.server import create_app
    from facemtl.store import Store
    from facemtl.store.queries import Query

    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(url)
    app = create_app(store, predictor)
    service, gate, held, done = app.state.service, threading.Event(), threading.Event(), threading.Event()
    original, close = service._store, service.close

    def slow_store(*a, **k):
        try:
            if when == "before":
                held.set()
                gate.wait(20)
            said = original(*a, **k)
            if when == "after":
                held.set()
                gate.wait(20)
            return said
        finally:
            done.set()

    def late_close():  # the stop's close once the upload's thread is through
        done.wait(20)
        close()

    monkeypatch.setattr(service, "_store", slow_store)
    monkeypatch.setattr(service, "close", late_close)
    answers = []
    try:
        with serving(app, graceful=0.5) as (port, stop):
            client = threading.Thread(target=lambda: answers.append(post(port, "k")))
            client.start()
            assert held.wait(60)  # analysed; now at the store
            stop()
            client.join(20)
            status, headers, body = answers[0]
            gate.set()  # the worker thread goes on, after the answer
        time.sleep(0.5)
    finally:
        gate.set()
        store.close()
    assert status == 503 and headers["content-type"] == "application/json" and headers["retry-after"] == "10"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    detail = json.loads(body)["detail"]
    with Store(url) as again:
        faces = again.faces(Query(source="kiosk"))[0]
    if when == "before":
        assert detail == "the server stopped before answering; the upload was not stored: send it again"
        assert faces == []
    else:
        assert detail.startswith("the server stopped before answering, after the upload was handed to the database: "
                                 "it is stored") and "do not send it again" in detail
        assert len(faces) == 1
