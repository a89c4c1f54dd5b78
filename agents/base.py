"""One policy interface for PPO, heuristics, exported policies and the oracle.

Every policy maps an observation (the vector built by
``telemetry.observation.build_observation``) to an action ``(cut, threshold index,
compression level)``. Heuristics read the few
named features they need through ``ObservationView``. The clairvoyant oracle is the
one exception: it sets ``privileged = True`` and is handed the simulator instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from telemetry.observation import OBS_NAMES

_INDEX = {name: i for i, name in enumerate(OBS_NAMES)}


@runtime_checkable
class Policy(Protocol):
    name: str

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for one observation: int array ``[cut, threshold, level]``."""
        ...


@dataclass(frozen=True)
class ObservationView:
    """Named, de-normalised access to an observation vector."""

    obs: np.ndarray

    def __getitem__(self, name: str) -> float:
        return float(self.obs[_INDEX[name]])

    @property
    def bandwidth_bps(self) -> float:
        """The device's harmonic-mean estimate of its uplink throughput."""
        return 10.0 ** self["tput_hmean_log10_mbps"] * 1e6

    @property
    def battery(self) -> float:
        return self["battery_level"]

    @property
    def rtt_s(self) -> float:
        return self["rtt_over_deadline"] * self.deadline_s

    @property
    def deadline_s(self) -> float:
        return 10.0 ** self["deadline_log10_s"]

    @property
    def lateness_s(self) -> float:
        return self["lateness_over_deadline"] * self.deadline_s


def action(cut: int, threshold: int, level: int) -> np.ndarray:
    return np.array([cut, threshold, level], dtype=np.int64)


class FixedPolicy:
    """Always the same action (``variant``: the model variant, where the scenario
    offers several; ``None``: a three-component action, the scenario's first)."""

    def __init__(
        self,
        cut: int,
        threshold: int,
        level: int,
        variant: int | None = None,
        name: str | None = None,
    ) -> None:
        self._action = action(cut, threshold, level)
        if variant is not None:
            self._action = np.append(self._action, np.int64(variant))
        parts = ",".join(str(int(v)) for v in self._action)
        self.name = name or f"fixed({parts})"

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._action.copy()


class RandomPolicy:
    """Uniform over the action space, from its own seeded generator (so that it never
    touches the environment's random stream: common random numbers hold)."""

    name = "random"

    def __init__(self, nvec: tuple[int, ...], seed: int = 0, actions=None) -> None:
        self.nvec = np.asarray(nvec)
        self.rng = np.random.default_rng(seed)
        # Where cuts offer different levels, draw from the valid (cut, threshold, level).
        self.actions = None if actions is None else np.asarray(actions, dtype=np.int64)

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self.actions is not None:
            return self.actions[int(self.rng.random() * len(self.actions))].copy()
        return (self.rng.random(len(self.nvec)) * self.nvec).astype(np.int64)
