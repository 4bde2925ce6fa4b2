"""Task types, pluggable by name through :data:`TASK_TYPES`."""

from .base import (
    TASK_TYPES,
    Ablation,
    MetricColumn,
    Task,
    adopt_level_names,
    answers_of,
    build_task,
    check_named_ranges,
    predictions_of,
)
from .classification import BinaryTask, NominalTask
from .feature import FeatureTask
from .numeric import NumericTask
from .ordinal import OrdinalTask
from .regression import RegressionTask
from .soft import SoftTargetTask, SoftThresholdTask

__all__ = ["TASK_TYPES", "Task", "adopt_level_names", "answers_of", "predictions_of", "build_task",
           "check_named_ranges", "Ablation", "MetricColumn", "NominalTask",
           "BinaryTask", "FeatureTask", "NumericTask", "OrdinalTask", "RegressionTask", "SoftTargetTask",
           "SoftThresholdTask"]
