"""A clairvoyant, label-blind planner: how far foresight goes without the labels.

``ForesightPlanner`` (``planner_label_blind``, run it with ``evaluate.py --policies``)
sees everything the simulator knows except each image's true answer: the future
bandwidth of the trace, the arrival times, the confidence every exit will have on
every coming image, the queue, the radio tail and the cloud's warmth. Every ``hold``
requests it tries each distinct action held for the next ``horizon`` requests on a
copy of the simulator, scores the requests at the calibrated accuracy of their exit
and confidence (what ``accuracy_credit="expected"`` credits, so the answers' luck is
not part of the plan), and keeps the best action for the next ``hold`` requests
(receding horizon).

What it is for: the clairvoyant ``Oracle`` leads PPO mostly because it knows whether
each early exit is right; ``LabelBlindOracle`` takes the labels away but also plans
nothing, so it never opens an upload regime (a cold FaaS instance, an idle radio)
whose cost only later requests repay. This planner keeps the foresight and plans far
enough ahead to see those regimes pay, so its score is a reference for what a policy
that cannot see labels could reach with a perfect forecast. It is not an upper bound:
it considers one action held over the horizon (and, with ``switch_top``, one switch
after ``hold`` requests), and it does not plan past the horizon.
Numbers in docs/benchmarks-history.md.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace

import numpy as np

from envs.offload_env import EpisodeState, OffloadEnv
from envs.wrappers import env_actions
from telemetry.observation import Telemetry
from traces.trace import Trace


class ForesightPlanner:
    name = "planner_label_blind"
    privileged = True

    def __init__(self, horizon: int = 40, hold: int = 8, switch_top: int = 0) -> None:
        if horizon < 1 or hold < 1 or switch_top < 0:
            raise ValueError(
                f"horizon and hold must be >= 1 and switch_top >= 0, "
                f"got {horizon}, {hold} and {switch_top}"
            )
        self.horizon, self.hold, self.switch_top = horizon, hold, switch_top
        self._actions: list[np.ndarray] | None = None
        self._held: np.ndarray | None = None
        self._left = 0  # requests the held action still covers

    def reset(self) -> None:
        """A new episode: plan again at its first request."""
        self._held, self._left = None, 0

    def act_privileged(self, env: OffloadEnv) -> np.ndarray:
        if self._left == 0:
            self._held, self._left = self._plan(env), self.hold
        self._left -= 1
        return self._held.copy()

    def _plan(self, env: OffloadEnv) -> np.ndarray:
        """The first action of the best plan. Plans are one action held over the horizon;
        with ``switch_top`` > 0 also the ``switch_top`` best of those held for ``hold``
        requests and followed by any other action for the rest of the horizon."""
        if self._actions is None:
            self._actions = [np.array(a, dtype=np.int64) for a in env_actions(env)]
        real = env.snapshot()
        starts = self._views(env, real)
        try:
            values = [self._held_value(env, starts, a, self.horizon)[0] for a in self._actions]
            best = int(np.argmax(values))
            best_action, best_value = self._actions[best], values[best]
            rest = self.horizon - self.hold
            for i in np.argsort(values)[::-1][: self.switch_top if rest > 0 else 0]:
                first = self._actions[i]
                head, ended, switches = 0.0, False, []
                for start in starts:
                    env.restore(start)
                    value, done = self._rollout(env, first, self.hold)
                    head, ended = head + value / len(starts), ended or done
                    switches.append(env.snapshot())
                if ended:
                    continue
                for b in self._actions:
                    value = head + self._held_value(env, switches, b, rest)[0]
                    if value > best_value:
                        best_action, best_value = first, value
        finally:
            env.restore(real)
        return best_action

    def _views(self, env: OffloadEnv, real: tuple[EpisodeState, Telemetry]) -> list:
        """The situations the plans start from: here, the simulator's own."""
        return [real]

    def _held_value(
        self, env: OffloadEnv, starts: list, action: np.ndarray, steps: int
    ) -> tuple[float, bool]:
        """``_rollout`` from each of ``starts``, averaged."""
        total, ended = 0.0, False
        for start in starts:
            env.restore(start)
            value, done = self._rollout(env, action, steps)
            total, ended = total + value, ended or done
        return total / len(starts), ended

    def _rollout(self, env: OffloadEnv, action: np.ndarray, steps: int) -> tuple[float, bool]:
        """The calibrated reward of ``action`` held for the next ``steps`` requests, and
        whether the episode ended within them."""
        return self._run(env, lambda t, observation: action, steps)

    @staticmethod
    def _run(env: OffloadEnv, choose, steps: int) -> tuple[float, bool]:
        """The calibrated reward of the next ``steps`` requests, the ``t``-th decided by
        ``choose(t, observation)``, and whether the episode ended within them."""
        reward = env.system.reward
        obs, value = env.observe(), 0.0
        for t in range(steps):
            obs, _, terminated, truncated, info = env.step(choose(t, obs))
            value += reward(
                info["accuracy_expected"],
                info["latency_s"],
                info["energy_j"],
                info["money_usd"],
                info["leakage"],
                info["battery_level"],
                info["carbon_g"],
            )
            if terminated or truncated:
                return value, True
        return value, False

    def act(self, observation: np.ndarray) -> np.ndarray:
        raise RuntimeError("the planner needs the simulator: call act_privileged(env)")


