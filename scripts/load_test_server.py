"""Bounded load test of ``facemtl serve`` on loopback: requests/s and latency percentiles of
``GET /v1/faces`` (several filters) over a database of N stored faces, and of
``POST /v1/analyze`` against analysing the same photo in-process.

    python scripts/load_test_server.py                       # SQLite, 100,000 faces
    python scripts/load_test_server.py --db postgresql://postgres@127.0.0.1:5432/facemtl_load

The database is filled with synthetic stream results (tests/fakes.py: answers decoded by
the real tasks from random outputs; two people per frame, tracks, the frame's own answers
beside smoothed ones), then the server is started as its own process (``facemtl serve``),
and every request goes through a real socket. In-process and HTTP analyses of the photo
alternate (ABAB), so a change of load on the machine hits both alike; the overhead is
their ratio of medians. Results go to ``--out`` as JSON and to stdout as a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakes import model_info, stream  # noqa: E402

from facemtl.inference.results import TrackResult  # noqa: E402
from facemtl.sinks.db import DbSink  # noqa: E402
from facemtl.store import Store  # noqa: E402

TOKEN = "load-test-token"


def fill(url: str, faces: int, cameras: int = 4) -> float:
    """Write ``faces`` synthetic stream faces from ``cameras`` sources; returns seconds taken."""
    info = model_info()
    t = time.perf_counter()
    per_cam = faces // cameras
    for k in range(cameras):
        sink = DbSink(url, source=f"cam{k}", kind="stream", model_info=info, batch_faces=2000, max_wait=1e9,
                      heartbeat=1e9, snapshot_every=1e9)
        t0 = time.time() - 7 * 86400 + k * 3600  # a week of history, cameras interleaved in time
        fps = (per_cam // 2) / (6 * 86400)  # two faces a frame, spread over six days
        for it in stream(info, per_cam // 2, seed=k, source=f"cam{k}", t0=t0, fps=fps, people=2, track_len=40):
            (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
        sink.close()
    return time.perf_counter() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "mean_ms": round(float(a.mean()), 2), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2), "max_ms": round(float(a.max()), 2)}


def get_scenarios(client: httpx.Client) -> dict[str, dict]:
    first = client.get("/v1/faces", params={"limit": 50}).json()
    mid_time = client.get("/v1/faces", params={"limit": 1, "source": "cam0"}).json()["items"][0]["time"] - 86400
    return {
        "latest 50": {},
        "gender=female": {"gender": "female"},
        "race=asian, age 20-39": {"race": "asian", "age_min": 20, "age_max": 39},
        "age >= 90 (rare)": {"age_min": 90},
        "race=others, gender=female, age >= 80 (rarer)": {"race": "others", "gender": "female", "age_min": 80},
        "source=cam2, male": {"source": "cam2", "gender": "male"},
        "one hour a day ago, any": {"since": mid_time - 3600, "until": mid_time},
        "next page (cursor)": {"cursor": first["next"]},
        "limit 500": {"limit": 500},
    }


def measure_gets(client: httpx.Client, repeats: int) -> dict[str, dict]:
    out = {}
    for name, params in get_scenarios(client).items():
        for _ in range(3):  # warm-up
            client.get("/v1/faces", params=params).raise_for_status()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = client.get("/v1/faces", params=params)
            times.append(time.perf_counter() - t)
            r.raise_for_status()
        out[name] = dict(percentiles(times), items=len(r.json()["items"]))
    return out


def measure_throughput(base: str, seconds: float, threads: int) -> dict[str, float]:
    """Requests/s of a mix of the GET scenarios from ``threads`` clients at once."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        mix = list(get_scenarios(c).values())
    done, lat, stop = [0], [], time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            i = k
            while time.perf_counter() < stop:
                t = time.perf_counter()
                c.get("/v1/faces", params=mix[i % len(mix)]).raise_for_status()
                with lock:
                    done[0] += 1
                    lat.append(time.perf_counter() - t)
                i += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return dict(percentiles(lat), threads=threads, requests_per_s=round(done[0] / (time.perf_counter() - t0), 1))


