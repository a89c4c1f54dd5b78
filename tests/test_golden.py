"""The simulator's numbers, pinned: seeded episodes of one device and of fleets (every
latency, energy, money, reward and observation) must match the recorded golden file
to 1e-9. A change on purpose re-records it (``python -m tests.golden.record``) and says
which number moved and why."""

from __future__ import annotations

import numpy as np
import pytest
from golden.record import FLEET_CASES, GOLDEN, SINGLE_CASES, record_fleet, record_single


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.mark.parametrize("name", sorted(SINGLE_CASES))
def test_single_device_episodes_match_the_golden_file(golden, name):
    _compare(golden, name, record_single(SINGLE_CASES[name]))


@pytest.mark.parametrize("name", sorted(FLEET_CASES))
def test_fleet_episodes_match_the_golden_file(golden, name):
    _compare(golden, name, record_fleet(FLEET_CASES[name]))


def _compare(golden: dict, name: str, got: dict[str, np.ndarray]) -> None:
    want = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith(name + "/")}
    assert sorted(got) == sorted(want), f"{name}: recorded fields differ"
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-9, err_msg=f"{name}/{key}")
