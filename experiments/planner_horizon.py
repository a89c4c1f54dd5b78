"""How far ahead the label-blind clairvoyant planner looks, and how long it holds a plan.

``agents.planner.ForesightPlanner`` with a given ``--horizon`` and ``--hold``, against
the shipped PPO on the test episodes of ``evaluate.py --episodes 10`` (seed 0); writes
``OUT/report.json``. The default planner (horizon 40, hold 8) is what
``evaluate.py --policies ...,planner_label_blind`` runs.

``--knows`` runs the device planner instead (``agents.planner.DevicePlanner``, on the
device's own estimates) handed back the named parts of the clairvoyant's foresight
(``link``, ``arrivals``, ``images``; ``--knows none`` for none of them): what each part
of the future is worth to the same search. ``--scenarios N`` sets how many sampled
futures it plans on (default 4, as ``planner_device``; 1: one certainty-equivalent
future).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from settings.cli import summary_of


def main(argv: list[str] | None = None) -> int:
    from agents.planner import DevicePlanner, ForesightPlanner
    from experiments.common import compare_on_test, evaluation_env, shipped_ppo

    cli = argparse.ArgumentParser(description=summary_of(__doc__))
    cli.add_argument("--horizon", type=int, default=40, help="requests simulated per plan")
    cli.add_argument("--hold", type=int, default=8, help="requests each plan is kept for")
    cli.add_argument(
        "--switch-top", type=int, default=0,
        help="also plans that switch once, after the hold, from this many best held actions",
    )  # fmt: skip
    cli.add_argument(
        "--knows", default=None,
        help="the device planner, knowing these (comma-separated: link, arrivals, images; or none)",
    )  # fmt: skip
    cli.add_argument("--scenarios", type=int, default=4, help="the device planner's futures")
    cli.add_argument("--out", type=Path, default=None)
    args = cli.parse_args(argv)
    tag = f"h{args.horizon}_k{args.hold}" + (f"_s{args.switch_top}" if args.switch_top else "")
    if args.knows is None:
        planner = ForesightPlanner(args.horizon, args.hold, args.switch_top)
    else:
        knows = () if args.knows == "none" else tuple(args.knows.split(","))
        planner = DevicePlanner(
            args.horizon, args.hold, args.switch_top, knows=knows, scenarios=args.scenarios
        )
        tag = f"device_{'_'.join(knows) or 'none'}_{tag}_x{args.scenarios}"
    out = args.out or Path(f"runs/planner_{tag}")
    name = f"planner_{tag}"

    env, families = evaluation_env()
    policies = {name: planner, "ppo": shipped_ppo(env)}
    started = time.perf_counter()
    report: dict = {"horizon": args.horizon, "hold": args.hold, "switch_top": args.switch_top,
                    "knows": args.knows, "scenarios": args.scenarios}  # fmt: skip
    compare_on_test(env, families, policies, name, report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'report.json'} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
