"""Why `onnx-int8` corrects its biases itself: NNCF's ONNX backend against ONNX Runtime's quantizer.

    python scripts/probe_nncf_onnx_int8.py src/facemtl/weights/utkface_lite0.pt \\
        --data ../shared/data/utkface --out docs/results/int8_nncf_onnx_probe.json

Quantizes the checkpoint with ``nncf.quantize`` on the ONNX model (the same 300 calibration
faces, the same layers left in FP32, full bias correction), runs the export's own check on
1,000 validation faces, then times that file and ``facemtl export --format onnx-int8``'s
(ONNX Runtime's QDQ quantizer plus :mod:`facemtl.export.bias_correction`) in ONNX Runtime,
network alone, batches of 32, interleaved rounds, one and two threads. Writes the QDQ graph's
node counts beside the timings.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", help="the data folder (default: the one the model records)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out")
    a = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import facemtl.export.onnx as fo
    from facemtl.export import export_model

    def export_nncf(source, out, faces, fmt, opset=18, **_):
        """``export_onnx_int8``'s signature; ``faces.calibration`` already holds ``--calibration`` faces."""
        with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:
            import nncf

            fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
            fo.to_onnx(source, str(fp32), opset)
            quant_pre_process(str(fp32), str(pre))
            images = faces.calibration
            data = nncf.Dataset([{"images": images[i : i + 1]} for i in range(len(images))])
            q = nncf.quantize(onnx.load(str(pre)), data, subset_size=len(images), fast_bias_correction=False,
                              ignored_scope=nncf.IgnoredScope(names=fo.keep_float(pre), validate=False))
            fo.put_metadata(q, fo.exported_info(source.info, fmt, opset=opset, calibration_faces=len(images)))
            onnx.save(q, str(out))

    with tempfile.TemporaryDirectory() as tmp:
        files = {"onnx-int8 (ORT quantizer + bias correction)": Path(tmp) / "ort.onnx",
                 "NNCF ONNX backend (full bias correction)": Path(tmp) / "nncf.onnx"}
        report: dict = {"checkpoint": a.checkpoint, "machine": f"{platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cores", "onnxruntime": ort.__version__,
                        "load_average_before": list(os.getloadavg()), "files": {}}
        ours = export_model(a.checkpoint, "onnx-int8", list(files.values())[0], a.data, force=True, check_faces=1000)
        # export_model looks its exporter up by name when it runs (FORMATS' "module:function"), so
        # swapping the module's function sends the same export, check included, through NNCF
        original = fo.export_onnx_int8
        fo.export_onnx_int8 = export_nncf
        try:
            theirs = export_model(a.checkpoint, "onnx-int8", list(files.values())[1], a.data, force=True,
                                  check_faces=1000)
        finally:
            fo.export_onnx_int8 = original
        x = np.random.default_rng(0).integers(0, 256, (32, 3, 112, 112), dtype=np.uint8)
        for threads in (1, 2):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sessions = {k: ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])
                        for k, f in files.items()}
            for s in sessions.values():
                s.run(None, {"images": x})
            times: dict[str, list[float]] = {k: [] for k in files}
            for r in range(a.rounds):
                order = list(sessions.items())
                order = order[r % len(order):] + order[: r % len(order)]
                for k, s in order:
                    t = time.perf_counter()
                    s.run(None, {"images": x})
                    times[k].append(time.perf_counter() - t)
            for k in files:
                report["files"].setdefault(k, {})[f"ms_per_32_faces_{threads}_threads"] = 1000 * float(np.median(times[k]))
        for (k, f), rep in zip(files.items(), (ours, theirs)):
            nodes = collections.Counter(n.op_type for n in onnx.load(str(f)).graph.node)
            report["files"][k].update({"check_on_1000_validation_faces": rep["accuracy"], "nodes": dict(nodes)})
    keys = list(report["files"])
    for threads in (1, 2):
        col = f"ms_per_32_faces_{threads}_threads"
        report[f"nncf_over_ours_{threads}_threads"] = report["files"][keys[1]][col] / report["files"][keys[0]][col]
    for k, r in report["files"].items():
        acc = {t: round(v["lost"], 4) for t, v in r["check_on_1000_validation_faces"].items()}
        print(f"{k}: {r['ms_per_32_faces_1_threads']:.1f} ms (1 thread), {r['ms_per_32_faces_2_threads']:.1f} ms "
              f"(2 threads) per 32 faces; lost on validation: {acc}")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
