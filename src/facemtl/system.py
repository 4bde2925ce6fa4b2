"""What a result was measured on: the machine, its processor and the library versions."""

from __future__ import annotations

import os
import platform
from typing import Any


def hardware(device: Any = None) -> dict[str, Any]:
    """Machine, CPU model and count, the load average, Python and torch versions (when torch
    is installed), and the GPU when there is one."""
    import importlib.util

    info: dict[str, Any] = {"machine": platform.machine(), "processor": _cpu_model() or platform.machine(),
                            "cpus": os.cpu_count(), "usable_cores": usable_cores(),
                            "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    if device is not None:
        info["device"] = str(device)
    return info


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
