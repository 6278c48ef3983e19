"""Shared pytest setup: headless plotting, and the location of the read-only `../shared` folder."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    "The `../shared` folder beside the repository (spec, fixtures, data); skips the test where it is absent."
    if not (SHARED / "fidelity").is_dir():
        pytest.skip(f"{SHARED} not found: reference fixtures and evaluation data live beside the repository in CI")
    return SHARED
