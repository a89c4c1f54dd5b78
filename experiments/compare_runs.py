"""A trained run against the shipped PPO on the test episodes of ``evaluate.py
--episodes 10`` (seed 0), paired per family: is a retrained policy at least as good?

    python -m experiments.compare_runs RUN [--out out/compare_runs.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.common import compare_on_test, evaluation_env, shipped_ppo
from settings.cli import summary_of


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=summary_of(__doc__))
    p.add_argument("run", type=Path, help="the run to compare with runs/default")
    p.add_argument("--out", type=Path, default=Path("out/compare_runs.json"))
    args = p.parse_args(argv)
    from agents.ppo import load_ppo
    from telemetry.observation import OBS_DIM

    env, families = evaluation_env()
    candidate = load_ppo(args.run, nvec=env.action_space.nvec.tolist(), obs_dim=OBS_DIM)
    report = {"run": str(args.run)}
    compare_on_test(env, families, {"candidate": candidate, "ppo": shipped_ppo(env)},
                    "candidate", report)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("wrote", args.out)
    return report


if __name__ == "__main__":
    main()
