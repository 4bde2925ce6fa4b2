"""The network alone, in one runtime: aligned faces/s at batch 1 and 32, one-face latency, peak memory.

Run as its own process per runtime (``python -m facemtl.benchmark.network``), so its
peak resident memory is its own and its threads meet no other runtime's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def peak_memory_mb() -> float:
    """This process's peak resident memory (``VmHWM``), in MiB (2**20 bytes; the name's "mb" kept, as
    in ``file_mb``, for the results filed under it). Not ``getrusage``'s ``ru_maxrss``, which
    Linux carries over from the parent across ``exec`` (it read the benchmark's own peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def measure(model: str, runtime: str | None, faces: np.ndarray, threads: int | None, seconds: float = 3.0) -> dict:
    """``faces``: ``uint8 (N, 3, S, S)`` real crops. Each rate is measured for about ``seconds``."""
    from ..inference import load_predictor

    t = time.perf_counter()
    pred = load_predictor(model, runtime, "cpu", batch_size=32, threads=threads)
    load_s = time.perf_counter() - t
    rt = pred.runtime

    def rate(batch: int) -> float:
        rt.run(faces[:batch])
        n, t0, i = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            x = faces[i : i + batch] if i + batch <= len(faces) else faces[:batch]
            rt.run(np.ascontiguousarray(x))
            n, i = n + batch, (i + batch) % len(faces)
        return n / (time.perf_counter() - t0)

    b32, b1 = rate(32), rate(1)
    lat = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(lat) < 50:
        x = faces[len(lat) % len(faces)][None]
        s = time.perf_counter()
        rt.run(x)
        lat.append(time.perf_counter() - s)
    files = [Path(model)] + ([Path(model).with_suffix(".bin")] if Path(model).suffix == ".xml" else [])
    return {"runtime": rt.name, "precision": rt.precision, "model": str(model),
            "faces_per_s_batch1": round(b1, 1), "faces_per_s_batch32": round(b32, 1),
            "latency_ms_median": round(1000 * float(np.median(lat)), 3),
            "latency_ms_p95": round(1000 * float(np.percentile(lat, 95)), 3),
            "peak_memory_mb": peak_memory_mb(),
            "file_mb": round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 2),
            "load_s": round(load_s, 2), "threads": threads}


def measure_process(model: str | Path, runtime: str | None, faces_file: str | Path, threads: int | None = None,
                    seconds: float = 3.0) -> dict:
    """:func:`measure` in a process of its own (``python -m facemtl.benchmark.network``), so that
    its peak memory and threads are its own; ``runtime`` ``None``: by the file's suffix.
    Raises ``RuntimeError`` with the process's last error line when it fails."""
    cmd = [sys.executable, "-m", "facemtl.benchmark.network", str(model), runtime or "", str(faces_file),
           str(threads or 0), str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(" ".join(out.stderr.strip().splitlines()[-1:]) or f"exit status {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    model, runtime, faces_file, threads, seconds = sys.argv[1:6]
    faces = np.load(faces_file)
    print(json.dumps(measure(model, runtime or None, faces, int(threads) or None, float(seconds))))


if __name__ == "__main__":
    main()
