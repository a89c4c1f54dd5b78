"""The single fixed action with the best mean reward on the training traces."""

from __future__ import annotations

import numpy as np

from agents.base import FixedPolicy
from agents.rollout import make_specs, run_many
from envs.offload_env import OffloadEnv
from envs.wrappers import env_actions
from traces.sets import group_by_family
from traces.trace import Trace


def find_best_fixed(
    env: OffloadEnv,
    train_traces: list[Trace],
    episodes: int = 16,
    seed: int = 12345,
    progress=None,
) -> tuple[FixedPolicy, dict[tuple[int, int, int], float]]:
    """Search every distinct action on episodes of the training traces (never the
    evaluation ones); returns the winner and every action's mean reward."""
    b = env.scenario.battery
    by_family = group_by_family(train_traces)
    specs = [
        spec
        for fam in sorted(by_family)
        for spec in make_specs(by_family[fam], episodes, seed, (b.initial_min, b.initial_max))
    ]
    scores = {}
    actions = env_actions(env)
    for act in progress(actions) if progress else actions:
        scores[act] = float(np.mean(run_many(env, FixedPolicy(*act), specs)["reward"]))
    best = max(scores, key=scores.get)
    return FixedPolicy(*best, name="best_fixed"), scores


def radio_key(tail_s: float, tail_w: float) -> tuple[float, float]:
    """A radio as the observation shows it: its tail time and power, rounded so that the
    float32 observation and the catalog's numbers give the same key."""
    return round(float(tail_s), 2), round(float(tail_w), 3)


class ContextualFixed:
    """A fixed action per context (the radio, from the observation's tail time and
    power, and a battery band), chosen on the training traces by
    ``find_best_fixed_by_context``; contexts it never saw get ``fallback``. A realizable
    rule: it reads only what the device observes."""

    name = "best_fixed_by_context"

    def __init__(
        self,
        table: dict[tuple[tuple[float, float], int], tuple[int, int, int]],
        battery_edges: np.ndarray,
        fallback: tuple[int, int, int],
    ) -> None:
        from telemetry.observation import OBS_NAMES

        self.table = table
        self.battery_edges = np.asarray(battery_edges, dtype=float)
        self.fallback = fallback
        self._tail_log = OBS_NAMES.index("radio_tail_log10_s")
        self._tail_w = OBS_NAMES.index("radio_tail_power_w")
        self._battery = OBS_NAMES.index("battery_level")

    def band(self, battery: float) -> int:
        return int(np.searchsorted(self.battery_edges, battery, side="right"))

    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = np.asarray(observation, dtype=float).reshape(-1)
        key = radio_key(10.0 ** obs[self._tail_log], obs[self._tail_w])
        act = self.table.get((key, self.band(obs[self._battery])), self.fallback)
        return np.array(act, dtype=np.int64)


def find_best_fixed_by_context(
    env: OffloadEnv,
    train_traces: list[Trace],
    episodes: int = 8,
    seed: int = 12345,
    battery_edges: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8),
    progress=None,
) -> ContextualFixed:
    """Every distinct action on ``episodes`` episodes per training family and battery
    band (an episode starts at a battery level drawn inside the band); per (radio,
    battery band) the action with the best mean reward over the requests decided in it."""
    b = env.scenario.battery
    by_family = group_by_family(train_traces)
    edges = np.asarray(battery_edges, dtype=float)
    bounds = [b.initial_min, *[e for e in edges if b.initial_min < e < b.initial_max]]
    bounds.append(b.initial_max)
    specs = {
        fam: [
            spec
            for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False))
            for spec in make_specs(by_family[fam], episodes, seed + i, (lo, hi))
        ]
        for fam in sorted(by_family)
    }
    sums: dict[tuple, dict[tuple[int, int, int], list[float]]] = {}
    actions = env_actions(env)
    for act in progress(actions) if progress else actions:
        for fam, fam_specs in specs.items():
            radio = env.system.radio(fam)
            res = run_many(env, FixedPolicy(*act), fam_specs)
            bands = np.searchsorted(edges, res["battery_level"], side="right")
            for band in np.unique(bands):
                rewards = res["reward"][bands == band]
                cell = sums.setdefault((radio_key(radio.tail_s, radio.tail_w), int(band)), {})
                total = cell.setdefault(act, [0.0, 0])
                total[0] += float(rewards.sum())
                total[1] += len(rewards)
    table = {ctx: max(cell, key=lambda a: cell[a][0] / cell[a][1]) for ctx, cell in sums.items()}
    overall = {a: 0.0 for a in actions}
    for cell in sums.values():
        for a, (total, _) in cell.items():
            overall[a] += total
    return ContextualFixed(table, edges, max(overall, key=overall.get))
