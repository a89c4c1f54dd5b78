"""Experiment: PPO that observes the true uplink rate, against the shipped PPO.

Issue 5 asks whether the observation limits PPO. The device only knows the throughput
of its own past uploads (and nothing while it keeps work local), so its estimate lags
and can be stale. This variant replaces the estimate with the truth: the newest sample
and the harmonic-mean estimate become the trace's uplink rate at the moment of the
decision, and the sample's age 0. Everything else (held decisions, calibrated credit,
the shipped PPO settings and seed, best model on validation) is as train.py does it;
the test comparison uses the episodes of ``evaluate.py --episodes 10``. It bounds what
better bandwidth estimation (probing, a predictor) could bring to this policy class,
not what the future bandwidth is worth. Not part of the product: nothing imports this.

    .venv/bin/python -m experiments.true_bandwidth [--timesteps N] [--out DIR]
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from telemetry.observation import OBS_NAMES

_NEWEST = OBS_NAMES.index("tput_last_log10_mbps")
_ESTIMATE = OBS_NAMES.index("tput_hmean_log10_mbps")
_AGE = OBS_NAMES.index("tput_age_log1p_s")


class TrueBandwidth(gym.ObservationWrapper):
    """Around an ``OffloadEnv``: the bandwidth features become the true uplink rate now."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        env = self.env.unwrapped
        st = env.state
        if st.index >= len(st.arrivals):  # the episode's last observation: nothing to decide
            return observation
        bps = st.trace.rate_at(st.offset_s + env.decision_time())
        obs = observation.copy()
        obs[_NEWEST] = obs[_ESTIMATE] = math.log10(max(bps, 1e3) / 1e6)
        obs[_AGE] = 0.0
        return obs


def main(argv: list[str] | None = None) -> int:
    from experiments.common import observation_experiment, parser

    args = parser(__doc__, "runs/true_bandwidth").parse_args(argv)
    observation_experiment("ppo_true_bandwidth", TrueBandwidth, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