def measure_post(client: httpx.Client, photo: Path, repeats: int) -> dict:
    """HTTP POST /v1/analyze vs the same analysis in this process, alternating."""
    from facemtl.images import load_rgb
    from facemtl.inference import load_predictor
    from facemtl.inference.pipeline import Pipeline
    from facemtl.inference.results import ImageResult

    data = photo.read_bytes()
    pipeline = Pipeline(load_predictor(device="cpu"), workers=1, keep_images=True)
    # In a worker thread, as the server runs it: on a CPU shared with other work, torch's OpenMP
    # threads called from the main thread were measured 5-8x slower than from a worker thread
    # (spinning against other processes), which would flatter the server.
    thread = ThreadPoolExecutor(1)

    def analyse() -> dict:
        rgb = load_rgb(io.BytesIO(data))
        return next(pipeline.run([(ImageResult(file=photo.name), rgb)])).to_dict()

    def in_process() -> dict:
        return thread.submit(analyse).result()

    def over_http() -> dict:
        r = client.post("/v1/analyze", files={"file": (photo.name, data, "image/jpeg")})
        r.raise_for_status()
        return r.json()

    for _ in range(3):
        assert in_process()["faces"] == over_http()["faces"]  # the same answers either way
    local, remote = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        in_process()
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        over_http()
        remote.append(time.perf_counter() - t)
    pipeline.close()
    thread.shutdown()
    overhead = statistics.median(remote) / statistics.median(local) - 1
    return {"in_process": percentiles(local), "http": percentiles(remote),
            "overhead_of_medians": round(overhead, 4),
            "http_requests_per_s_sequential": round(len(remote) / sum(remote), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="database URL (default: a new SQLite file in a temporary folder)")
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=100, help="requests per GET scenario")
    ap.add_argument("--posts", type=int, default=30, help="alternating in-process / HTTP analyses")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of the concurrent GET run")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--photo", default=str(REPO / "examples" / "astronaut.jpg"))
    ap.add_argument("--out", help="write the figures here as JSON")
    a = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    url = a.db or f"sqlite:///{tmp.name}/load.db"
    with Store(url) as store:
        have = store.counts()["faces"]
    fill_s = fill(url, a.faces - have) if have < a.faces else 0.0
    with Store(url) as store:
        counts = store.counts()
    print(f"database: {counts} (filled in {fill_s:.0f} s)", file=sys.stderr)

    port = free_port()
    env = dict(os.environ, FACEMTL_API_TOKEN=TOKEN)
    server = subprocess.Popen([sys.executable, "-m", "facemtl.cli", "serve", "--db", url, "--port", str(port),
                               "--log-level", "warning", "--device", "cpu"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            deadline = time.time() + 120
            while True:
                try:
                    if client.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            gets = measure_gets(client, a.repeats)
            post = measure_post(client, Path(a.photo), a.posts)
        concurrent = measure_throughput(base, a.seconds, a.threads)
    finally:
        server.terminate()
        server.wait(30)
    result = {"database": url.split("://")[0], "faces": counts["faces"], "tracks": counts["tracks"],
              "fill_seconds": round(fill_s, 1), "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
              "get_faces": gets, "get_faces_concurrent": concurrent, "post_analyze": post}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nGET /v1/faces over {counts['faces']:,} faces ({result['database']}), "
          f"{a.repeats} sequential requests each:")
    print("| filter | items | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|")
    for name, r in gets.items():
        print(f"| {name} | {r['items']} | {r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} |")
    print(f"\nconcurrent mix, {concurrent['threads']} clients: {concurrent['requests_per_s']} requests/s, "
          f"p95 {concurrent['p95_ms']} ms")
    p = post
    print(f"\nPOST /v1/analyze ({Path(a.photo).name}): median {p['http']['p50_ms']} ms over HTTP vs "
          f"{p['in_process']['p50_ms']} ms in-process: overhead {p['overhead_of_medians']:+.1%}; "
          f"p95 {p['http']['p95_ms']} ms; {p['http_requests_per_s_sequential']} requests/s one at a time")
    print(f"load average (1 min) at the end: {result['load_average_1m']:.2f} on {result['cpu_count']} cores")


if __name__ == "__main__":
    main()
