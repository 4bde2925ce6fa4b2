"""A writer process for the store's concurrency and crash tests: writes a synthetic stream
(tests/fakes.py) to a results database through DbSink, flushing only on full batches.

    python tests/db_writer.py URL SOURCE FRAMES SEED BATCH_FACES [SLEEP_S]
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import model_info, stream  # noqa: E402

from facemtl.inference.results import TrackResult  # noqa: E402
from facemtl.sinks.db import DbSink  # noqa: E402


def main() -> None:
    url, source, frames, seed, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    info = model_info()
    # flush on full batches only: no time-based flush, no heartbeat-only flush
    sink = DbSink(url, source=source, kind="stream", model_info=info, batch_faces=batch, max_wait=1e9,
                  heartbeat=1e9, snapshot_every=1e9)
    print(f"session {sink.session_id}", flush=True)
    for item in stream(info, frames, seed=seed, source=source, t0=1.7e9 + seed * 1000):
        if isinstance(item, TrackResult):
            sink.write_track(item)
        else:
            sink.write(item)
        if pause:
            time.sleep(pause)
    sink.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
