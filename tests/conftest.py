"""Shared fixtures. The shipped artefacts (weights, profile) are real; tests that need
a profile of another model build a small one with the real profiler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def profile():
    from profiles.profile_io import load_profile

    return load_profile()


@pytest.fixture(scope="session")
def model():
    from profiles import DEFAULT_WEIGHTS
    from profiles.model import load_model

    return load_model(DEFAULT_WEIGHTS)
