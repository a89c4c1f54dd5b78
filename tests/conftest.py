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


@pytest.fixture(scope="module")
def cloud_server():
    """A real cloud server process on a free loopback port: ``(host, port)``."""
    from runtime_hooks.sim2real import start_server, stop_server

    proc, address = start_server("--read-timeout", "0.5")
    yield address
    stop_server(proc)
