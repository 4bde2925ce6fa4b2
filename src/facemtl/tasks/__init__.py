"""Task types, pluggable by name through :data:`TASK_TYPES`."""

from .base import TASK_TYPES, Task, build_task
from .classification import BinaryTask, NominalTask
from .regression import CoralHead, OrdinalTask, RegressionTask

__all__ = ["TASK_TYPES", "Task", "build_task", "NominalTask", "BinaryTask", "OrdinalTask", "RegressionTask", "CoralHead"]
