"""Is the trade-off real? Every fixed action on the same requests, by bandwidth and battery.

    python -m agents.scenario_sweep [--scenario FILE] [--episodes-per-family 8] [--requests 200]
                         [--source auto] [--seed 0] [--json FILE]

Runs every distinct fixed action (cut, threshold, level) over the same episodes of
every trace family (common random numbers), then groups the requests by the uplink
capacity at their arrival (quartiles over all requests) and by battery level, and
prints, per group, the best fixed action and how edge-only and cloud-only fare.
The controller is only worth learning where the best action moves between groups.
Every argument is checked before the first episode runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from agents.base import FixedPolicy
from agents.rollout import make_specs, run_many
from envs.offload_env import OffloadEnv
from envs.wrappers import env_actions
from settings.cli import (
    UsageError,
    check_options,
    option,
    output_file,
    parse,
    run_cli,
    summary_of,
    within,
)
from settings.cli import seed as seed_range
from sim.scenario import load_scenario
from traces.sets import SOURCES, load_families

console = Console()
# Every fixed action (about 200 in the built-in scenario) keeps each request's reward:
# 100,000 requests a family (4 families) is about 650 MB of rewards and, at about
# 1,500 action-requests a second, some 15 hours.
MAX_REQUESTS_PER_FAMILY = 100_000
TOO_MANY = "every fixed action keeps each request's reward, in memory and in hours"


def label(env: OffloadEnv, act: tuple[int, ...]) -> str:
    s = env.system
    cut, thr, lvl = act[:3]
    t = s.thresholds[thr]
    exits = "no exits" if t > 1 else f"exit>={t:g}"
    variant = f" {s.scenario.variants[act[3]]}" if len(act) == 4 and cut > 0 else ""
    if cut == s.k:
        return f"local full{variant}, {exits}"
    return f"cut {cut}{variant} {s.profile.codec_name(cut, lvl)}, {exits}"


def sweep(scenario_path, source: str, episodes: int, requests: int, seed: int) -> dict:
    scenario = load_scenario(scenario_path)
    scenario.check_references()  # model, data and profile together
    families, _ = load_families(source, split=None)
    traces = [t for fam in sorted(families) for t in families[fam]]
    env = OffloadEnv(scenario, traces, sample_split="test", episode_requests=requests)
    b = scenario.battery
    specs = [
        spec
        for fam in sorted(families)
        for spec in make_specs(families[fam], episodes, seed, (b.initial_min, b.initial_max))
    ]
    actions = env_actions(env)
    rewards = {}
    ref = None
    for act in track(actions, description="fixed actions", console=console):
        res = run_many(env, FixedPolicy(*act), specs)
        rewards[act] = res["reward"]
        if ref is None:
            ref = res  # arrival bandwidth, battery and family do not depend on the action
    bw = ref["arrival_uplink_bps"]
    quart = np.quantile(bw, [0.25, 0.5, 0.75])
    groups = {f"bw Q{q + 1}": (np.digitize(bw, quart) == q) for q in range(4)}
    groups["battery < 0.3"] = ref["battery_level"] < 0.3
    groups["battery >= 0.3"] = ref["battery_level"] >= 0.3
    for fam in sorted(families):
        groups[f"family {fam}"] = ref["family"] == fam
    k = env.system.k
    variant = (0,) if env.system.n_variants > 1 else ()  # the scenario's first variant
    edge = (k, env.system.n_thresholds - 1, 0, *variant)
    cloud = (0, env.system.n_thresholds - 1, 0, *variant)
    rows = []
    for name, mask in groups.items():
        if not mask.any():  # e.g. no battery below 0.3 when the episodes start above it
            continue
        means = {a: float(r[mask].mean()) for a, r in rewards.items()}
        best = max(means, key=means.get)
        lo, hi = (float(bw[mask].min()), float(bw[mask].max()))
        rows.append(
            {
                "group": name,
                "requests": int(mask.sum()),
                "uplink_mbps": [round(lo / 1e6, 3), round(hi / 1e6, 3)],
                "best_action": list(best),
                "best_label": label(env, best),
                "best_reward": round(means[best], 4),
                "edge_only_reward": round(means[edge], 4),
                "cloud_only_reward": round(means[cloud], 4),
            }
        )
    return {
        "scenario": scenario.source,
        "system": env.system.describe(),
        "rows": rows,
        "n_actions": len(actions),
        "n_requests": int(len(bw)),
    }


@dataclass
class ScenarioSweepArgs:
    """``python -m agents.scenario_sweep``'s command line, checked before any episode."""

    scenario: Path | None = option(None, "scenario TOML (default: built-in)", type=Path)
    source: str = option("auto", "trace source", choices=SOURCES)
    episodes_per_family: int = option(
        8, "episodes of each trace family", check=within(1, MAX_REQUESTS_PER_FAMILY, TOO_MANY)
    )
    requests: int = option(
        200, "requests of each episode", check=within(1, MAX_REQUESTS_PER_FAMILY, TOO_MANY)
    )
    seed: int = option(0, "seed of the episodes (the same for every action)", check=seed_range)
    json: Path | None = option(
        None, "also write the table as JSON here", type=Path, check=output_file
    )

    def __post_init__(self) -> None:
        check_options(self)
        per_family = self.episodes_per_family * self.requests
        if per_family > MAX_REQUESTS_PER_FAMILY:
            raise UsageError(
                f"--episodes-per-family {self.episodes_per_family} x --requests "
                f"{self.requests} = {per_family:,} requests a family; at most "
                f"{MAX_REQUESTS_PER_FAMILY:,} ({TOO_MANY})"
            )
        if self.scenario is not None and not self.scenario.is_file():
            raise UsageError(f"--scenario: {self.scenario}: no such file")


def print_result(result: dict) -> None:
    """The table of best fixed actions per group, then the system's description."""
    table = Table(
        title=f"best fixed action per group ({result['n_requests']} requests, "
        f"{result['n_actions']} actions)"
    )
    for col in ("group", "uplink Mbit/s", "best fixed action", "reward", "edge-only", "cloud-only"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(
            r["group"],
            f"{r['uplink_mbps'][0]:.2f}-{r['uplink_mbps'][1]:.2f}",
            r["best_label"],
            f"{r['best_reward']:.3f}",
            f"{r['edge_only_reward']:.3f}",
            f"{r['cloud_only_reward']:.3f}",
        )
    console.print(table)
    console.print(result["system"])


def run(args: ScenarioSweepArgs) -> int:
    result = sweep(args.scenario, args.source, args.episodes_per_family, args.requests, args.seed)
    print_result(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(parse(ScenarioSweepArgs, argv, summary_of(__doc__))))


if __name__ == "__main__":
    sys.exit(main())
