"""Files shipped with facemtl for examples and self-checks (see README.md here)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_photo() -> Path:
    """The shipped sample photo: one face (astronaut Eileen Collins), public domain."""
    return Path(str(resources.files(__name__) / "astronaut.jpg"))
