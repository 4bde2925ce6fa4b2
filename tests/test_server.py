"""facemtl serve: every route, the token, upload limits, injection attempts in every filter, a
bounded schemathesis run against the served OpenAPI, and the operator page in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from conftest import uvicorn_in_thread  # noqa: E402
from fakes import model_info, photos, store_photos, stream  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from facemtl.inference.results import TrackResult  # noqa: E402
from facemtl.server import create_app  # noqa: E402
from facemtl.sinks.db import DbSink  # noqa: E402
from facemtl.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "astronaut.jpg"
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INFO = model_info()


def fill(url: str) -> None:
    """A stream of two cameras' frames with tracks, thumbnails and live frames, and a folder of photos."""
    for cam, seed in (("cam-a", 0), ("cam-b", 1)):
        sink = DbSink(url, source=cam, kind="stream", model_info=INFO, thumbnails=True)
        for it in stream(INFO, 40, seed=seed, source=cam, people=2, image=True, t0=time.time() - 600):
            (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
        sink.close()
    store_photos(url, INFO, 10)


@pytest.fixture
def served(db_url, predictor):
    """A filled database behind an app that wants a token: ``(client, store)``."""
    fill(db_url)
    store = Store(db_url)
    app = create_app(store, predictor, token=TOKEN, max_upload=2 * 2**20)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store
    store.close()


def get_paths(client: TestClient) -> list[str]:
    """Every GET route of the OpenAPI document, with 1 for path ids."""
    doc = client.get("/openapi.json", headers=AUTH).json()
    return [p.replace("{face_id}", "1").replace("{source_id}", "1").replace("{track_id}", "1")
            for p, ops in doc["paths"].items() if "get" in ops]


# -- the token ---------------------------------------------------------------------------------------------


def test_every_route_but_health_wants_the_token(served):
    client, _ = served
    paths = get_paths(client)
    assert {"/v1/faces", "/v1/detections", "/v1/tracks", "/v1/stats", "/v1/sources", "/v1/version"} <= set(paths)
    for path in paths + ["/v1/sources/1/live.mjpeg?seconds=0.3"]:
        if path == "/v1/health":
            assert client.get(path).status_code == 200
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert "token" in r.json()["detail"]
        assert client.get(path, headers=AUTH).status_code in (200, 404), path
    r = client.post("/v1/analyze", files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")})
    assert r.status_code == 401
    assert client.get("/").status_code == 200 and "facemtl" in client.get("/").text  # the page itself is public


def test_serve_refuses_the_network_without_a_token(tmp_path, monkeypatch, capsys):
    from facemtl.cli import main
    from facemtl.server.auth import is_loopback, load_token

    monkeypatch.delenv("FACEMTL_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "x.db")]) == 2
    assert "FACEMTL_API_TOKEN" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", "--token-file", str(empty), "--db", str(tmp_path / "x.db")]) == 2
    assert "empty" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    empty.write_text("abc\nignored\n")
    assert load_token(str(empty)) == "abc"
    monkeypatch.setenv("FACEMTL_API_TOKEN", "from-env")
    assert load_token() == "from-env"


# -- the routes -----------------------------------------------------------------------------------------


def test_read_routes(served):
    client, store = served
    v = client.get("/v1/version", headers=AUTH).json()
    assert v["api"] == "v1" and v["model"]["name"] and v["database"]["schema"] == "0005"
    tasks = {t["name"]: t for t in client.get("/v1/tasks", headers=AUTH).json()}
    assert tasks["gender"]["classes"] == ["male", "female"] and tasks["age"]["filters"] == ["age_min", "age_max"]

    page = client.get("/v1/faces", headers=AUTH, params={"limit": 500}).json()
    assert len(page["items"]) == 40 * 2 * 2 + 16 and page["next"] is None
    assert client.get("/v1/detections", headers=AUTH, params={"limit": 500}).json() == page
    female = client.get("/v1/faces", headers=AUTH, params={"gender": "female", "age_min": 20, "age_max": 60,
                                                           "race": ["white", "asian"], "limit": 500}).json()["items"]
    want = [f["id"] for f in page["items"] if f["gender"] == "female" and 20 <= f["age"] <= 60
            and f["race"] in ("white", "asian")]
    assert [f["id"] for f in female] == want and want
    first = client.get("/v1/faces", headers=AUTH, params={"limit": 3, "source": "cam-a"}).json()
    second = client.get("/v1/faces", headers=AUTH, params={"limit": 3, "source": "cam-a",
                                                           "cursor": first["next"]}).json()
    cam_a = [f["id"] for f in page["items"] if f["source"] == "cam-a"]
    assert [f["id"] for f in first["items"] + second["items"]] == cam_a[:6]
    tracked = first["items"][0]
    assert tracked["raw"]["gender"] in ("male", "female") and tracked["thumbnail"]
    by_track = client.get("/v1/faces", headers=AUTH, params={"track": tracked["track_id"]}).json()["items"]
    assert by_track and {f["track_id"] for f in by_track} == {tracked["track_id"]}

    tracks = client.get("/v1/tracks", headers=AUTH, params={"limit": 500}).json()["items"]
    assert {t["source"] for t in tracks} == {"cam-a", "cam-b"}
    ended = client.get("/v1/tracks", headers=AUTH, params={"closed": True, "gender": "male"}).json()["items"]
    assert all(t["closed"] and t["gender"] == "male" for t in ended) and ended

    stats = client.get("/v1/stats", headers=AUTH).json()
    assert stats["bucket"] == 900 and set(stats["tasks"]) == {"age", "gender", "race"}
    assert sum(sum(b["counts"].values()) for b in stats["tasks"]["gender"]["buckets"]) == len(page["items"])
    assert stats["tasks"]["gender"]["groups"] == ["male", "female"]
    only = client.get("/v1/stats", headers=AUTH, params={"task": "race", "of": "tracks", "source": "cam-b"}).json()
    assert list(only["tasks"]) == ["race"]

    sources = {s["name"]: s for s in client.get("/v1/sources", headers=AUTH).json()}
    assert sources["cam-a"]["state"] == "stopped" and sources["cam-a"]["snapshot_time"] is not None
    snap = client.get(f"/v1/sources/{sources['cam-a']['id']}/snapshot.jpg", headers=AUTH)
    assert snap.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(snap.content)).size == (320, 240)
    live = client.get(f"/v1/sources/{sources['cam-a']['id']}/live.mjpeg", headers=AUTH, params={"seconds": 0.6})
    assert live.headers["content-type"].startswith("multipart/x-mixed-replace") and b"--frame" in live.content
    no_live = sources[next(n for n in sources if n.startswith("analyze@"))]["id"]
    assert client.get(f"/v1/sources/{no_live}/snapshot.jpg", headers=AUTH).status_code == 404
    r = client.get("/v1/sources/999999/snapshot.jpg", headers=AUTH)  # (was "source 999999 has no live frame")
    assert r.status_code == 404 and r.json()["detail"].startswith("there is no source 999999"), r.text
    thumb = client.get(f"/v1/faces/{tracked['id']}/thumbnail.jpg", headers=AUTH)
    assert Image.open(io.BytesIO(thumb.content)).size == (96, 96)
    photo_face = next(f for f in page["items"] if f["file"])
    assert client.get(f"/v1/faces/{photo_face['id']}/thumbnail.jpg", headers=AUTH).status_code == 404
    assert client.get("/v1/health").json() == {"status": "ok", "database": "ok"}


def test_one_face_or_track_by_id(served):
    """An operator test: /v1/faces/{id} and /v1/tracks/{id} answered 404 "Not Found" (no route):
    a face or a track could not be opened on its own."""
    client, _ = served
    face = client.get("/v1/faces", headers=AUTH, params={"limit": 1}).json()["items"][0]
    assert client.get(f"/v1/faces/{face['id']}", headers=AUTH).json() == face
    track = client.get("/v1/tracks", headers=AUTH, params={"limit": 1}).json()["items"][0]
    assert client.get(f"/v1/tracks/{track['id']}", headers=AUTH).json() == track
    gone = client.get("/v1/faces/999999", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["detail"].startswith("no face 999999")
    assert client.get("/v1/tracks/999999", headers=AUTH).status_code == 404
    assert client.get(f"/v1/faces/{face['id']}").status_code == 401  # the token, as every other route


def test_the_live_view_waits_out_a_database_outage(served, monkeypatch):
    """A review: the MJPEG route read the store without the service's error handling, so a
    database outage in the middle cut the viewer's stream without a word."""
    client, store = served
    source = next(s for s in client.get("/v1/sources", headers=AUTH).json() if s["name"] == "cam-a")
    snapshot, calls = store.snapshot, []

    def flaky(source_id):
        calls.append(source_id)
        if len(calls) in (2, 3):
            raise ConnectionError("the database does not answer")
        return snapshot(source_id)

    monkeypatch.setattr(store, "snapshot", flaky)
    monkeypatch.setattr(store, "source_running", lambda source_id: len(calls) < 5)
    live = client.get(f"/v1/sources/{source['id']}/live.mjpeg", headers=AUTH, params={"seconds": 8})
    assert live.status_code == 200 and live.content.count(b"--frame") == 1 and len(calls) >= 4


def test_the_live_view_ends_on_time_while_the_database_does_not_answer(served, monkeypatch):
    """A live view's poll of the store had no deadline: a database that stopped answering (frozen,
    locked) held the viewer past its `seconds` and past the server's stop. The poll now waits
    read_wait at most, then the view waits out the outage as above and ends on time."""
    client, store = served
    source = next(s for s in client.get("/v1/sources", headers=AUTH).json() if s["name"] == "cam-a")
    monkeypatch.setattr(client.app.state.service, "read_wait", 0.3)
    gate, snapshot, calls = threading.Event(), store.snapshot, []

    def frozen(source_id):  # the route's first read (a 404 for an unknown source) answers; then none does
        calls.append(source_id)
        if len(calls) > 1:
            gate.wait(10)
        return snapshot(source_id)

    monkeypatch.setattr(store, "snapshot", frozen)
    t0 = time.monotonic()
    try:
        live = client.get(f"/v1/sources/{source['id']}/live.mjpeg", headers=AUTH, params={"seconds": 1.5})
    finally:
        gate.set()
    assert live.status_code == 200 and b"--frame" not in live.content
    assert time.monotonic() - t0 < 5  # (was: 10 s, until the read answered)


def test_upload_gives_the_json_of_analyze_and_stores_it(served, capsys):
    from facemtl.cli import main

    client, _ = served
    r = client.post("/v1/analyze", headers=AUTH, params={"annotate": True, "source": "kiosk"},
                    files={"file": ("astro.jpg", PHOTO.read_bytes(), "image/jpeg")})
    assert r.status_code == 200 and r.headers["x-facemtl-stored"] == "yes"
    body = r.json()
    annotated = body.pop("annotated")
    assert main(["analyze", str(PHOTO), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    line["file"] = "astro.jpg"
    assert body == line and len(body["faces"]) == 1
    head, data = annotated.split(",", 1)
    assert head == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (body["width"], body["height"])
    stored = client.get("/v1/faces", headers=AUTH, params={"source": "kiosk"}).json()["items"]
    assert len(stored) == 1 and stored[0]["file"] == "astro.jpg" and stored[0]["box"] == body["faces"][0]["box"]
    assert {k: stored[0][k] for k in ("age", "gender", "race_probabilities")} == \
        {k: body["faces"][0][k] for k in ("age", "gender", "race_probabilities")}
    plain = client.post("/v1/analyze", headers=AUTH, files={"file": ("b.png", PHOTO.read_bytes(), "image/png")}).json()
    assert "annotated" not in plain and plain["faces"] == body["faces"]


def test_uploads_too_large_or_not_images(served, predictor):
    client, store = served
    big = b"\xff\xd8" + b"0" * (2 * 2**20 + 10)
    r = client.post("/v1/analyze", headers=AUTH, files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while reading
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.jpg\"\r\n\r\n"
        for _ in range(40):
            yield b"0" * 65536

    r = client.post("/v1/analyze", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                    content=chunks())
    assert r.status_code == 413
    # an EPS (Pillow would run Ghostscript on it, whatever its name) and a PSD are no photo formats
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    psd = b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 10, 10, 8, 3) + b"\x00" * 64
    for name, data in (("notes.txt", b"just some text"), ("fake.jpg", b"\xff\xd8\xff\xe0 broken jpeg"),
                       ("empty.png", b""), ("x.jpg", eps), ("x.eps", eps), ("x.psd", psd)):
        r = client.post("/v1/analyze", headers=AUTH, files={"file": (name, data, "image/jpeg")})
        code = 400 if not data else 415  # (empty: the client's mistake, not a kind of file; a user test)
        assert r.status_code == code and r.json()["detail"].startswith("the uploaded file is"), r.text
        if name.startswith("x."):  # named as the format it is, from the upload's bytes too (a review)
            assert f"the {'PSD' if name == 'x.psd' else 'EPS'} format" in r.json()["detail"], r.text
    r = client.post("/v1/analyze", headers=AUTH)  # no file field: one sentence, FastAPI's list under "errors"
    assert r.status_code == 422 and r.json()["detail"] == "form field 'file': field required; send the photo as " \
        "multipart/form-data in the field 'file' (curl -F file=@photo.jpg)", r.text
    assert r.json()["errors"][0]["loc"] == ["body", "file"]
    two = [("file", ("a.jpg", PHOTO.read_bytes(), "image/jpeg")), ("file", ("b.jpg", PHOTO.read_bytes(), "image/jpeg"))]
    before = store.counts()["faces"]
    r = client.post("/v1/analyze", headers=AUTH, files=two)  # FastAPI alone would analyse b.jpg and say nothing
    assert r.status_code == 422 and r.json()["detail"] == "the upload holds 2 'file' fields; send one photo per " \
        "request", r.text
    assert store.counts()["faces"] == before
    r = client.get("/v1/faces", headers=AUTH, params={"limit": 100000})
    assert r.status_code == 422 and r.json()["detail"].startswith("query parameter 'limit': input should be"), r.text
    # an image, but over the pixel limit: 413 saying so, not 415 "not an image" (a PNG header is enough)
    ihdr = struct.pack(">IIBBBBB", 13000, 12000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n"
    for kind, body in ((b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\0" * 16))):
        png += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    r = client.post("/v1/analyze", headers=AUTH, files={"file": ("huge.png", png, "image/png")})
    assert r.status_code == 413 and "too large to analyse" in r.json()["detail"] and "pixel limit" in r.text, r.text
    before = store.counts()["faces"]
    assert store.counts()["faces"] == before
    with TestClient(create_app(store, None, token=TOKEN)) as readonly:
        r = readonly.post("/v1/analyze", headers=AUTH, files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")})
        assert r.status_code == 503 and "without a model" in r.json()["detail"]


INJECTIONS = ["' OR '1'='1", "1; DROP TABLE faces; --", "\") OR 1=1 --", "1 UNION SELECT * FROM sessions",
              "female' --", "%27%20OR%201=1", "1e309", "-1", "NaN", "9" * 40, "\x00", "💥", ""]


def test_injection_attempts_in_every_filter(served):
    client, store = served
    counts = store.counts()
    routes = {
        "/v1/faces": ["since", "until", "source", "session", "track", "limit", "cursor", "gender", "race", "age_min",
                      "age_max"],
        "/v1/tracks": ["since", "until", "source", "session", "closed", "limit", "cursor", "gender", "race", "age_min"],
        "/v1/stats": ["since", "until", "source", "session", "bucket", "of", "task"],
    }
    for path, params in routes.items():
        for param in params:
            for bad in INJECTIONS:
                r = client.get(path, headers=AUTH, params={param: bad})
                assert r.status_code in (200, 400, 422), (path, param, bad, r.status_code, r.text)
                assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower()
                if r.status_code == 200 and param == "source" and path != "/v1/stats":  # taken literally: no such source
                    assert r.json()["items"] == [], (path, param, bad)
    assert store.counts() == counts  # nothing dropped, nothing changed
    r = client.get("/v1/faces", headers=AUTH, params={"gendr": "female"})
    assert r.status_code == 400 and "gendr" in r.json()["detail"]
    r = client.get("/v1/faces", headers=AUTH, params={"age_min": 50, "age_max": 10})
    assert r.status_code == 400 and "above" in r.json()["detail"]


def test_unexpected_errors_never_reach_the_client(served, monkeypatch):
    client, _ = served
    service = client.app.state.service

    def boom(q):
        raise RuntimeError("secret detail at /srv/facemtl/db.py line 12")

    monkeypatch.setattr(service.store, "faces", boom)
    r = client.get("/v1/faces", headers=AUTH)
    assert r.status_code == 500 and r.json() == {"detail": "internal server error (the server log says more)"}


# -- schemathesis: a bounded property-based run against the served OpenAPI ---------------------------------


def test_schemathesis_finds_no_server_error_and_no_schema_break(tmp_path, predictor):
    """Every operation of the served /openapi.json, a few dozen generated requests each (valid and
    invalid ones), bounded and derandomised; no 5xx, and every response as the document says."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    url = f"sqlite:///{tmp_path / 'st.db'}"
    fill(url)
    store = Store(url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(store, predictor, token=TOKEN, max_upload=2**20),
                                            headers=AUTH)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: dict[str, set[int]] = {}
    for op in operations:
        cases = hs.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def check(case):
            response = case.call_and_validate(headers=AUTH, checks=checks)
            statuses.setdefault(op.label, set()).add(response.status_code)

        check()
    store.close()
    assert set(statuses) == {op.label for op in operations}
    assert any(code >= 400 for codes in statuses.values() for code in codes)  # invalid requests were made too
    assert 200 in statuses["GET /v1/faces"]


# -- the page in headless Chromium --------------------------------------------------------------------------


@contextlib.contextmanager
def running(app):
    """``app`` served by uvicorn on a free loopback port, in a thread; yields its base URL."""
    with uvicorn_in_thread(app) as (port, _):
        yield f"http://127.0.0.1:{port}"


def test_operator_page_end_to_end_in_chromium(tmp_path, predictor):
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url = f"sqlite:///{tmp_path / 'page.db'}"
    fill(url)
    store = Store(url)
    errors: list[str] = []
    with running(create_app(store, predictor, token=TOKEN)) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda req: errors.append("offsite " + req.url) if not req.url.startswith(
            (base, "data:", "blob:")) else None)
        page.goto(base + "/")
        page.wait_for_selector("#token-box:not([hidden])")  # it asks for the token
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("body[data-ready='1']")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 50")
        wait_for(page, "document.querySelectorAll('#tracks tbody tr').length > 0")
        # filter: women only, in every row
        page.check("input[name=gender][value=female]")
        page.click("#filters button[type=submit]")
        wait_for(page, "[...document.querySelectorAll('#faces td[data-task=gender]')]"
                               ".every(td => td.textContent.startsWith('female'))")
        genders = page.locator("#faces td[data-task=gender]").all_inner_texts()
        assert genders and all(g.startswith("female") for g in genders)
        # charts are drawn
        page.click("#tabs button[data-tab=charts]")
        page.wait_for_selector("#charts .chart[data-task=race] svg rect")
        # sources and the live view
        page.click("#tabs button[data-tab=sources]")
        page.wait_for_selector("#sources tbody tr")
        page.locator("#sources tbody tr", has_text="cam-a").locator("button").click()
        wait_for(page, "document.querySelector('#live-image').src.startsWith('blob:')")
        # upload a face photo: the annotated result, then the new row
        page.click("#tabs button[data-tab=upload]")
        page.set_input_files("#upload-file", str(PHOTO))
        page.click("#upload-form button[type=submit]")
        wait_for(page, "document.querySelector('#upload-image').src.startsWith('data:image/jpeg')",
                               timeout=60000)
        assert page.locator("#upload-faces tbody tr").count() == 1
        assert "1 face in astronaut.jpg" in page.inner_text("#upload-status")
        page.click("#tabs button[data-tab=results]")
        page.uncheck("input[name=gender][value=female]")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#faces tbody tr >> text=astronaut.jpg")
        browser.close()
    store.close()
    assert errors == []


def test_retention_setting_purges_when_the_server_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    sink = DbSink(url, source="old-cam", kind="stream", model_info=INFO)
    for it in stream(INFO, 10, source="old-cam", t0=time.time() - 30 * 86400):
        (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
    sink.close()
    fresh = DbSink(url, kind="analyze", model_info=INFO)
    for r in photos(INFO, 3):
        fresh.write(r)
    fresh.close()
    store = Store(url)
    assert store.counts()["faces"] == 26
    with TestClient(create_app(store, None, retention_days=7)):
        deadline = time.time() + 20
        while store.counts()["faces"] != 6 and time.time() < deadline:
            time.sleep(0.1)
    assert store.counts() == {"faces": 6, "tracks": 0, "sources": 2}
    store.close()


def free_port() -> int:
    """A loopback TCP port nothing listens on (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(db: Path, port: int, env: dict[str, str] | None = None):
    """``facemtl serve --no-model --db db`` as its own process, returned once /v1/health answers."""
    import os
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "facemtl.cli", "serve", "--no-model", "--db", str(db), "--port",
                             str(port), "--log-level", "warning"], env=dict(os.environ, **(env or {})),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200:
                return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"facemtl serve did not start: {proc.communicate()[1]}")
            time.sleep(0.1)


def test_facemtl_serve_runs_as_a_process(tmp_path):
    import signal

    import httpx

    db = tmp_path / "served.db"
    fresh = DbSink(str(db), kind="analyze", model_info=INFO)
    for r in photos(INFO, 3):
        fresh.write(r)
    fresh.close()
    port = free_port()
    # retention from the environment, as a unit file sets it (an operations test: it was ignored)
    proc = start_serve(db, port, {"FACEMTL_API_TOKEN": TOKEN, "FACEMTL_RETENTION_DAYS": "100000"})
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v1/faces").status_code == 401
        assert len(httpx.get(base + "/v1/faces", headers=AUTH).json()["items"]) == 6
        assert httpx.post(base + "/v1/analyze", headers=AUTH, files={"file": ("a.jpg", b"x")}).status_code == 503
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # the README's status for a command stopped by SIGINT
    assert "token on" in err and err.endswith("facemtl: server stopped (SIGINT)\n") and "Traceback" not in err
    # a short token is served, with a warning after the line naming the port (a security review:
    # FACEMTL_API_TOKEN=1 was taken silently)
    first, second = err.splitlines()[:2]
    assert first.startswith("facemtl: serving on http://127.0.0.1:") and "the API token is 15 characters" in second
    assert first.endswith("token on; retention 100000 days, purged hourly)")


def test_facemtl_serve_stops_gracefully_on_sigterm(tmp_path):
    """SIGTERM (systemd, docker stop, kill) stops the server as Ctrl-C does: it says so, closes the
    database and exits 143, instead of dying by the signal uvicorn raises again after its shutdown."""
    import signal

    db = tmp_path / "new.db"
    proc = start_serve(db, free_port())
    assert (tmp_path / "new.db-wal").exists()  # SQLite in WAL mode, connections open
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert err.endswith("facemtl: server stopped (SIGTERM)\n") and "Traceback" not in err
    assert not (tmp_path / "new.db-wal").exists()  # SQLite removes it when the last connection closes: store.close() ran
    with Store(str(db), create=False) as store:
        assert store.counts() == {"faces": 0, "tracks": 0, "sources": 0}


def test_serve_refuses_a_port_in_use_before_creating_the_database(tmp_path, capsys):
    from facemtl.cli import main

    db = tmp_path / "serve2.db"
    with socket.socket() as other:  # another server on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["serve", "--no-model", "--db", str(db), "--port", str(port)]) == 2
    assert capsys.readouterr().err == (f"facemtl: error: port {port} on 127.0.0.1 is in use (another server?); "
                                       "choose another with --port\n")
    assert not db.exists()
    assert main(["serve", "--no-model", "--db", str(db), "--port", "70000"]) == 2
    assert capsys.readouterr().err == "facemtl: error: --port must be 0 to 65535, not 70000\n"
    assert not db.exists()
    assert main(["serve", "--model", str(tmp_path / "nosuch.onnx"), "--db", str(db), "--port", "0"]) == 2
    assert "nosuch.onnx does not exist" in capsys.readouterr().err
    assert not db.exists()  # the model is loaded before the database is created
    # --runtime reaches the model's loading (a user test: serve had no --runtime, though analyze and stream have)
    shipped_onnx = Path(__file__).resolve().parents[1] / "src" / "facemtl" / "weights" / "utkface_lite0.onnx"
    assert main(["serve", "--model", str(shipped_onnx), "--runtime", "torch", "--db", str(db), "--port", "0"]) == 2
    assert "the torch runtime cannot read utkface_lite0.onnx" in capsys.readouterr().err and not db.exists()


def test_the_server_log_says_what_a_retention_purge_deleted(tmp_path, capsys):
    import logging

    from facemtl.clilog import log_to_stderr

    url = f"sqlite:///{tmp_path / 'old.db'}"
    sink = DbSink(url, source="old-cam", kind="stream", model_info=INFO)
    for it in stream(INFO, 5, source="old-cam", t0=time.time() - 30 * 86400):
        (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
    sink.close()
    store = Store(url)
    said = ""
    with log_to_stderr("info"), TestClient(create_app(store, None, retention_days=7)):
        deadline = time.time() + 20  # the purge runs in the server's thread: wait for its log line
        while "retention (7 days)" not in said and time.time() < deadline:
            time.sleep(0.1)
            said += capsys.readouterr().err
    assert store.counts()["faces"] == 0
    store.close()
    assert "facemtl: info: retention (7 days): deleted {'faces': 10" in said
    assert not logging.getLogger("facemtl").handlers  # removed when the server stops


def test_validation_messages_name_the_parameter_and_how_to_upload(served):
    client, _ = served
    r = client.get("/v1/faces", headers=AUTH, params={"gender": "Female"})
    assert r.status_code == 422 and r.json()["detail"].startswith("query parameter 'gender' (item 1): input should "
                                                                  "be 'male' or 'female'"), r.text
    r = client.post("/v1/analyze", headers=AUTH, data={"file": "hello"})  # text in the file field
    assert r.status_code == 422 and r.json()["detail"].startswith("form field 'file': must be a file, not text"), r.text
    r = client.post("/v1/analyze", headers={**AUTH, "Content-Type": "image/jpeg"}, content=PHOTO.read_bytes())
    assert r.status_code == 422 and r.json()["detail"] == (
        "form field 'file': field required; send the photo as multipart/form-data in the field 'file' "
        "(curl -F file=@photo.jpg)"), r.text
    r = client.get("/v1/faces/999999/thumbnail.jpg", headers=AUTH)
    assert r.status_code == 404 and r.json()["detail"].startswith("no thumbnail for face 999999: no such face"), r.text
    # a parameter of one value given twice read the last without a word (a user test); a class filter means either
    for route, params in (("/v1/faces", "source=a&source=b"), ("/v1/stats", "since=1&since=2"),
                          ("/v1/tracks", "limit=5&limit=500")):
        r = client.get(f"{route}?{params}", headers=AUTH)
        assert r.status_code == 400 and "is given 2 times; it takes one value" in r.json()["detail"], (route, r.text)
    assert client.get("/v1/faces?gender=male&gender=female", headers=AUTH).status_code == 200
    assert client.get("/v1/stats?task=age&task=gender", headers=AUTH).status_code == 200  # (a list; a review)


def test_a_model_with_other_tasks_gets_its_own_columns_filters_and_counts(tmp_path):
    """Nothing is age, gender and race: a model with a binary and a regression task is stored,
    filtered, counted and documented by what its tasks say."""
    specs = [{"type": "binary", "name": "glasses", "classes": ["no", "yes"]},
             {"type": "regression", "name": "smile", "min_value": 0, "max_value": 100}]
    info = model_info(specs, name="custom")
    url = f"sqlite:///{tmp_path / 'custom.db'}"
    sink = DbSink(url, kind="analyze", model_info=info)
    shots = list(photos(info, 20))
    for r in shots:
        sink.write(r)
    sink.close()
    store = Store(url)
    with TestClient(create_app(store, None)) as client:
        tasks = {t["name"]: t for t in client.get("/v1/tasks").json()}
        assert tasks == {"glasses": {"name": "glasses", "classes": ["no", "yes"], "levels": None, "filters": ["glasses"],
                                     "fields": ["glasses", "glasses_probability", "glasses_probabilities"],
                                     "groups": ["no", "yes"]},
                         "smile": {"name": "smile", "classes": None, "levels": None, "filters": ["smile_min", "smile_max"],
                                   "fields": ["smile"], "groups": ["0-25", "25-50", "50-75", "75+"]}}
        faces = client.get("/v1/faces", params={"limit": 500}).json()["items"]
        want = [f.to_dict() for r in reversed(shots) for f in reversed(r.faces)]
        assert len(faces) == len(want) == 32
        assert sorted(json.dumps({k: f[k] for k in w}, sort_keys=True) for f, w in zip(faces, want)) == \
            sorted(json.dumps(w, sort_keys=True) for w in want)
        yes = client.get("/v1/faces", params={"glasses": "yes", "smile_min": 20, "limit": 500}).json()["items"]
        assert yes and all(f["glasses"] == "yes" and f["smile"] >= 20 for f in yes)
        assert len(yes) == sum(1 for f in faces if f["glasses"] == "yes" and f["smile"] >= 20)
        assert client.get("/v1/faces", params={"gender": "female"}).status_code == 400  # no such task here
        stats = client.get("/v1/stats", params={"since": 0}).json()["tasks"]
        assert stats["glasses"]["groups"] == [g for g in ["no", "yes"] if g in stats["glasses"]["groups"]]
        assert set(stats["smile"]["groups"]) <= {"0-25", "25-50", "50-75", "75+"}  # its own range in four bands
        assert stats["smile"]["groups"] == [g for g in tasks["smile"]["groups"] if g in stats["smile"]["groups"]]
        assert sum(sum(b["counts"].values()) for b in stats["smile"]["buckets"]) == 32
        doc = client.get("/openapi.json").json()
        params = {p["name"] for p in doc["paths"]["/v1/faces"]["get"]["parameters"]}
        assert {"glasses", "smile_min", "smile_max"} <= params and "age_min" not in params
    store.close()


def test_a_server_started_on_an_empty_database_serves_the_tasks_written_later(tmp_path, monkeypatch):
    """A read-only dashboard started before its cameras: the tasks were read once at the start,
    so the first stream's faces showed no answers, filters and /v1/tasks stayed empty until a
    restart. The server now looks for new tasks (at most every TASKS_LOOK_EVERY seconds)."""
    from facemtl.server import app as app_module

    monkeypatch.setattr(app_module, "TASKS_LOOK_EVERY", 0.0)
    url = f"sqlite:///{tmp_path / 'late.db'}"
    store = Store(url)
    with TestClient(create_app(store, None)) as client:
        assert client.get("/v1/tasks").json() == [] and client.get("/v1/faces").json()["items"] == []
        assert client.get("/v1/faces", params={"gender": "female"}).status_code == 400
        sink = DbSink(url, source="cam", kind="stream", model_info=INFO)
        for it in stream(INFO, 10, source="cam"):
            (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
        sink.close()
        assert [t["name"] for t in client.get("/v1/tasks").json()] == ["age", "gender", "race"]
        faces = client.get("/v1/faces", params={"limit": 500}).json()["items"]
        assert faces and all({"age", "gender", "race"} <= set(f) for f in faces)
        women = client.get("/v1/faces", params={"gender": "female", "limit": 500})
        assert women.status_code == 200 and {f["gender"] for f in women.json()["items"]} <= {"female"}
        doc = client.get("/openapi.json").json()
        assert "age_min" in {p["name"] for p in doc["paths"]["/v1/faces"]["get"]["parameters"]}
    store.close()


def test_faces_stored_under_an_earlier_models_class_names_can_still_be_asked_for(tmp_path, monkeypatch, capsys):
    """A user test: a model trained again with 'others' for 'other' wrote to the same database,
    and the faces stored under 'other' could no longer be selected: ?ethnicity=other answered
    422 and `db export --where ethnicity=other` was refused, the newest model's classes only."""
    from facemtl.cli import main
    from facemtl.server import app as app_module

    monkeypatch.setattr(app_module, "TASKS_LOOK_EVERY", 0.0)
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    old = model_info([{"type": "nominal", "name": "ethnicity", "classes": ["a", "other"]}], name="old")
    new = model_info([{"type": "nominal", "name": "ethnicity", "classes": ["a", "others"]}], name="new")
    store_photos(url, old, 20)
    store = Store(url)
    with TestClient(create_app(store, None)) as client:
        stored = client.get("/v1/faces", params={"ethnicity": "other", "limit": 500}).json()["items"]
        assert stored and {f["ethnicity"] for f in stored} == {"other"}
        store_photos(url, new, 20, seed=1)  # the model trained again writes later
        (info,) = client.get("/v1/tasks").json()
        assert info["classes"] == ["a", "other", "others"]  # the newest model's first, then those stored
        again = client.get("/v1/faces", params={"ethnicity": "other", "limit": 500})
        assert again.status_code == 200 and [f["id"] for f in again.json()["items"]] == [f["id"] for f in stored]
        assert client.get("/v1/faces", params={"ethnicity": "others"}).json()["items"]
        assert client.get("/v1/faces", params={"ethnicity": "otters"}).status_code == 422  # a name none had
    store.close()
    out = tmp_path / "other.jsonl"
    assert main(["db", "export", "faces", "--db", url, "--where", "ethnicity=other", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(stored)


def test_stats_count_every_models_faces_in_the_bands_of_the_model_served(db_url):
    """Faces a model of ages 1..116 stored (0-19, 20-39, 40-59, 60+) and faces a CORAL-protocol
    model of ages 21..60 stored (20-39, 40+) were counted side by side, overlapping bands in one
    chart. Every face is counted in the served model's bands now, none lost; an earlier model's class
    answers of the name keep their classes (and /v1/faces answered 500 on them: a number was wanted)."""
    wide = model_info([{"type": "ordinal", "name": "age", "min_value": 1, "max_value": 116}], name="wide")
    coral = model_info([{"type": "ordinal", "name": "age", "min_value": 21, "max_value": 60}], name="coral")
    groups = model_info([{"type": "nominal", "name": "age", "classes": ["young", "old"]}], name="groups")
    for info, seed in ((groups, 2), (wide, 0), (coral, 1)):
        store_photos(db_url, info, 20, seed=seed)
    store = Store(db_url)
    with TestClient(create_app(store, None)) as client:  # (no model of its own: the newest stored, coral's)
        faces = client.get("/v1/faces", params={"limit": 500}).json()["items"]
        stats = client.get("/v1/stats", params={"since": 0}).json()["tasks"]["age"]
        assert stats["groups"][:2] == ["20-39", "40+"]
        counts: dict[str, int] = {}
        for b in stats["buckets"]:
            for g, n in b["counts"].items():
                counts[g] = counts.get(g, 0) + n
        numbers = [f["age"] for f in faces if not isinstance(f["age"], str)]
        want = {"20-39": sum(1 for a in numbers if a < 39.5), "40+": sum(1 for a in numbers if a >= 39.5),
                # (an earlier model's classes of the name keep their class: a review)
                **{c: sum(1 for f in faces if f["age"] == c) for c in ("young", "old")}}
        assert counts == {g: n for g, n in want.items() if n} and sum(counts.values()) == len(faces) == 96
        # a bound on the value takes numbers only (a review: ?age_max=1 gave the classes, by their index)
        low = client.get("/v1/faces", params={"age_max": 30, "limit": 500}).json()["items"]
        assert low and all(not isinstance(f["age"], str) and f["age"] <= 30 for f in low)
        tracks = client.get("/v1/stats", params={"since": 0, "of": "tracks"}).json()["tasks"]
        assert tracks == {}  # (photos make no tracks)
    store.close()


# -- the operator page: what a user test found (Playwright + Debian's chromium, as above) ----------------


@pytest.fixture
def chromium():
    """Debian's chromium under Playwright, launched as the end-to-end test above launches it."""
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        yield browser
        browser.close()


def wait_for(page, expression: str, arg=None, timeout: float = 30000) -> None:
    """``page.wait_for_function``, polled from here: that one evaluates its string in the page,
    which the page's Content-Security-Policy refuses (no 'unsafe-eval'), as it should."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout / 1000:g} s for {expression}")
        page.wait_for_timeout(100)


def open_page(browser, base: str, token: str | None = TOKEN, ready: bool = True):
    """A new tab on the operator page, holding ``token`` as if entered: ``(page, errors, requests)``,
    the lists filling with its script errors and the URLs it asks for. Waits for the first
    tables unless ``ready`` is false."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # what the page's Content-Security-Policy refused (a style attribute, an inline script) is no page
    # error, only a console line: counted as one
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text and errors.append(m.text))
    page.on("request", lambda r: requests.append(r.url))
    if token is not None:
        page.add_init_script(f"sessionStorage.getItem('facemtl-token') === null && "
                             f"sessionStorage.setItem('facemtl-token', {json.dumps(token)})")
    page.goto(base + "/")
    if ready:
        page.wait_for_selector("body[data-ready='1']")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length > 0")
    return page, errors, requests


def page_db(tmp_path: Path) -> tuple[str, Store]:
    """The filled database of the page tests: its URL and a store on it."""
    url = f"sqlite:///{tmp_path / 'page.db'}"
    fill(url)
    return url, Store(url)


def test_page_upload_error_hides_the_last_result_and_stays(tmp_path, predictor, chromium):
    _, store = page_db(tmp_path)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo at all")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + b"0" * (2**20 + 100))
    with running(create_app(store, predictor, token=TOKEN, max_upload=2**20)) as base:
        page, errors, _ = open_page(chromium, base)
        page.click("#tabs button[data-tab=upload]")
        page.set_input_files("#upload-file", str(PHOTO))
        page.click("#upload-form button[type=submit]")
        wait_for(page, "document.querySelectorAll('#upload-faces tbody tr').length === 1", timeout=60000)
        for path, words in ((text, "the uploaded file is"), (big, "limit")):
            page.set_input_files("#upload-file", str(path))
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#message.error:not([hidden])")
            assert words in page.inner_text("#message")
            # the astronaut's result is gone, not shown under the new file's name
            assert page.locator("#upload-result").is_hidden()
            assert page.locator("#upload-faces tbody tr").count() == 0
            assert page.get_attribute("#upload-image", "src") is None
            assert page.inner_text("#upload-status") == f"{path.name}: not analysed"
            # a refresh of the timer (every 3 s) leaves it
            after_refreshes(page, refreshes(page))
            assert page.locator("#message").is_visible() and words in page.inner_text("#message")
        page.click("#tabs button[data-tab=results]")  # the next action ends it
        page.wait_for_selector("#message", state="hidden")
        assert errors == []
    store.close()


def test_page_upload_table_has_the_columns_of_the_model_that_answered(tmp_path, predictor, chromium):
    """A user test: a database that also holds another model's faces (a task "glasses") showed that
    task as an empty column of every upload's table, as if this model had not answered it."""
    url, store = page_db(tmp_path)
    other = model_info([{"type": "binary", "name": "glasses", "classes": ["no", "yes"]}], name="other")
    store_photos(url, other, 3)
    with running(create_app(store, predictor, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        wait_for(page, "[...document.querySelectorAll('#faces thead th')].some(th => th.textContent === 'glasses')")
        page.click("#tabs button[data-tab=upload]")
        page.set_input_files("#upload-file", str(PHOTO))
        page.click("#upload-form button[type=submit]")
        wait_for(page, "document.querySelectorAll('#upload-faces tbody tr').length === 1", timeout=60000)
        heads = page.locator("#upload-faces thead th").all_inner_texts()
        assert heads[1:4] == ["age", "gender", "race"] and "glasses" not in heads
        cells = page.locator("#upload-faces tbody td").all_inner_texts()
        assert len(cells) == len(heads) and all(c.strip() for c in cells)  # no empty column
        assert errors == []
    store.close()


def refreshes(page) -> int:
    """The page's timer refreshes so far (the page counts them in ``body[data-refreshes]``)."""
    return page.evaluate("Number(document.body.dataset.refreshes || 0)")


def after_refreshes(page, n: int, more: int = 1) -> None:
    """Wait until the timer has refreshed ``more`` times since it had refreshed ``n`` times: a fixed
    wait may see none on a busy machine."""
    wait_for(page, "n => Number(document.body.dataset.refreshes || 0) >= n", arg=n + more, timeout=20000)


def test_page_fetches_each_thumbnail_once(tmp_path, chromium):
    import httpx

    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, requests = open_page(chromium, base)
        first = httpx.get(base + "/v1/faces", headers=AUTH, params={"limit": 50}).json()["items"]
        shown = sum(1 for f in first if f["thumbnail"])
        assert shown
        wait_for(page, f"document.querySelectorAll('#faces tbody img.thumb').length === {shown}")
        # a refresh of the live updates (every 3 s) rebuilds the rows
        after_refreshes(page, refreshes(page))
        assert page.is_checked("#live") and page.locator("#faces tbody img.thumb").count() == shown
        thumbs = [u for u in requests if "/thumbnail.jpg" in u]
        assert len(thumbs) == len(set(thumbs)) == shown, (len(thumbs), shown)
        # the cache is bounded and revokes the object URLs it drops
        revoked, size = page.evaluate("""async () => {
            let n = 0;
            const revoke = URL.revokeObjectURL;
            URL.revokeObjectURL = (u) => { n += 1; revoke(u); };
            for (let i = 0; i < THUMBS; i++) thumbs.set(-1 - i, Promise.resolve(null));  // newer than the page's
            await thumbUrl(-1);  // a use trims the cache to its bound, the oldest first: the page's own
            await new Promise((done) => setTimeout(done, 0));
            URL.revokeObjectURL = revoke;
            return [n, thumbs.size];
        }""")
        assert (revoked, size) == (shown, 300)
        assert errors == []
    store.close()


def test_page_live_updates_resume_after_older_rows(tmp_path, chromium):
    url, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 50")
        page.click("#faces-more")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 100")
        after_refreshes(page, refreshes(page), 2)  # the timer keeps the older rows (and the tracks live)
        assert page.locator("#faces tbody tr").count() == 100 and page.is_visible("#faces-latest")
        page.click("#faces-latest")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 50")
        assert page.is_hidden("#faces-latest")
        page.click("#faces-more")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 100")
        page.click("#tabs button[data-tab=charts]")
        page.click("#tabs button[data-tab=results]")  # back on the first page: live again
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 50")
        sink = DbSink(url, kind="analyze", model_info=INFO)
        late = next(photos(INFO, 1))
        late.file = "late.jpg"
        sink.write(late)
        sink.close()
        page.wait_for_selector("#faces tbody tr:first-child >> text=late.jpg", timeout=8000)
        assert errors == []
    store.close()


def test_page_says_how_to_end_a_silent_sources_session(tmp_path, chromium):
    """A source whose writer is gone reads ``silent`` for ever: its badge says what it means and
    the command that ends its session (``facemtl db end``)."""
    import sqlalchemy as sa

    from facemtl.store.engine import create_db_engine
    from facemtl.store.models import Source

    url = f"sqlite:///{tmp_path / 'silent.db'}"
    store = Store(url)
    sink = DbSink(url, source="gate", kind="stream", model_info=INFO)
    for it in stream(INFO, 4, source="gate"):
        (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
    sink.flush()
    eng = create_db_engine(url)
    with eng.begin() as conn:  # killed a minute ago: its beat stopped
        conn.execute(sa.update(Source).where(Source.name == "gate").values(last_seen=time.time() - 60))
    eng.dispose()
    try:
        with running(create_app(store, None, token=TOKEN)) as base:
            page, errors, _ = open_page(chromium, base)
            page.click("#tabs button[data-tab=sources]")
            page.wait_for_selector("#sources tbody tr .state.silent")
            title = page.get_attribute("#sources tbody tr .state.silent", "title")
            assert "missed three heartbeats" in title and title.endswith("facemtl db end --source gate")
            assert errors == []
    finally:
        sink.close()
        store.close()


def test_page_learns_tasks_and_sources_written_after_it_opened(tmp_path, chromium, monkeypatch):
    """A page opened on an empty database (a server started before its cameras) kept no task
    columns or filters, and its source filter missed cameras started later, until a reload. The
    page looks again every few refreshes (lookAround, called here rather than waited for); a time's
    tooltip gives it with its offset, as db export's --since takes it."""
    from facemtl.server import app as app_module

    monkeypatch.setattr(app_module, "TASKS_LOOK_EVERY", 0.0)
    url = f"sqlite:///{tmp_path / 'late.db'}"
    store = Store(url)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base, ready=False)
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#task-filters fieldset").count() == 0
        assert page.inner_text("#faces-count") == "(none yet: nothing is stored)"  # not bare "(0 shown)"
        page.goto(base + "/?race=white&race=black&source=gate")  # filters asked for before their task is known
        page.wait_for_selector("body[data-ready='1']")
        sink = DbSink(url, source="gate", kind="stream", model_info=INFO)
        for it in stream(INFO, 10, source="gate"):
            (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
        sink.close()
        page.evaluate("lookAround()")
        assert page.locator("#task-filters fieldset").count() == 3
        heads = page.locator("#faces thead th").all_inner_texts()
        assert {"age", "gender", "race"} <= set(heads) and "time (local)" in heads
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length > 0")
        iso = page.get_attribute("#faces tbody tr:first-child td:nth-child(2)", "title")
        assert iso[10] == "T" and iso[-6] in "+-" and iso[-3] == ":"  # with its own offset, as db export takes it
        options = page.locator("#filters select[name=source] option").all_inner_texts()
        assert "gate" in options
        # the address's filters apply once their task is known: race white or black, source gate
        assert page.is_checked("#task-filters input[name=race][value=white]")
        assert page.evaluate("state.filters") == "source=gate&race=white&race=black"
        page.evaluate("lookAround()")  # nothing new: the applied filters stay
        assert page.evaluate("state.filters") == "source=gate&race=white&race=black"
        assert errors == []
    store.close()


def test_page_shows_a_tracks_faces_and_keeps_keyboard_focus(tmp_path, chromium):
    """An operator test: no way to see one track's faces (the API's filter takes the track's id,
    while the page showed only the stream's number, which repeats across cameras); and the
    Sources table, rebuilt every second, threw a keyboard user's focus off its "watch" button."""
    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        wait_for(page, "document.querySelectorAll('#tracks tbody tr').length > 0")
        first = page.locator("#tracks tbody tr").first
        source, number = first.locator("td").nth(0).inner_text(), first.locator("button.link").inner_text()
        track_id = int(first.get_attribute("data-track"))
        first.locator("button.link").click()
        page.wait_for_selector("#track-filter:not([hidden])")
        wait_for(page, "n => [...document.querySelectorAll('#faces tbody tr')].every(r => "
                               "r.cells[3].innerText === n)", arg=number)
        rows = page.locator("#faces tbody tr")
        assert rows.count() > 0
        assert set(rows.evaluate_all("rs => rs.map(r => r.cells[2].innerText)")) == {source}
        assert f"id {track_id}" in page.inner_text("#track-filter")
        page.click("#track-filter-clear")
        page.wait_for_selector("#track-filter", state="hidden")
        # the button pressed hides itself: focus goes to the table's heading, not to nowhere
        assert page.evaluate("document.activeElement.id") == "faces-heading"
        # an accessibility review: the Results tables, rebuilt every 3 s, threw focus off a track's button
        page.focus("#tracks tbody tr:nth-child(2) button.link")
        held = page.evaluate("document.activeElement.closest('tr').dataset.track")
        after_refreshes(page, refreshes(page), 2)
        assert page.evaluate("document.activeElement.closest('#tracks tr')?.dataset.track") == held
        page.click("#tabs button[data-tab=sources]")
        wait_for(page, "document.querySelectorAll('#sources tbody button').length > 0")
        page.focus("#sources tbody button")
        n = refreshes(page)
        after_refreshes(page, n, 2)
        assert page.evaluate("document.activeElement.closest('#sources') !== null && "
                             "document.activeElement.tagName === 'BUTTON'")
        assert errors == []
    store.close()


def test_page_shows_all_of_a_tracks_faces_whatever_the_filters(tmp_path, chromium):
    """A user test: a track's number showed "Recent faces (16 shown) of track 11 of dock (id 233)"
    for a track of 88 faces: the filters (time span, gender ...) cut its faces too, without a word.
    The README promises that track's faces: all of them, the filters staying on the other tables."""
    import httpx

    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        page.goto(base + "/?gender=female")
        page.wait_for_selector("body[data-ready='1']")
        wait_for(page, "document.querySelectorAll('#tracks tbody tr').length > 0")
        # a track the filter lists whose faces it would cut: some of them answer male
        for track_id in page.locator("#tracks tbody tr").evaluate_all("rs => rs.map(r => r.dataset.track)"):
            asked = {"track": track_id, "limit": 500}
            faces = httpx.get(f"{base}/v1/faces", params=asked, headers=AUTH).json()["items"]
            if any(f["gender"] == "male" for f in faces):
                break
        else:
            pytest.fail("no listed track has a face the filter leaves out")
        page.click(f"#tracks tbody tr[data-track='{track_id}'] button.link")
        page.wait_for_selector("#track-filter:not([hidden])")
        want = sorted(str(f["id"]) for f in faces)
        shown = "() => [...document.querySelectorAll('#faces tbody tr')].map(r => r.dataset.face).sort()"
        try:
            wait_for(page, f"want => JSON.stringify(({shown})()) === JSON.stringify(want)", arg=want, timeout=10000)
        except TimeoutError:
            pass
        assert page.evaluate(f"({shown})()") == want  # every face of the track, the male ones too
        assert f"({len(want)} shown)" in page.inner_text("#faces-heading")
        assert "whatever the filters" in page.inner_text("#track-filter")
        # the filters still apply to the tracks (and stay in the address)
        assert "gender=female" in page.evaluate("location.search")
        genders = page.locator("#tracks tbody tr").evaluate_all(
            "rs => rs.map(r => r.querySelector('[data-task=gender]').innerText)")
        assert genders and all(g.startswith("female") for g in genders)
        assert errors == []
    store.close()


def test_page_filters_live_in_the_address(tmp_path, chromium):
    """An operator test: a reload lost the applied filters, and a view could not be bookmarked
    or shared (/?source=gate&gender=female was ignored)."""
    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        page.goto(base + "/?source=cam-a&gender=female")
        page.wait_for_selector("body[data-ready='1']")
        assert page.eval_on_selector("#filters select[name=source]", "s => s.value") == "cam-a"
        assert page.is_checked("#task-filters input[name=gender][value=female]")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length > 0")
        cells = page.locator("#faces tbody tr").evaluate_all(
            "rs => rs.map(r => [r.cells[2].innerText, r.querySelector('[data-task=gender]').innerText])")
        assert cells and {c[0] for c in cells} == {"cam-a"} and all(c[1].startswith("female") for c in cells)
        page.check("#task-filters input[name=gender][value=male]")
        page.click("#filters button[type=submit]")
        wait_for(page, "location.search.includes('gender=male')")
        assert "source=cam-a" in page.evaluate("location.search")
        page.click("#filters button[type=reset]")
        wait_for(page, "location.search === ''")
        assert errors == []
    store.close()


def test_page_drops_an_answer_a_newer_request_overtook(tmp_path, chromium):
    """A timer refresh asked with the filters before Apply, answered after Apply's refusal, refilled
    the table under the error and cleared it: it is now dropped."""
    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        held = []
        page.route("**/v1/faces?*", lambda route: held.append(route) if "age_min" not in route.request.url
                   else route.continue_())
        deadline = time.time() + 20
        while not held and time.time() < deadline:  # the timer's next refresh asks, and is held
            page.wait_for_timeout(100)
        assert held
        page.fill("input[name=age_min]", "50")
        page.fill("input[name=age_max]", "10")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#message.error:not([hidden])")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length === 0")
        n = refreshes(page)
        for route in held:  # the old filters' answer now arrives, late
            route.continue_()
        after_refreshes(page, n)  # the held refresh has ended
        assert page.locator("#faces tbody tr").count() == 0 and "above" in page.inner_text("#message")
        assert errors == []
    store.close()


def test_page_timer_queries_the_filters_last_applied(tmp_path, chromium):
    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, requests = open_page(chromium, base)
        n = refreshes(page)
        before = len(requests)
        page.fill("input[name=session]", "0")  # typed, not applied (and the form's min=1 would refuse it)
        page.fill("input[name=age_min]", "5")
        # two refreshes: the first to end may have begun (and asked) before `before`
        after_refreshes(page, n, 2)
        queries = [u for u in requests[before:] if "/v1/faces?" in u]
        assert queries and not [q for q in queries if "session" in q or "age_min" in q], queries
        assert page.locator("#message").is_hidden()
        page.fill("input[name=session]", "")
        page.fill("input[name=age_min]", "50")
        page.fill("input[name=age_max]", "10")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#message.error:not([hidden])")
        assert "above" in page.inner_text("#message")
        # not the rows of the filters before under the error
        wait_for(page, "document.querySelectorAll('#faces tbody tr, #tracks tbody tr').length === 0")
        assert page.locator("#faces-more").is_hidden()
        # the timer asks with the same filters: still refused, still empty
        after_refreshes(page, refreshes(page))
        assert page.locator("#faces tbody tr").count() == 0 and "above" in page.inner_text("#message")
        assert errors == []
    store.close()


def test_page_says_what_is_wrong_with_the_token_or_the_server(tmp_path, chromium):
    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base, token="not-it", ready=False)
        page.wait_for_selector("#message:not([hidden])")
        assert page.inner_text("#message") == "wrong API token: enter the right one above"
        assert page.locator("#token-box").is_visible()
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#message", state="hidden")
        page.route("**/v1/**", lambda route: route.abort())  # as if the server had stopped
        page.wait_for_selector("#message:not([hidden])", timeout=5000)
        assert page.inner_text("#message") == "the server does not answer (stopped?); retrying"
        page.unroute("**/v1/**")  # back: the next refresh clears the message
        page.wait_for_selector("#message", state="hidden", timeout=5000)

        # gone while the page starts: it keeps trying, and starts when the server answers
        page.route("**/v1/**", lambda route: route.abort())
        page.reload()
        page.wait_for_selector("#message:not([hidden])")
        assert "does not answer" in page.inner_text("#message") and not page.get_attribute("body", "data-ready")
        page.unroute("**/v1/**")
        page.wait_for_selector("body[data-ready='1']", timeout=5000)
        page.wait_for_selector("#message", state="hidden")
        assert errors == []
    store.close()


def test_page_tabs_labels_and_charts(tmp_path, chromium):
    url, store = page_db(tmp_path)
    long_name = "camera-with-a-very-long-name-" + "x" * 150
    sink = DbSink(url, source=long_name, kind="stream", model_info=INFO)
    for it in stream(INFO, 3, source=long_name, t0=time.time() - 60):
        (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
    sink.close()
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        # tabs that say they are tabs, and which one is chosen
        assert page.locator("[role=tablist] [role=tab]").count() == 4
        assert page.get_attribute("#tabs [data-tab=results]", "aria-selected") == "true"
        page.click("#tabs [data-tab=charts]")
        assert page.get_attribute("#tabs [data-tab=charts]", "aria-selected") == "true"
        assert page.get_attribute("#tabs [data-tab=results]", "aria-selected") == "false"
        assert page.locator("section[role=tabpanel]").count() == 4
        # every control and column has a name
        assert page.get_by_label("photo", exact=True).evaluate("e => e.id") == "upload-file"
        heads = page.locator("#faces thead th, #tracks thead th").all_text_contents()
        assert heads and all(h.strip() for h in heads), heads
        # a long source name does not stretch the page
        assert page.evaluate("[...document.querySelectorAll('#filters select option')].some(o => o.value.length > 150)")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # a class keeps its colour when other classes are filtered out; the last time label fits
        page.wait_for_selector("#charts .chart[data-task=gender] .legend span")
        legend = "#charts .chart[data-task=gender] .legend span"
        colours = page.eval_on_selector_all(legend, "ss => Object.fromEntries(ss.map(s => [s.dataset.group, "
                                                    "s.style.getPropertyValue('--c')]))")
        assert set(colours) == {"male", "female"} and colours["male"] != colours["female"]
        # each group's total in the legend, the bucket in the heading (an accessibility review: colour alone)
        texts = page.eval_on_selector_all(legend, "ss => ss.map(s => s.textContent)")
        assert all(t.split(": ")[0] in colours and t.split(": ")[1].isdigit() for t in texts), texts
        assert " faces per 15 min" in page.inner_text("#charts .chart[data-task=gender] h3")
        fits = page.eval_on_selector_all("#charts svg", "svgs => svgs.map(s => { const t = [...s.querySelectorAll("
                                                       "'text')].pop().getBBox(); return t.x + t.width <= 800; })")
        assert fits and all(fits), fits
        page.check("input[name=gender][value=female]")
        page.click("#filters button[type=submit]")
        wait_for(page, f"[...document.querySelectorAll('{legend}')].map(s => s.dataset.group).join() === 'female'")
        assert page.eval_on_selector(legend, "s => s.style.getPropertyValue('--c')") == colours["female"]
        assert errors == []
    store.close()


# -- a security review: what the server refuses before the framework reads anything ------------------------


def test_an_upload_without_the_token_is_refused_before_its_body_is_read():
    """A security review: the body (19 MB each, 12 at once) was read and parsed before the 401, and
    the server grew by 800 MB answering requests without the token."""
    import asyncio

    from facemtl.server.limits import UploadLimit

    async def app(scope, receive, send):
        raise AssertionError("reached the application")

    for headers, detail in (([], "wants its API token"), ([(b"authorization", b"Bearer wrong")], "wrong API token"),
                            ([(b"authorization", b"Basic " + TOKEN.encode())], "wants its API token")):
        sent, reads = [], []

        async def receive():
            reads.append(1)
            return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

        async def send(msg):
            sent.append(msg)

        scope = {"type": "http", "path": "/v1/analyze", "method": "POST",
                 "headers": [(b"content-length", b"19000000"), *headers]}
        asyncio.run(UploadLimit(app, 20 * 2**20, ("/v1/analyze",), token=TOKEN)(scope, receive, send))
        assert not reads and sent[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in sent[0]["headers"]
        assert detail in json.loads(sent[1]["body"])["detail"]


def test_the_api_document_wants_the_token(served):
    """It names every task and class a writer recorded, which /v1/tasks serves only with the token."""
    client, _ = served
    assert client.get("/openapi.json").status_code == 401
    assert "/v1/faces" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_every_answer_carries_the_security_headers(served):
    client, _ = served
    page = client.get("/")
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "blob:" in policy
    assert page.headers["cache-control"] == "no-cache"  # the page's own, kept
    faces = client.get("/v1/faces", headers=AUTH)
    assert faces.headers["cache-control"] == "no-store" and faces.headers["x-content-type-options"] == "nosniff"
    assert client.get("/v1/faces").headers["cache-control"] == "no-store"  # a 401 too


def test_an_unexpected_error_carries_the_security_headers_too(served, monkeypatch):
    """A review: a 500 is answered by the outermost layer, outside the headers' middleware."""
    client, _ = served

    def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.service, "sources", broken)
    r = client.get("/v1/sources", headers=AUTH)
    assert r.status_code == 500 and r.json()["detail"].startswith("internal server error")
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_a_server_without_a_token_answers_this_machine_only(tmp_path):
    """A security review: without a token (loopback only) any Host was answered, so a web page could
    read every face through a DNS name re-pointed at 127.0.0.1 (DNS rebinding), and any page the
    operator visited could POST a photo (a form upload needs no CORS preflight) and store faces."""
    url = f"sqlite:///{tmp_path / 'local.db'}"
    store = Store(url)
    app = create_app(store, None, local_names=["127.0.0.1", "myhost"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/v1/faces").status_code == 200
        for host in ("localhost:8000", "127.0.0.2", "[::1]:8000", "myhost:8000", "MyHost"):
            assert client.get("/v1/faces", headers={"Host": host}).status_code == 200, host
        for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example"):
            r = client.get("/v1/faces", headers={"Host": host})
            assert r.status_code == 400 and "this machine only" in r.json()["detail"], host
        photo = {"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")}
        for origin in ("http://attacker.example", "null", "http://localhost.attacker.example:8000",
                       "http://127.0.0.1:3000", "http://localhost:8000"):  # another port is another origin (a review)
            r = client.post("/v1/analyze", headers={"Origin": origin}, files=photo)
            assert r.status_code == 403 and "refused" in r.json()["detail"], origin
        r = client.post("/v1/analyze", headers={"Origin": "http://127.0.0.1:8000"}, files=photo)
        assert r.status_code not in (400, 403)  # past the guard (this server has no model: the service answers)
        assert client.get("/v1/faces", headers={"Origin": "http://attacker.example"}).status_code == 200  # reads: CORS
    store.close()
    with_token = create_app(None, None, token=TOKEN, local_names=["127.0.0.1"])  # a token: any name (a proxy's)
    with TestClient(with_token) as client:
        assert client.get("/v1/version", headers={**AUTH, "Host": "faces.example.org"}).status_code == 200


def test_a_live_view_ends_when_its_source_falls_silent_or_the_server_stops(served):
    """A security review: an open live view held the server's stop for up to its `seconds` (3600 at
    most), and a source whose writer was killed (silent, still `running` in the table) kept its
    viewers polling the database for all that time."""
    client, store = served
    source = next(s for s in client.get("/v1/sources", headers=AUTH).json() if s["name"] == "cam-a")
    with store.engine.begin() as conn:
        import sqlalchemy as sa

        from facemtl.store.models import Source

        conn.execute(sa.update(Source).where(Source.id == source["id"]).values(
            state="running", last_seen=time.time(), heartbeat=2.0))
    assert store.source_running(source["id"])
    assert not store.source_running(source["id"], now=time.time() + 7)  # three heartbeats missed: silent

    def beat(last_seen: float, heartbeat: float) -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.update(Source).where(Source.id == source["id"]).values(
                state="running", last_seen=last_seen, heartbeat=heartbeat))

    beat(time.time() - 10, 2.0)  # a writer killed 10 s ago: still "running" in its row, silent by its heartbeat
    t0 = time.monotonic()
    live = client.get(f"/v1/sources/{source['id']}/live.mjpeg", headers=AUTH, params={"seconds": 30})
    assert live.status_code == 200 and live.content.count(b"--frame") == 1 and time.monotonic() - t0 < 5
    beat(time.time(), 600.0)  # running for the next half hour: the view stays open until the stop
    threading.Timer(1.0, client.app.state.service.stopping.set).start()
    t0 = time.monotonic()
    live = client.get(f"/v1/sources/{source['id']}/live.mjpeg", headers=AUTH, params={"seconds": 30})
    assert live.status_code == 200 and 0.9 < time.monotonic() - t0 < 6


def test_a_damaged_database_is_a_503_saying_why_and_the_page_marks_its_rows_stale(tmp_path, chromium):
    """An accessibility review: a damaged database file read "internal server error" (its reason in
    the server log only), the rows left from the last refresh looked current, and the message was
    read out again on every refresh."""
    url, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        wait_for(page, "document.querySelectorAll('#tracks tbody tr').length > 0")
        page.evaluate("""() => { window.changes = 0;
            new MutationObserver(() => window.changes++).observe(document.querySelector('#message'),
              { childList: true, characterData: true, subtree: true, attributes: true }); }""")
        import sqlalchemy as sa

        real = store.tracks

        def damaged(*a, **kw):
            raise sa.exc.DatabaseError("SELECT ...", {}, Exception("database disk image is malformed"))

        store.tracks = damaged
        try:
            import httpx

            r = httpx.get(base + "/v1/tracks", headers=AUTH)
            assert r.status_code == 503
            assert r.json()["detail"] == "the results database failed: database disk image is malformed (the " \
                "server log says more)"
            wait_for(page, "document.querySelector('#tracks-count').textContent.startsWith('(not updated since')")
            assert page.evaluate("document.querySelector('#tracks').closest('.scroll').classList.contains('stale')")
            # the faces table answered: current, not greyed (a review: every table was marked)
            assert not page.evaluate("document.querySelector('#faces').closest('.scroll').classList.contains('stale')")
            assert "database disk image is malformed" in page.inner_text("#message")
            seen = page.evaluate("window.changes")
            after_refreshes(page, refreshes(page), 2)
            assert page.evaluate("window.changes") == seen  # the same message is not set (read out) again
        finally:
            store.tracks = real
        wait_for(page, "!document.querySelector('#tracks').closest('.scroll').classList.contains('stale')")
        wait_for(page, "document.querySelector('#message').hidden")  # once both tables answered (a review: flaky)
        assert not page.evaluate("document.querySelector('#faces').closest('.scroll').classList.contains('stale')")
        assert errors == []
    store.close()


def test_page_offers_a_named_scales_levels_to_filter_by(tmp_path, chromium):
    """The Left list: the page showed number boxes for a named scale (ranks to be looked up in the
    recipe); it offers its levels now, an address with a rank or another case selects the level,
    and the table lists the faces the API gives for those names."""
    levels = ["none", "mild", "moderate", "severe"]
    info = model_info([{"type": "ordinal", "name": "severity", "levels": levels},
                       {"type": "nominal", "name": "gender", "classes": ["male", "female"]}], name="scale")
    url = f"sqlite:///{tmp_path / 'levels.db'}"
    store_photos(url, info, 20)
    store = Store(url)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base)
        options = page.eval_on_selector("select[name=severity_min]", "s => [...s.options].map(o => o.value)")
        assert options == ["", *levels] and page.locator("input[name=severity_min]").count() == 0
        page.select_option("select[name=severity_min]", "moderate")
        page.click("#filters button[type=submit]")
        wait_for(page, "location.search.includes('severity_min=moderate')")
        wait_for(page, "[...document.querySelectorAll('#faces tbody tr')].every(r => "
                       "/moderate|severe/.test(r.querySelector('[data-task=severity]').innerText))")
        shown = page.locator("#faces tbody tr").count()
        with TestClient(create_app(store, None)) as client:
            want = client.get("/v1/faces", params={"severity_min": "moderate", "limit": 500}).json()["items"]
        assert shown == min(len(want), 50) and want
        for typed in ("2", "MODERATE"):  # an address written by hand: a rank, another case
            page.goto(base + f"/?severity_min={typed}")
            page.wait_for_selector("body[data-ready='1']")
            assert page.eval_on_selector("select[name=severity_min]", "s => s.value") == "moderate"
        assert errors == []
    store.close()


def test_a_request_stuck_in_the_database_does_not_keep_a_stopped_server_running(monkeypatch, capsys):
    """A user test: with PostgreSQL frozen, serve said "server stopped (SIGTERM)" and never exited
    (its request's worker thread waited in the driver, and Python waits for it at exit) until
    SIGKILL. Checked by hand: SIGTERM with a request stuck on a stopped (SIGSTOP) PostgreSQL, exit
    after 23 s (uvicorn's 20 s cut-off and 2 s for the workers), status 143."""
    import threading

    from facemtl import cli_serve

    release = threading.Event()
    stuck = threading.Thread(target=release.wait, args=(30,), name="AnyIO worker thread")
    idle = threading.Thread(target=lambda: None, name="AnyIO worker thread")
    stuck.start()
    idle.start()
    exits = []
    monkeypatch.setattr(cli_serve.os, "_exit", exits.append)
    try:
        cli_serve._leave_stuck_requests(143)
    finally:
        release.set()
    assert exits == [143] and "1 request(s) still waiting for the database left behind" in capsys.readouterr().err
    cli_serve._leave_stuck_requests(143)  # none stuck: it returns
    assert exits == [143]


def test_a_time_the_page_cannot_read_in_its_address_is_said(tmp_path, chromium):
    """A user test: ``/?since=garbage&gender=female`` showed every time without a word."""
    _, store = page_db(tmp_path)
    with running(create_app(store, None, token=TOKEN)) as base:
        page, errors, _ = open_page(chromium, base, ready=False)
        page.goto(base + "/?since=garbage&gender=female")
        page.wait_for_selector("body[data-ready='1']")
        wait_for(page, "document.querySelectorAll('#faces tbody tr').length > 0")
        after_refreshes(page, refreshes(page), 1)  # a sticky message: a refresh that works keeps it
        assert "since=garbage is no time" in page.inner_text("#message")
        assert errors == []


def test_serve_takes_the_accurate_variant(tmp_path):
    """``serve --accurate`` (a user test: only analyze took it): an upload answers as
    ``analyze --accurate --json`` does, and /v1/version names the accurate variant."""
    pytest.importorskip("dlib")
    from facemtl.cli import main
    from facemtl.inference.fusion import default_fusion_path, load_accurate

    net = str(default_fusion_path().parent / "utkface_lite0.onnx")
    store = Store(str(tmp_path / "r.db"))
    try:
        with TestClient(create_app(store, load_accurate(True, net), token=TOKEN)) as client:
            body = client.post("/v1/analyze", headers=AUTH, files={"file": ("astro.jpg", PHOTO.read_bytes(),
                                                                           "image/jpeg")}).json()
            model = client.get("/v1/version", headers=AUTH).json()["model"]
    finally:
        store.close()
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["analyze", str(PHOTO), "--json", "--accurate", "--checkpoint", net]) == 0
    line = json.loads(out.getvalue().splitlines()[0])
    line["file"] = "astro.jpg"
    assert body == line and model["name"].endswith("+fusion")
    with pytest.raises(ValueError, match="leave out --no-model"):
        from facemtl.cli_serve import serve

        serve(port=0, no_model=True, fusion=True)
