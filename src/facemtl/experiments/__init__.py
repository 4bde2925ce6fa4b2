"""Experiment grids over the engine's variants (``facemtl experiment``)."""

from .grid import Experiment, Variant, config_hash, load_experiment, standard_variants
from .runner import run_experiment, summarise

__all__ = ["Experiment", "Variant", "config_hash", "load_experiment", "run_experiment", "standard_variants", "summarise"]
