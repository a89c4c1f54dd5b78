"""What the learned bottlenecks are worth: the PPO trained with them against the policy
shipped before them, on the same test requests.

    python -m experiments.bottleneck_value --previous-run DIR --previous-profile FILE
        [--policy runs/default] [--episodes 10] [--out out/bottleneck_value]

The previous policy runs in an environment of its own profile (the same model, without
the bottleneck levels), the new one in the current profile's: the episodes (traces,
start offsets, arrivals, images, batteries) are the same for both (common random
numbers), so the difference is paired per episode. Reported per family and overall:
both rewards, the paired difference, and the share of requests each policy sends
through an intermediate cut (offloaded at a cut 0 < c < K). To get the policy shipped
before the bottlenecks from this repository's history::

    git show 26a7718:profiles/data/profile_fmnist.npz > /tmp/profile_before.npz
    mkdir -p /tmp/run_before && for f in config.json best_model.zip best_vecnormalize.json; do
        git show 26a7718:runs/default/$f > /tmp/run_before/$f; done
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from settings.cli import summary_of
from sim import metrics


def main(argv: list[str] | None = None) -> int:
    from agents.metrics import paired_difference, subset
    from agents.ppo import load_ppo
    from agents.rollout import run_many
    from envs import OffloadEnv
    from evaluate import episode_specs
    from sim import load_scenario
    from sim.metrics import episode_means, mean_ci95
    from telemetry.observation import OBS_DIM
    from traces.sets import load_families

    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--previous-run", type=Path, required=True)
    parser.add_argument("--previous-profile", type=Path, required=True)
    parser.add_argument("--policy", type=Path, default=Path("runs/default"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/bottleneck_value"))
    args = parser.parse_args(argv)

    scenario = load_scenario(None)
    before = scenario.with_updates(profile=str(args.previous_profile))
    families = load_families("auto", split="test")[0]
    traces = [t for fam in sorted(families) for t in families[fam]]
    envs = {
        "before": OffloadEnv(before, traces, sample_split="test"),
        "now": OffloadEnv(scenario, traces, sample_split="test"),
    }
    policies = {
        name: load_ppo(
            run,
            nvec=env.action_space.nvec.tolist(),
            obs_dim=OBS_DIM,
            model_hash=env.system.profile.model_hash,
            levels_by_cut=env.system.levels_by_cut,
        )  # fmt: skip
        for (name, env), run in zip(envs.items(), (args.previous_run, args.policy), strict=True)
    }
    b = scenario.battery
    specs = episode_specs(families, args.episodes, args.seed, (b.initial_min, b.initial_max))
    results: dict[str, dict] = {}
    for name, env in envs.items():
        parts = [run_many(env, policies[name], specs[fam]) for fam in sorted(families)]
        for i, part in enumerate(parts):
            part["episode"] = part["episode"] + 10_000 * i
        results[name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    k = envs["now"].system.k
    report: dict[str, dict] = {}
    for group in ["overall", *sorted(families)]:

        def of(name: str, group=group) -> dict:
            r = results[name]
            return r if group == "overall" else subset(r, r["family"] == group)

        diff, ci = paired_difference(of("now"), of("before"))
        report[group] = {
            **{f"{n}_reward": mean_ci95(episode_means(of(n)))[0] for n in envs},
            "now_minus_before": diff,
            "ci95": ci,
            **{f"{n}_intermediate_share": metrics.intermediate_share(of(n), k) for n in envs},
        }
        print(group, json.dumps({key: round(v, 4) for key, v in report[group].items()}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
