"""PPO improved by rollouts on the device's own model of the future (policy rollout).

The device planner (``planner_device``) searches all 152 held actions on futures the
device imagines and scores 0.417, below PPO (0.438): its model of the future (the
link held at the throughput estimate, sampled arrivals and images) is too crude for a
search from scratch. A rollout (Bertsekas' policy rollout, one step of policy
iteration) asks less of the model: every ``hold`` requests it compares PPO itself with
PPO's ``top`` most likely actions, each held for ``hold`` requests and then followed by
PPO, on the same ``scenarios`` imagined futures over ``horizon`` requests, and keeps
the best. PPO is one of the candidates, so on the imagined futures the choice is never
worse than PPO; whether that carries over to the real ones is what this measures, on
the test episodes of ``evaluate.py --episodes 10`` (seed 0). Writes ``OUT/report.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.planner import DevicePlanner
from envs.offload_env import OffloadEnv
from settings.cli import summary_of


class PolicyRollout(DevicePlanner):
    """``base`` (a policy with ``logits(observation)``, e.g. ``NumpyPolicy``), improved
    by rollouts on the device planner's sampled futures. ``margin``: how much more
    (summed calibrated reward over the horizon) a held candidate must promise than
    ``base`` itself before it replaces it."""

    def __init__(self, base, top: int = 4, margin: float = 0.0, **planner) -> None:
        super().__init__(**planner)
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.base, self.top, self.margin = base, top, margin
        self.name = f"{base.name}+rollout"
        self.deviations = 0  # plans where a held candidate replaced the base policy
        self.plans = 0

    def act_privileged(self, env: OffloadEnv) -> np.ndarray:
        if self._left == 0:
            self._held, self._left = self._plan(env), self.hold
        self._left -= 1
        if self._held is None:  # the base policy itself won: it decides every request
            return self.base.act(env.observe())
        return self._held.copy()

    def _plan(self, env: OffloadEnv) -> np.ndarray | None:
        """A held candidate when one promises more than ``base``; ``None`` for ``base``."""
        logits = self.base.logits(env.observe())
        candidates = [self.base.table[i] for i in np.argsort(logits)[::-1][: self.top]]
        real = env.snapshot()
        starts = self._views(env, real)
        try:
            base_value = self._held_value(env, starts, None, self.horizon)[0]
            values = [self._held_value(env, starts, c, self.horizon)[0] for c in candidates]
        finally:
            env.restore(real)
        self.plans += 1
        best = int(np.argmax(values))
        if values[best] > base_value + self.margin:
            self.deviations += 1
            return candidates[best]
        return None

    def _rollout(self, env: OffloadEnv, first: np.ndarray | None, steps: int) -> tuple[float, bool]:
        """Calibrated reward over ``steps`` requests: ``first`` held for ``hold`` of them
        (``None``: none), then ``base`` deciding every request."""

        def choose(t: int, observation: np.ndarray) -> np.ndarray:
            return first if first is not None and t < self.hold else self.base.act(observation)

        return self._run(env, choose, steps)


def main(argv: list[str] | None = None) -> int:
    from experiments.common import compare_on_test, evaluation_env, shipped_ppo
    from runtime_hooks.policy_file import NumpyPolicy

    cli = argparse.ArgumentParser(description=summary_of(__doc__))
    cli.add_argument("--policy", type=Path, default=Path("runs/default/policy.npz"))
    cli.add_argument("--top", type=int, default=4, help="PPO's most likely actions tried")
    cli.add_argument("--horizon", type=int, default=40, help="requests simulated per plan")
    cli.add_argument("--hold", type=int, default=8, help="requests each plan is kept for")
    cli.add_argument("--scenarios", type=int, default=4, help="sampled futures per plan")
    cli.add_argument("--margin", type=float, default=0.0, help="reward a deviation must gain")
    cli.add_argument("--knows", default="none", help="as planner_horizon --knows")
    cli.add_argument("--out", type=Path, default=None)
    args = cli.parse_args(argv)
    knows = () if args.knows == "none" else tuple(args.knows.split(","))
    tag = f"t{args.top}_h{args.horizon}_k{args.hold}_x{args.scenarios}_m{args.margin:g}"
    tag += "".join(f"_{k}" for k in knows)
    out = args.out or Path(f"runs/ppo_rollout_{tag}")

    env, families = evaluation_env()
    base = NumpyPolicy.load(args.policy)
    planner = PolicyRollout(
        base, args.top, args.margin, horizon=args.horizon, hold=args.hold,
        knows=knows, scenarios=args.scenarios,
    )  # fmt: skip
    name = planner.name
    started = time.perf_counter()
    report: dict = {"policy": str(args.policy), "top": args.top, "horizon": args.horizon,
                    "hold": args.hold, "scenarios": args.scenarios, "margin": args.margin,
                    "knows": args.knows}  # fmt: skip
    compare_on_test(env, families, {name: planner, "ppo": shipped_ppo(env)}, name, report)
    report["deviation_share"] = planner.deviations / max(planner.plans, 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"deviations: {report['deviation_share']:.1%} of plans")
    print(f"wrote {out / 'report.json'} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
