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

import math
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from envs.offload_env import OffloadEnv
from sim.cloud import Capacity, SharedCloud, batch_seconds
from sim.scenario import Scenario, ScenarioError, load_scenario
from telemetry.observation import N_TPUT_SAMPLES, OBS_DIM, OBS_HIGH, OBS_LOW
from traces.bank import TraceBank

FLEET_OBS_DIM = OBS_DIM + 1
QUEUE_EWMA = 0.3  # weight of the newest answer in the smoothed server queueing time


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
        """The system's per-sample lists as arrays, indexed ``[..., sample]``."""
        s = self.system
        self.thresholds = np.asarray(s.thresholds, dtype=float)
        self.first_exit = np.asarray(s.first_exit, dtype=np.int64)
        self.exit_ok = np.asarray(s.exit_ok, dtype=bool)
        self.exit_credit = np.asarray(s.exit_credit, dtype=float)
        self.sent = np.asarray(s.sent, dtype=float)
        self.final_ok = np.asarray(s.final_ok, dtype=bool)
        self.final_credit = np.asarray(s.final_credit, dtype=float)
        self.leak = np.asarray(s.leak, dtype=float)
        self.encode_dev = np.asarray(s.encode_dev_s, dtype=float)
        self.block_cum = np.asarray(s.block_cum)
        self.exit_cum = np.asarray(s.exit_cum)
        self.cloud_usd = np.asarray(s.cloud_usd)
        self.last_level = np.asarray([n - 1 for n in s.levels_by_cut] + [s.n_levels - 1])
        w = s._weights
        self._w_acc, self._w_lat, self._w_miss, self._w_energy, self._w_gain = w[:5]
        self._w_money, self._w_leak = w[5], w[6]

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
        self.radio_tail_end = np.full(n, -math.inf)
        self.cloud_last_use = np.full(n, -math.inf)
        self.rtt_est = np.zeros(n)
        self.last_action = np.zeros((n, 3), dtype=np.int64)
        self.tput_time = np.full((n, N_TPUT_SAMPLES), -math.inf)
        self.tput_log = np.full((n, N_TPUT_SAMPLES), -3.0)
        self.tput_inv = np.zeros((n, N_TPUT_SAMPLES))
        self.tput_count = np.zeros(n, dtype=np.int64)
        self.server_queue = np.zeros(n)
        # Per device, its radio's constants (set with its trace).
        for name in ("tail_s", "tail_w", "base_w", "per_mbps_w", "rtt"):
            setattr(self, "_" + name, np.zeros(n))
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
        tel = env.telemetry
        self.radio_tail_end[d] = tel.radio_tail_end_s + start_s
        self.cloud_last_use[d] = tel.last_cloud_use_s + start_s
        self.rtt_est[d] = tel.rtt_est_s
        self.last_action[d] = tel.last_action
        self.tput_time[d] = -math.inf
        self.tput_log[d] = -3.0
        self.tput_inv[d] = 0.0
        self.tput_count[d] = 0
        self.server_queue[d] = 0.0
        for t, bps in tel.tput:
            self._record(np.array([d]), np.array([t + start_s]), np.array([bps]))
        radio = st.radio
        self._tail_s[d], self._tail_w[d] = radio.tail_s, radio.tail_w
        self._base_w[d], self._per_mbps_w[d], self._rtt[d] = (
            radio.base_w, radio.per_mbps_w, trace.rtt_s,
        )  # fmt: skip
        self.families[d] = trace.family

    # -- telemetry, as ``telemetry.observation.Telemetry`` ----------------------------------
    def _record(self, devices: np.ndarray, done_s: np.ndarray, bps: np.ndarray) -> None:
        """A throughput sample of ``bps`` finished at ``done_s`` on each of ``devices``."""
        for buf in (self.tput_time, self.tput_log, self.tput_inv):
            buf[devices, :-1] = buf[devices, 1:]
        self.tput_time[devices, -1] = done_s
        self.tput_log[devices, -1] = np.log10(np.where(bps > 1e3, bps, 1e3) / 1e6)
        self.tput_inv[devices, -1] = 1.0 / np.where(bps > 1.0, bps, 1.0)
        self.tput_count[devices] += 1

    def _decision_times(self) -> np.ndarray:
        arrival = self.arrivals[np.arange(self.num_envs), self.index]
        return np.maximum(arrival, self.free)

    def _observe(self, now: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        s, ctx = self.system, self.single._w
        n = self.num_envs
        idx = self.index if index is None else index
        ar = np.arange(n)
        arrival = self.arrivals[ar, idx]
        # Requests that arrived by ``now`` and wait behind the current one.
        queue = (self.arrivals <= now[:, None]).sum(1) - idx - 1
        queue = np.maximum(queue, 0)
        count = np.minimum(self.tput_count, N_TPUT_SAMPLES)
        logs = self.tput_log
        last = np.where(count > 0, logs[:, -1], -3.0)
        prev = np.where(count > 1, logs[:, -2], last)
        prev2 = np.where(count > 2, logs[:, -3], prev)
        inv_sum = self.tput_inv.sum(1)
        estimate = np.where(count > 0, count / np.where(inv_sum > 0, inv_sum, 1.0), 0.0)
        hmean = np.log10(np.where(estimate > 1e3, estimate, 1e3) / 1e6)
        age = np.where(count > 0, now - self.tput_time[:, -1], 1e4)
        deadline = ctx.deadline_s
        keep_alive = s.cloud.keep_alive_s
        tail_left = self.radio_tail_end - now
        tail_s = self._tail_s
        safe_tail = np.where(tail_s > 0, tail_s, 1.0)
        tail_frac = np.where((tail_s > 0) & (tail_left > 0), tail_left / safe_tail, 0.0)
        if keep_alive > 0:
            since = np.minimum((now - self.cloud_last_use) / keep_alive, 2.0)
        else:
            since = np.full(n, 2.0)
        obs = np.empty((n, FLEET_OBS_DIM), dtype=np.float64)
        obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3] = last, prev, prev2, hmean
        obs[:, 4] = np.log1p(np.maximum(age, 0.0))
        obs[:, 5] = np.minimum(self.rtt_est / deadline, OBS_HIGH)
        obs[:, 6] = np.maximum(self.battery, 0.0) / s.battery_capacity_j
        obs[:, 7] = np.minimum((now - arrival) / deadline, OBS_HIGH)
        obs[:, 8] = np.where(queue < 100, queue / 10.0, OBS_HIGH)
        obs[:, 9] = self.last_action[:, 0] / ((s.n_cuts - 1) or 1)
        obs[:, 10] = self.last_action[:, 1] / ((s.n_thresholds - 1) or 1)
        obs[:, 11] = self.last_action[:, 2] / ((s.n_levels - 1) or 1)
        obs[:, 12] = tail_frac
        obs[:, 13] = since
        obs[:, 14] = math.log10(deadline)
        obs[:, 15] = np.log10(np.where(tail_s > 0.01, tail_s, 0.01))
        obs[:, 16] = self._tail_w
        obs[:, 17] = np.minimum(self.server_queue / deadline, OBS_HIGH)
        return obs.astype(np.float32)

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
        a[:, 2] = np.minimum(a[:, 2], self.last_level[a[:, 0]])
        return a

    def step(self, actions):
        if not self._state_ready:
            raise RuntimeError("call reset() before step()")
        a = self.check_actions(actions)
        cut, thr, level = a[:, 0], a[:, 1], a[:, 2]
        n, k = self.num_envs, self.system.k
        ar = np.arange(n)
        idx = self.index
        i = self.samples[ar, idx]
        arrival = self.arrivals[ar, idx]
        start = np.maximum(arrival, self.free)
        early = self.thresholds[thr] <= 1.0
        exit_block = self.first_exit[thr, i]
        exit_block = np.where(exit_block > cut, 0, exit_block)
        local = (exit_block > 0) | (cut == k)
        off = ~local
        battery_level = np.maximum(self.battery, 0.0) / self.system.battery_capacity_j
        dev = self.system.device

        # The device: up to the exit that answered, the whole model, or the cut and the
        # encoder of the level.
        answered = np.where(exit_block > 0, exit_block, k)
        exit_cum_early = np.where(early, 1.0, 0.0)
        local_s = np.where(
            exit_block > 0,
            self.block_cum[exit_block] + self.exit_cum[exit_block],
            self.block_cum[k] + exit_cum_early * self.exit_cum[k - 1]
            + self.system.exit_dev_s[k - 1],
        )  # fmt: skip
        cut_c = np.minimum(cut, k - 1)  # table index; unused where the request is local
        off_s = (self.block_cum[cut] + exit_cum_early * self.exit_cum[cut]
                 + self.encode_dev[cut_c, level])  # fmt: skip
        device_s = np.where(local, local_s, off_s)

        # The uplink and the shared cloud, for the offloaded requests.
        nbytes = np.where(off, self.sent[cut_c, level, i], 0.0)
        tx_start = start + device_s
        rows = self.row
        tx_end = self.bank.finish_time(rows, self.offset + tx_start, nbytes) - self.offset
        tx_s = np.where(off, tx_end - tx_start, 0.0)
        queue_s, service_s = np.zeros(n), np.zeros(n)
        cold = np.zeros(n, dtype=bool)
        sent = np.flatnonzero(off)
        if sent.size:
            q, sv, c = self.cloud.serve_many(tx_end[sent], cut[sent])
            queue_s[sent], service_s[sent], cold[sent] = q, sv, c
        cloud_s = queue_s + service_s
        rtt = self._rtt
        done = np.where(off, tx_end + rtt + cloud_s, start + device_s)
        latency = done - arrival

        # Energy (Huang et al. 2012 for the radio, as ``sim.physics``) and money.
        left = self.radio_tail_end - tx_start
        tail_left_j = np.where(left > 0, self._tail_w * np.minimum(left, self._tail_s), 0.0)
        tail_j = np.where(off, self._tail_w * self._tail_s - tail_left_j, 0.0)
        tx_j = np.where(off & (tx_s > 0), self._base_w * tx_s + self._per_mbps_w * nbytes * 8e-6,
                        0.0)  # fmt: skip
        energy = dev.active_power_w * device_s + np.where(
            off, tx_j + tail_j + dev.idle_power_w * (rtt + cloud_s), 0.0
        )
        money = np.where(off, nbytes * self.system.data_usd_per_byte + self.cloud_usd[cut_c],
                         0.0)  # fmt: skip
        credit = np.where(local, self.exit_credit[answered - 1, i],
                          self.final_credit[cut_c, level, i])  # fmt: skip
        correct = np.where(local, self.exit_ok[answered - 1, i], self.final_ok[cut_c, level, i])
        leakage = np.where(off, self.leak[cut_c, level], 0.0)
        ratio = latency * self.system._inv_deadline
        reward = self._reward(credit, ratio, energy, money, leakage, battery_level)

        # The device's state after the request.
        self.battery -= energy
        self.free = done
        if sent.size:
            self.radio_tail_end[sent] = tx_end[sent] + self._tail_s[sent]
            self.cloud_last_use[sent] = done[sent]
            moved = sent[(tx_s[sent] > 0) & (nbytes[sent] > 0)]
            if moved.size:
                self._record(moved, tx_end[moved], nbytes[moved] * 8.0 / tx_s[moved])
            self.rtt_est[sent] = 0.875 * self.rtt_est[sent] + 0.125 * rtt[sent]
            self.server_queue[sent] = (1 - QUEUE_EWMA) * self.server_queue[sent] + (
                QUEUE_EWMA * queue_s[sent]
            )
        self.last_action = a
        self.index = idx + 1
        info = {
            "latency_s": latency, "device_s": device_s, "network_s": np.where(off, tx_s + rtt, 0.0),
            "cloud_s": cloud_s, "queue_s": queue_s, "energy_j": energy, "money_usd": money,
            "sent_bytes": nbytes.astype(np.int64), "exit_block": np.where(local, answered, 0),
            "offloaded": off, "correct": correct, "leakage": leakage,
            "deadline_miss": ratio > 1.0, "cold_start": cold, "cut": cut,
        }  # fmt: skip

        obs, terminated, truncated = self._episode_ends(done, info)
        return obs, reward, terminated, truncated, info

    def _reward(self, credit, ratio, energy, money, leakage, battery_level) -> np.ndarray:
        """``System.reward`` over arrays (``ratio``: latency over the deadline)."""
        s = self.system
        return (
            self._w_acc * credit
            - self._w_lat * np.minimum(ratio, 4.0)
            - np.where(ratio > 1.0, self._w_miss, 0.0)
            - self._w_energy * (1.0 + self._w_gain * (1.0 - battery_level)) * energy
            * s._inv_energy_ref
            - self._w_money * money * s._inv_money_ref
            - self._w_leak * leakage
        )  # fmt: skip

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