class DevicePlanner(ForesightPlanner):
    """The same search on what the device itself knows (``planner_device``): a policy a
    device could run, in the spirit of model-predictive control.

    Each plan starts from the device's own situation (its queue, battery, radio tail,
    the cloud's last use) and assumes what it cannot see: the uplink stays at its
    harmonic-mean throughput estimate with its RTT estimate, and the future is sampled.
    It plans on ``scenarios`` futures at once and averages each plan's value over them
    (sample-average approximation); in each, the requests not yet arrived come with
    Poisson gaps at the workload's mean rate (periodic arrivals: on schedule) and the
    images from the current one on are drawn at random from the evaluation's pool
    (their confidences decide the exits; the score credits calibrated accuracy).
    Arrivals already seen are kept as they are. With ``scenarios=1`` it plans on one
    certainty-equivalent future instead: arrivals exactly at the mean rate, one draw
    of images. Planning on one future overfits it: measured in docs/benchmarks-history.md.

    ``knows`` hands it back part of the clairvoyant's foresight, to measure what each
    part is worth: ``"link"`` (the trace's true future bandwidth and RTT),
    ``"arrivals"`` (the true arrival times), ``"images"`` (the true coming images).
    Knowing all three it plans exactly as ``ForesightPlanner``.
    """

    FORESIGHT = ("link", "arrivals", "images")

    def __init__(
        self,
        horizon: int = 40,
        hold: int = 8,
        switch_top: int = 0,
        seed: int = 0,
        knows: tuple[str, ...] = (),
        scenarios: int = 4,
    ):
        super().__init__(horizon, hold, switch_top)
        if scenarios < 1:
            raise ValueError(f"scenarios must be >= 1, got {scenarios}")
        self.scenarios = scenarios
        unknown = sorted(set(knows) - set(self.FORESIGHT))
        if unknown:
            raise ValueError(f"knows: unknown {unknown}; choose from {self.FORESIGHT}")
        self.knows = frozenset(knows)
        self.name = "planner_device" + "".join(f"+{k}" for k in self.FORESIGHT if k in self.knows)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        super().reset()
        self._rng = np.random.default_rng(self.seed)

    def _views(self, env: OffloadEnv, real: tuple[EpisodeState, Telemetry]) -> list:
        sampled_arrivals = (
            "arrivals" not in self.knows and env.scenario.workload.arrival != "periodic"
        )
        if "images" in self.knows and not sampled_arrivals:
            return [self._view(env, real)]  # nothing left to sample: every future is this one
        return [self._view(env, real) for _ in range(self.scenarios)]

    def _view(self, env: OffloadEnv, real: tuple[EpisodeState, Telemetry]):
        """One future as the device imagines it, from the real situation ``real``."""
        state, telemetry = real
        view = state
        i, n = state.index, len(state.arrivals)
        if "link" not in self.knows:
            rate_bps = telemetry.bandwidth_estimate_bps()
            link = Trace("device-estimate", state.trace.family, (0.0,), (max(rate_bps, 1.0),),
                         1e12, telemetry.rtt_est_s)  # fmt: skip
            view = replace(view, trace=link, offset_s=0.0)
        if "arrivals" not in self.knows:
            view = replace(view, arrivals=self._imagined_arrivals(env, state))
        if "images" not in self.knows:
            drawn = self._rng.integers(env.system.n_samples, size=n - i).tolist()
            view = replace(view, samples=state.samples[:i] + drawn)
        return view, telemetry

    def _imagined_arrivals(self, env: OffloadEnv, state: EpisodeState) -> list[float]:
        """The arrivals seen by now, then the rest at the workload's mean rate; with
        sampled scenarios, Poisson gaps drawn at that rate. Poisson arrivals are
        memoryless, so the next one comes after now, not after the last one seen."""
        now = env.decision_time()
        workload = env.scenario.workload
        seen = bisect_right(state.arrivals, now, state.index + 1)  # arrived by now: known
        left = len(state.arrivals) - seen
        gap = 1.0 / workload.rate_hz
        if workload.arrival == "periodic":
            gaps, start = np.full(left, gap), state.arrivals[seen - 1]
        elif self.scenarios > 1:
            gaps, start = self._rng.exponential(gap, left), now
        else:
            gaps, start = np.full(left, gap), now
        return state.arrivals[:seen] + (start + np.cumsum(gaps)).tolist()
