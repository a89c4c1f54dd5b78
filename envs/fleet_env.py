"""``OffloadFleet-v0``: N devices sharing one cloud, stepped together in numpy.

    envs = gymnasium.make_vec("OffloadFleet-v0", num_envs=64, scenario="fleet.toml")

Each sub-environment is one device of the fleet with its own trace, battery, arrivals
and samples, exactly as ``OffloadEnv`` simulates one device (the same physics, written
over arrays: with N = 1 and an unlimited cloud the two give the same floats). What
couples the devices is the cloud: every step, the requests the devices offload reach
the shared serving tier (``sim.cloud``) in order of their arrival there, and
wait for a worker (IaaS) or an instance (FaaS) when it is full.

## Action space
``MultiDiscrete([[K+1, T, L]] * N)``: one ``OffloadEnv`` action per device.

## Observation space
``Box(-10, 10, (N, 18), float32)``: each device's ``OffloadEnv`` observation (17
features, ``telemetry.observation.OBS_NAMES``) and what its own answers told it about
the cloud: the server-side queueing time they reported (the answer frame carries it),
smoothed, over the deadline (``server_queue_over_deadline``). A policy trained on one
device reads the first 17.

## Rewards, episode end
Per device, as ``OffloadEnv``: a request's reward; truncated after the scenario's
``episode_requests``; terminated when the battery is empty. The fleet shares one
clock, so a device whose episode ends starts its next one where it is in time (a new
trace, battery and requests), the others going on (``AutoresetMode.SAME_STEP``: the
step that ends an episode returns the next one's first observation, the last one in
``info["final_obs"]``).

## A note on time
A step takes each device's next request. Devices drift apart by their arrival noise
(a few seconds over an episode at the default rate); the cloud serves each step's
requests in order of arrival, after the previous step's. Probes (``[probe]``) are not
simulated in a fleet yet: a fleet scenario must keep ``probe.interval_s = 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from envs.offload_env import OffloadEnv
from sim import physics
from sim.cloud import Capacity, SharedCloud, batch_seconds
from sim.scenario import Scenario, ScenarioError, load_scenario
from telemetry.fleet import FLEET_OBS_DIM, FleetContext, FleetTelemetry
from telemetry.observation import OBS_HIGH, OBS_LOW
from traces.bank import TraceBank

__all__ = ["FLEET_OBS_DIM", "OffloadFleetEnv", "make_fleet"]


class OffloadFleetEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 8,
        scenario: Scenario | str | None = None,
        traces=None,
        *,
        trace_source: str = "auto",
        trace_split: str | None = "train",
        sample_split: str | None = None,
        episode_requests: int | None = None,
        accuracy_credit: str = "realized",
        capacity: Capacity | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"a fleet needs at least one device: num_envs={num_envs!r}")
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if scenario.probe.interval_s > 0:
            raise ScenarioError(
                f"scenario {scenario.name!r}: background probes ([probe] interval_s = "
                f"{scenario.probe.interval_s}) are not simulated in a fleet; set it to 0"
            )
        # One device's environment holds the system, the traces and the draws; the fleet
        # replays its reset for each device and steps all of them in arrays.
        self.single = OffloadEnv(
            scenario, traces, trace_source=trace_source, trace_split=trace_split,
            sample_split=sample_split, episode_requests=episode_requests,
            accuracy_credit=accuracy_credit,
        )  # fmt: skip
        self.scenario = scenario = self.single.scenario
        s = self.system = self.single.system
        self.capacity = capacity if capacity is not None else scenario.capacity
        # Workers batch by the measured times; with no worker limit, batch 1 is the
        # single-device env's tail time (``SharedCloud``'s default).
        table = batch_seconds(s, self.capacity) if self.capacity.workers else None
        self.cloud = SharedCloud(s, self.capacity, table)
        self.num_envs = n = num_envs
        self.single_action_space = self.single.action_space
        self.single_observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (FLEET_OBS_DIM,),
                                                   np.float32)  # fmt: skip
        self.action_space = spaces.MultiDiscrete(np.tile(self.single_action_space.nvec, (n, 1)))
        self.observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (n, FLEET_OBS_DIM), np.float32)
        self._tables()
        # The traces every device may get, as their radios see them, in one bank.
        uplinks = [self.single.uplink(t) for t in self.single.traces]
        self.bank = TraceBank([up for up, _ in uplinks])
        self._row_of = {f"{t.family}/{t.name}": r for r, t in enumerate(self.single.traces)}
        self._radio_rows = [radio for _, radio in uplinks]
        self.requests_per_episode = scenario.workload.episode_requests
        self._state_ready = False

    # -- constant tables --------------------------------------------------------------
    def _tables(self) -> None:
        """The system's per-sample lists as arrays (``sim.physics.system_arrays``)."""
        self.tables = physics.system_arrays(self.system)

    # -- reset ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None or self.single._np_random is None:
            # The generator every device draws from, in turn (as N = 1 would in
            # ``OffloadEnv``: the same seed gives that env's episode).
            self.single._np_random, _ = seeding.np_random(seed)
        n, r = self.num_envs, self.requests_per_episode
        self.cloud.reset()
        self.clock0 = np.zeros(n)
        self.arrivals = np.zeros((n, r))
        self.samples = np.zeros((n, r), dtype=np.int64)
        self.row = np.zeros(n, dtype=np.int64)
        self.offset = np.zeros(n)
        self.battery = np.zeros(n)
        self.index = np.zeros(n, dtype=np.int64)
        self.free = np.zeros(n)
        self.telemetry = FleetTelemetry(n)
        # Per device, its radio's constants (set with its trace).
        zeros = np.zeros
        self.radios = physics.RadioArrays(zeros(n), zeros(n), zeros(n), zeros(n))
        self.rtt = zeros(n)
        s = self.system
        self.context = FleetContext(
            self.scenario.workload.deadline_s, s.n_cuts, s.n_thresholds, s.n_levels,
            s.cloud.keep_alive_s, self.radios.tail_s, self.radios.tail_w,
        )  # fmt: skip
        self.families = [""] * n
        self._state_ready = True
        for d in range(n):
            self._reset_device(d, 0.0, options)
        return self._observe(self._decision_times()), {"family": np.array(self.families)}

    def _reset_device(self, d: int, start_s: float, options=None) -> None:
        """Device ``d`` starts an episode at fleet time ``start_s``: the draws of
        ``OffloadEnv.reset`` (trace, offset, arrivals, samples, battery), in its order."""
        env = self.single
        options = dict(options or {})
        env.reset(options=options)  # draws from the shared generator, as one env would
        st = env.state
        trace = st.trace
        key = f"{trace.family}/{trace.name}"
        row = self._row_of.get(key)
        if row is None:  # a trace pinned through options must be one of the pool's
            raise ValueError(f"trace {key} is not in the fleet's trace pool")
        self.row[d] = row
        self.clock0[d] = start_s
        self.offset[d] = st.offset_s - start_s  # the trace is read at offset + fleet time
        self.arrivals[d] = np.asarray(st.arrivals) + start_s
        self.samples[d] = st.samples
        self.battery[d] = st.battery_j
        self.index[d] = 0
        self.free[d] = start_s
        self.telemetry.start(d, env.telemetry, start_s)
        radio, radios = st.radio, self.radios
        radios.base_w[d], radios.per_mbps_w[d] = radio.base_w, radio.per_mbps_w
        radios.tail_w[d], radios.tail_s[d] = radio.tail_w, radio.tail_s
        self.rtt[d] = trace.rtt_s
        self.families[d] = trace.family

    # -- observations ------------------------------------------------------------------
    def _decision_times(self) -> np.ndarray:
        arrival = self.arrivals[np.arange(self.num_envs), self.index]
        return np.maximum(arrival, self.free)

    def _observe(self, now: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        idx = self.index if index is None else index
        arrival = self.arrivals[np.arange(self.num_envs), idx]
        # Requests that arrived by ``now`` and wait behind the current one.
        queue = np.maximum((self.arrivals <= now[:, None]).sum(1) - idx - 1, 0)
        battery_level = physics.battery_level(self.system, self.battery)
        return self.telemetry.observations(now, now - arrival, queue, battery_level, self.context)

    # -- step -------------------------------------------------------------------------------
    def check_actions(self, actions) -> np.ndarray:
        """``(N, 3)`` integer actions, each within the single action space (a level
        beyond a cut's own means its last, as in ``OffloadEnv.check_action``)."""
        a = np.asarray(actions)
        if a.shape != (self.num_envs, 3) or a.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be integers of shape ({self.num_envs}, 3), got {a.dtype} {a.shape}"
            )
        nvec = self.single_action_space.nvec
        bad = (a < 0) | (a >= nvec)
        if bad.any():
            d, j = map(int, np.argwhere(bad)[0])
            name = ("cut", "threshold", "level")[j]
            raise ValueError(
                f"device {d}: action {name}={int(a[d, j])} is outside 0..{int(nvec[j]) - 1}"
            )
        a = a.astype(np.int64, copy=True)
        a[:, 2] = np.minimum(a[:, 2], self.tables.last_level[a[:, 0]])
        return a

    def step(self, actions):
        if not self._state_ready:
            raise RuntimeError("call reset() before step()")
        a = self.check_actions(actions)
        cut, thr, level = a[:, 0], a[:, 1], a[:, 2]
        ar = np.arange(self.num_envs)
        idx = self.index
        arrival = self.arrivals[ar, idx]
        tel = self.telemetry
        pending = physics.Pending(
            sample=self.samples[ar, idx], arrival_s=arrival,
            start_s=np.maximum(arrival, self.free), battery_j=self.battery,
            radio_tail_end_s=tel.radio_tail_end, radio=self.radios, rtt_s=self.rtt,
        )  # fmt: skip
        out = physics.requests(
            self.system, self.tables, cut, thr, level, pending,
            upload_end=self._upload_end, serve=self._serve,
        )  # fmt: skip
        # The device's state after the request.
        self.battery -= out.energy_j
        self.free = out.done_s
        sent = np.flatnonzero(out.offloaded)
        if sent.size:
            tel.radio_tail_end[sent] = out.tx_end_s[sent] + self.radios.tail_s[sent]
            tel.cloud_last_use[sent] = out.done_s[sent]
            moved = sent[(out.tx_s[sent] > 0) & (out.sent_bytes[sent] > 0)]
            if moved.size:
                bps = out.sent_bytes[moved] * 8.0 / out.tx_s[moved]
                tel.record_transfers(moved, out.tx_end_s[moved], bps)
            tel.record_answers(sent, self.rtt[sent], out.queue_s[sent])
        tel.last_action = a
        self.index = idx + 1
        info = {
            "latency_s": out.latency_s, "device_s": out.device_s, "network_s": out.network_s,
            "cloud_s": out.cloud_s, "queue_s": out.queue_s, "energy_j": out.energy_j,
            "money_usd": out.money_usd, "sent_bytes": out.sent_bytes.astype(np.int64),
            "exit_block": out.exit_block, "offloaded": out.offloaded, "correct": out.correct,
            "leakage": out.leakage, "deadline_miss": out.deadline_miss,
            "cold_start": out.cold_start, "cut": cut,
        }  # fmt: skip
        obs, terminated, truncated = self._episode_ends(out.done_s, info)
        return obs, out.reward, terminated, truncated, info

    def _upload_end(self, tx_start: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """When each device's ``nbytes`` handed to its link at ``tx_start`` have crossed."""
        return self.bank.finish_time(self.row, self.offset + tx_start, nbytes) - self.offset

    def _serve(self, sent: np.ndarray, tx_end: np.ndarray, cut: np.ndarray):
        """The shared cloud serves the offloaded requests (reaching it at ``tx_end``)."""
        return self.cloud.serve_many(tx_end, cut)

    def _episode_ends(self, done: np.ndarray, info: dict):
        """After each device's request (finished at ``done``): devices whose episode
        goes on wait idle until their next request; those whose episode ended start the
        next one there (``final_obs`` in ``info``). Returns ``(obs, terminated,
        truncated)``."""
        last = self.index >= self.requests_per_episode
        nxt_index = np.minimum(self.index, self.requests_per_episode - 1)
        nxt_arrival = self.arrivals[np.arange(self.num_envs), nxt_index]
        nxt = np.where(last, done, np.maximum(nxt_arrival, done))
        idle_w = self.system.device.idle_power_w
        self.battery = np.where(last, self.battery, self.battery - idle_w * (nxt - done))
        terminated = self.battery <= 0.0
        truncated = last & ~terminated
        ended = terminated | truncated
        # No request reaches the cloud before every device's next decision.
        self.cloud.prune(float(nxt.min()))
        obs = self._observe(nxt, np.where(last, self.index - 1, self.index))
        if ended.any():
            info["final_obs"] = np.where(ended[:, None], obs, 0.0).astype(np.float32)
            info["_final_obs"] = ended.copy()
            info["final_info"] = {"family": np.array(self.families)}
            for d in np.flatnonzero(ended).tolist():
                self._reset_device(d, float(nxt[d]))
            fresh = self._observe(self._decision_times())
            obs = np.where(ended[:, None], fresh, obs)
        return obs, terminated, truncated

    def close_extras(self, **kwargs: Any) -> None:
        self.single.close()


def make_fleet(num_envs: int = 8, **kwargs) -> OffloadFleetEnv:
    """``gymnasium.make_vec``'s vector entry point for ``OffloadFleet-v0``."""
    return OffloadFleetEnv(num_envs, **kwargs)
