"""Shared fixtures. Tests that need real UTKFace images read them from ../shared
beside the checkout and skip, saying so, when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
UTKFACE = REPO.parent / "shared" / "data" / "utkface"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    if not (UTKFACE / "UTKFace").is_dir():
        pytest.skip(f"UTKFace images not found at {UTKFACE} (the shared data folder beside the checkout)")
    return UTKFACE
