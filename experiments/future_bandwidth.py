"""Experiment: PPO that is told the future uplink rate, against the shipped PPO.

The last open lead of issue 5 was a learned bandwidth predictor in the observation.
No predictor can beat the truth, so this experiment trains PPO with the truth: the
observation gains the trace's true uplink rate now and its true mean over the next
``--horizons`` seconds (default 4 s and 20 s: one held decision of 8 requests at
2 requests/s, and the 40 requests the label-blind planner looks ahead), each as log10
Mbit/s. The device's own features stay. Everything else (held decisions, calibrated
credit, the shipped PPO settings and seed, best model on validation) is as train.py
does it; the test comparison uses the episodes of ``evaluate.py --episodes 10``.

What it bounds: what any bandwidth forecast (learned or not, over these horizons)
could bring to this policy class. What it does not: the arrivals and the coming
images' confidences, which the planner also knows and no forecast can give (they are
independent of the past). Not part of the product: nothing imports this.

    .venv/bin/python -m experiments.future_bandwidth [--horizons 4,20] [--timesteps N] [--out DIR]
"""

from __future__ import annotations

import math
from functools import partial

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from telemetry.observation import OBS_HIGH, OBS_LOW


def _log_mbps(bps: float) -> float:
    return math.log10(max(bps, 1e3) / 1e6)


class FutureBandwidth(gym.ObservationWrapper):
    """Around an ``OffloadEnv``: the observation gains the true uplink rate now and its
    true mean over each of ``horizons_s`` ahead (log10 Mbit/s)."""

    def __init__(self, env: gym.Env, horizons_s: tuple[float, ...] = (4.0, 20.0)):
        super().__init__(env)
        if not horizons_s or min(horizons_s) <= 0:
            raise ValueError(f"horizons must be positive seconds, got {horizons_s}")
        self.horizons_s = tuple(float(h) for h in horizons_s)
        n = env.observation_space.shape[0] + 1 + len(self.horizons_s)
        self.observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (n,), np.float32)

    def future(self) -> list[float]:
        """The added features at the current decision; zeros once the episode is over."""
        env = self.env.unwrapped
        st = env.state
        if st.index >= len(st.arrivals):  # the episode's last observation: nothing to decide
            return [0.0] * (1 + len(self.horizons_s))
        t = st.offset_s + env.decision_time()
        now = _log_mbps(st.trace.rate_at(t))
        return [now] + [_log_mbps(st.trace.window_mean_bps(t, h)) for h in self.horizons_s]

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate((observation, np.asarray(self.future(), np.float32)))


def main(argv: list[str] | None = None) -> int:
    from experiments.common import observation_experiment, parser

    cli = parser(__doc__, "runs/future_bandwidth")
    cli.add_argument("--horizons", default="4,20", help="seconds ahead, comma-separated")
    args = cli.parse_args(argv)
    horizons = tuple(float(h) for h in args.horizons.split(","))
    observation_experiment(
        "ppo_future_bandwidth",
        partial(FutureBandwidth, horizons_s=horizons),
        args,
        horizons_s=horizons,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
