"""Reports of runs and experiments: HTML (self-contained), Markdown, PNG figures, JSON facts.

``facemtl report RUN_DIR_OR_EXPERIMENT_DIR`` reads only the logs training left
(see :mod:`facemtl.report.load`); see :mod:`facemtl.report.writer` for the sections.
Needs the ``report`` extra (matplotlib; captum for Grad-CAM).
"""

from .writer import write_report

__all__ = ["write_report"]
