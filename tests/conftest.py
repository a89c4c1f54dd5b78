"""Shared fixtures. The shipped artefacts (weights, profile) are real; tests that need
a profile of another model build a small one with the real profiler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests draw a tenth of their examples in everyday runs (make test, CI) and
# all of them with SPLITCTL_THOROUGH=1 (make test-thorough): the fuzzers' thousands of
# frames take half a minute that every change would otherwise wait for.
THOROUGH = os.environ.get("SPLITCTL_THOROUGH", "") == "1"


def examples(thorough: int) -> int:
    """Examples for a property test whose thorough count is ``thorough``."""
    return thorough if THOROUGH else max(20, thorough // 10)


# Hyperparameters that make train.py train in seconds: two envs, short episodes,
# frequent validation (test modules import it: ``from conftest import TINY_HYPERPARAMS``).
TINY_HYPERPARAMS = """
[ppo]
n_envs = 2
n_steps = 256
batch_size = 128
n_epochs = 4
episode_requests = 64
[eval]
freq = 1024
episodes_per_family = 1
checkpoint_freq = 1024
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line(
        "markers", "realtime: asserts wall-clock deadlines; make test runs these on their own"
    )


def refused(main, argv: list[str], capsys, *names: str) -> str:
    """Run ``main(argv)`` in-process; assert exit 2 and one ``error:`` line naming each
    of ``names``; return the line (test modules import it)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in err, err
    return err


def tripwire(*_args, **_kwargs):
    """Stands in for a command's work: a test fails if the command starts it."""
    pytest.fail("the command started work before refusing its arguments")


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


# -- the slowest tests of a whole `make test` ---------------------------------------------
# make test runs two pytest sessions (the realtime tests after the others); each appends
# its tests' durations here, and tests/slowest.py prints the slowest of both at the end.
DURATIONS = os.environ.get("SPLITCTL_DURATIONS")


def pytest_runtest_logreport(report):
    # Under xdist the controller sees every worker's reports; the workers write nothing.
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    if DURATIONS and report.when in ("setup", "call", "teardown") and report.duration > 0.5:
        import json

        row = {"test": report.nodeid, "when": report.when, "seconds": round(report.duration, 2)}
        with open(DURATIONS, "a") as fh:
            fh.write(json.dumps(row) + "\n")
