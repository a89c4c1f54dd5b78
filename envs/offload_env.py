"""``OffloadEnv``: one step is one inference request on an edge device."""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from profiles.catalog import Catalog, Radio
from profiles.profile_io import load_profile
from sim import physics
from sim.scenario import Scenario, load_scenario
from sim.system import Outcome, System
from telemetry.observation import (
    OBS_DIM,
    OBS_HIGH,
    OBS_LOW,
    ObservationContext,
    Telemetry,
    build_observation,
)
from traces.sets import group_by_family, load_families
from traces.trace import Trace, TraceError


@lru_cache(maxsize=8)
def _cached_profile(path: str):
    return load_profile(path)


@lru_cache(maxsize=8)
def _cached_traces(source: str, split: str | None) -> tuple[Trace, ...]:
    found, _ = load_families(source, split=split)
    return tuple(t for family in sorted(found) for t in found[family])


@dataclass
class EpisodeState:
    """What changes during an episode. Times are seconds since the episode began;
    the trace is read at ``offset_s + t``."""

    trace: Trace  # the uplink as the radio sees it (scaled, capped, with RTT)
    radio: Radio
    offset_s: float
    arrivals: list[float]
    samples: list[int]
    battery_j: float
    context: ObservationContext
    index: int = 0  # the request being decided
    free_s: float = 0.0  # when the device finishes its previous request
    radio_tail_end_s: float = -math.inf
    cloud_last_use_s: float = -math.inf


class OffloadEnv(gym.Env):
    """Split inference of a multi-exit network between an edge device and the cloud.

    ## Description
    Requests arrive at the device (Poisson or periodic). For each, the controller
    chooses where to cut the network, how confident a device-side early exit must be,
    and how to compress what is sent. The device runs blocks ``1..cut``, checking each
    exit on the way against the threshold with the real confidence that the drawn test
    sample had in the measured profile. If none fires, the encoded tensor crosses the
    uplink (bytes integrated over a real bandwidth trace from the current clock, plus
    RTT), the cloud runs the tail (plus a cold start on a FaaS offer whose keep-alive
    window ran out), and the answer comes back. Requests queue while the device is busy.

    ## Action space
    ``MultiDiscrete([K + 1, T, L])``:

    * ``cut`` in ``0..K``: blocks run on the device (0: send the raw input; K: all local,
      the final exit answers);
    * ``threshold`` index into the scenario's grid (default
      ``(0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)``; a value above 1 disables early exits,
      which also saves the exits' compute);
    * ``level`` of compression ``0..L-1`` (see ``profiles.codecs``): raw/PNG/JPEG at cut
      0, fp32/fp16/int8/int8+zlib/int4+zlib elsewhere, and learned bottlenecks at the
      cuts that have them (``L`` is the most any cut offers; beyond a cut's own levels,
      its last one). Where the request ends on the device (an exit fired, or cut K),
      the level has no effect.

    ## Observation space
    ``Box(-10, 10, (17,), float32)`` from ``telemetry.observation.build_observation``: the
    device's own recent upload throughputs (log10 Mbit/s) and the age of the newest,
    its RTT estimate, battery level, lateness and queue of the current request, its last
    action, the radio's remaining high-power tail, time since it last used the cloud,
    the deadline, and its radio's tail time and power. Nothing the device could not
    know itself.

    ## Rewards
    Per request, with the scenario's weights (``sim.scenario.RewardWeights``)::

        r = accuracy * correct - latency * min(L / D, 4) - deadline_miss * [L > D]
            - energy * (1 + energy_battery_gain * (1 - battery)) * E / E_ref
            - money * C / C_ref - leakage * leak

    ``L`` latency from arrival to answer, ``D`` deadline, ``E`` device energy of the
    request (compute, radio transmit and tail, idle while waiting), ``E_ref`` battery
    capacity / ``requests_per_charge``, ``C`` money (cloud compute and cellular data),
    ``C_ref`` = ``money_ref_usd``, ``leak`` the measured leakage of what was sent (0 when
    nothing was sent). Each term is 1 at its reference, so the weights compare directly.

    ## Starting state
    A trace family, then a trace of it, are drawn uniformly; the trace starts at a random
    offset; the battery at a uniform fraction in ``[initial_min, initial_max]``; the
    device has one fresh throughput sample from a transfer just before the episode.

    ``reset(options=...)`` may pin ``trace``, ``offset_s`` and ``battery_level``, and
    give the device's starting ``telemetry`` (a ``telemetry.observation.Telemetry``
    with times relative to the episode's start) instead of the default fresh sample.

    ## Episode end
    ``terminated`` when the battery is empty; ``truncated`` after
    ``workload.episode_requests`` requests.

    ## Arguments
    * ``scenario``: a ``Scenario``, a path to a scenario TOML file, or ``None`` (default).
    * ``traces``: a list of ``Trace`` (downlink capacity), or ``None`` for the scenario's
      default source (``trace_source``, ``trace_split``).
    * ``trace_source``: ``auto`` | ``shared`` | ``builtin`` | ``synthetic``.
    * ``trace_split``: ``train`` | ``val`` | ``test`` | ``None`` (all).
    * ``sample_split``: profile split the images are drawn from (default: the scenario's).
    * ``episode_requests``: overrides the scenario's episode length.
    * ``accuracy_credit``: ``realized`` (default: the reward credits whether this
      image's answer was right) or ``expected`` (for training: the accuracy of answers
      at that exit and confidence, calibrated on the same split; same objective in
      expectation, far less noise). ``info["correct"]`` is always the realized outcome.
    * ``catalog``: a ``profiles.catalog.Catalog`` to use instead of the scenario's file
      (for example one with an extra cloud that describes a local test server).

    ``info`` of every step carries the request's metrics: ``latency_s``, ``energy_j``,
    ``money_usd``, ``sent_bytes``, ``exit_block``, ``offloaded``, ``correct``,
    ``accuracy_expected`` (the calibrated accuracy of answers at that exit and
    confidence, what a policy blind to labels can count on), ``leakage``,
    ``deadline_miss``, ``cold_start``, ``battery_level``, the true uplink rate at the
    decision ``uplink_bps`` and at the request's arrival ``arrival_uplink_bps``
    (policy-independent), and the ``family`` of the trace.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: Scenario | str | Path | None = None,
        traces: list[Trace] | None = None,
        *,
        trace_source: str = "auto",
        trace_split: str | None = "train",
        sample_split: str | None = None,
        episode_requests: int | None = None,
        accuracy_credit: str = "realized",
        catalog: Catalog | None = None,
    ) -> None:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if sample_split is not None or episode_requests is not None:
            workload = scenario.workload
            if sample_split is not None:
                workload = type(workload)(**{**workload.__dict__, "sample_split": sample_split})
            if episode_requests is not None:
                if episode_requests < 1:
                    raise ValueError(f"episode_requests must be >= 1, got {episode_requests}")
                workload = type(workload)(
                    **{**workload.__dict__, "episode_requests": int(episode_requests)}
                )
            scenario = scenario.with_updates(workload=workload)
        self.scenario = scenario
        self.system = System(
            scenario,
            profile=_cached_profile(scenario.profile),
            catalog=catalog,
            accuracy_credit=accuracy_credit,
        )
        if traces is None:
            traces = list(_cached_traces(trace_source, trace_split))
        if not traces:
            raise TraceError("OffloadEnv needs at least one trace")
        self.traces: tuple[Trace, ...] = tuple(traces)  # the episodes' pool, by family
        self._by_family = group_by_family(traces)
        self._families = sorted(self._by_family)
        self._uplinks: dict[str, Trace] = {}
        s = self.system
        self.action_space = spaces.MultiDiscrete([s.n_cuts, s.n_thresholds, s.n_levels])
        self.observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (OBS_DIM,), np.float32)
        self._w = scenario.workload
        self._contexts = {name: s.observation_context(r) for name, r in s.catalog.radios.items()}
        # Looked up once: ``step`` runs hundreds of thousands of times per training run.
        self._idle_w = s.device.idle_power_w
        self._probe_interval_s = scenario.probe.interval_s
        self._deadline_s = self._w.deadline_s
        self.state: EpisodeState | None = None
        self.telemetry = Telemetry()

    # -- helpers ---------------------------------------------------------------------
    def uplink(self, trace: Trace) -> tuple[Trace, Radio]:
        """The trace as the family's radio sees it: uplink ratio, cap, RTT."""
        radio = self.system.radio(trace.family)
        key = f"{trace.family}/{trace.name}"
        up = self._uplinks.get(key)
        if up is None:
            up = radio.uplink(trace)
            self._uplinks[key] = up
        return up, radio

    def decision_time(self) -> float:
        """When the current request is decided: its arrival, or when the device
        finishes the previous one if that is later."""
        st = self.state
        arrival = st.arrivals[st.index]
        return arrival if arrival > st.free_s else st.free_s

    def _observe(self, now: float | None = None) -> np.ndarray:
        st = self.state
        arrival = st.arrivals[st.index]
        if now is None:
            now = self.decision_time()
        # Requests that arrived by ``now`` and wait behind the current one.
        queue = bisect_right(st.arrivals, now, st.index + 1) - st.index - 1
        self.telemetry.battery_level = physics.battery_level(self.system, st.battery_j)
        return build_observation(self.telemetry, now, now - arrival, queue, st.context)

    def observe(self) -> np.ndarray:
        """The current request's observation, as ``reset`` or ``step`` returned it (for
        planners that ``restore`` a snapshot and then follow a policy)."""
        return self._observe()

    def snapshot(self) -> tuple[EpisodeState, Telemetry]:
        """A copy of everything ``step`` changes (the episode's state and the device's
        telemetry), for planners that try an action sequence and come back."""
        return replace(self.state), copy.deepcopy(self.telemetry)

    def restore(self, snapshot: tuple[EpisodeState, Telemetry]) -> None:
        """Go back to a ``snapshot``; the snapshot stays usable for the next restore."""
        state, telemetry = snapshot
        self.state, self.telemetry = replace(state), copy.deepcopy(telemetry)

    # -- the Gymnasium API -----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        family = self._families[int(rng.integers(len(self._families)))]
        candidates = self._by_family[family]
        trace = candidates[int(rng.integers(len(candidates)))]
        if options and "trace" in options:  # evaluation pins the trace and offset
            trace = options["trace"]
        up, radio = self.uplink(trace)
        offset = float(rng.uniform(0.0, up.duration_s))
        if options and "offset_s" in options:
            offset = float(options["offset_s"])
        n = self._w.episode_requests
        if self._w.arrival == "poisson":
            gaps = rng.exponential(1.0 / self._w.rate_hz, n)
        else:
            gaps = np.full(n, 1.0 / self._w.rate_hz)
        arrivals = np.cumsum(gaps).tolist()
        samples = rng.integers(self.system.n_samples, size=n).tolist()
        b = self.scenario.battery
        level = float(rng.uniform(b.initial_min, b.initial_max))
        if options and "battery_level" in options:
            level = float(options["battery_level"])
        self.state = EpisodeState(
            up, radio, offset, arrivals, samples, level * self.system.battery_capacity_j,
            self._contexts[radio.name],
        )  # fmt: skip
        if options and "telemetry" in options:
            # What a real device measured before the episode (sim-to-real comparisons),
            # its times already relative to the episode's start.
            tel = copy.deepcopy(options["telemetry"])
            tel.battery_level = level
        else:
            # The device starts with one fresh sample: a transfer just before the
            # episode; its bytes are what the link carried in the second before.
            tel = Telemetry(rtt_est_s=radio.rtt_s, battery_level=level)
            tel.record_transfer(0.0, max(up.bytes_between(offset - 1.0, offset), 1.0), 1.0)
        self.telemetry = tel
        st = self.state
        st.radio_tail_end_s, st.cloud_last_use_s = tel.radio_tail_end_s, tel.last_cloud_use_s
        return self._observe(), {"family": trace.family, "trace": trace.name}

    def step(self, action):
        st = self.state
        if st is None:
            raise RuntimeError("call reset() before step()")
        if st.index >= len(st.arrivals) or st.battery_j <= 0.0:
            raise RuntimeError("the episode has ended (truncated or terminated): call reset()")
        cut, thr, level = self.check_action(action)
        index = st.index
        arrivals = st.arrivals
        arrival = arrivals[index]
        now = arrival if arrival > st.free_s else st.free_s
        tel = self.telemetry
        battery_level = tel.battery_level  # set by the last observation
        out = self.simulate(cut, thr, level)
        energy, money = out.energy_j, out.money_usd
        st.battery_j -= energy
        st.free_s = done = out.done_s
        trace = st.trace
        if out.offloaded:
            st.radio_tail_end_s = tel.radio_tail_end_s = out.radio_tail_end_s
            st.cloud_last_use_s = tel.last_cloud_use_s = done
            tel.record_transfer(out.tx_end_s, out.sent_bytes, out.tx_end_s - out.tx_start_s)
            tel.record_rtt(trace.rtt_s)
        tel.last_action = (cut, thr, level)
        at_arrival = trace.rate_at(st.offset_s + arrival)
        info = {
            "latency_s": out.latency_s,
            "wait_s": out.wait_s,
            "device_s": out.device_s,
            "network_s": out.network_s,
            "cloud_s": out.cloud_s,
            "energy_j": energy,
            "money_usd": money,
            "sent_bytes": out.sent_bytes,
            "exit_block": out.exit_block,
            "offloaded": out.offloaded,
            "correct": out.correct,
            "accuracy_expected": out.expected,
            "leakage": out.leakage,
            "deadline_miss": out.deadline_miss,
            "cold_start": out.cold_start,
            "battery_level": battery_level,
            "uplink_bps": at_arrival if now == arrival else trace.rate_at(st.offset_s + now),
            "arrival_uplink_bps": at_arrival,
            "family": trace.family,
        }
        st.index = index = index + 1
        reward = out.reward
        if index >= len(arrivals):  # truncated: observe the state after the last request
            terminated = st.battery_j <= 0.0
            return self._observe_last(), reward, terminated, not terminated, info
        arrival = arrivals[index]
        nxt = arrival if arrival > done else done
        st.battery_j -= self._idle_w * (nxt - done)
        if self._probe_interval_s > 0:
            probe_j, probe_usd = self._probe(done, nxt)
            if probe_j or probe_usd:  # a background probe happened: charge it here
                energy += probe_j
                money += probe_usd
                reward = self.system.reward(
                    out.credit, out.latency_s, energy, money, out.leakage, battery_level
                )
                info["energy_j"], info["money_usd"] = energy, money
        return self._observe(nxt), reward, st.battery_j <= 0.0, False, info

    # -- simulation ------------------------------------------------------------------
    def check_action(self, action) -> tuple[int, int, int]:
        """Validate an action; raises ``ValueError`` naming the bad component. Each of
        the three must be an integer (Python or numpy): ``1.7``, ``inf`` or a string is
        refused, never rounded. Where a cut offers fewer levels than the space's most (a
        learned bottleneck adds levels at its cut only), a level beyond them means the
        cut's last, most compressed one: every point of the space is a valid action, as
        Gymnasium expects; ``envs.wrappers.env_actions`` lists each distinct one once."""
        s = self.system
        if type(action) is np.ndarray and action.shape == (3,) and action.dtype.kind in "iu":
            cut, thr, level = action.tolist()  # the common case, from a sampler or a policy
            if 0 <= cut < s.n_cuts and 0 <= thr < s.n_thresholds and 0 <= level < s.n_levels:
                if cut < s.k and level >= s.levels_by_cut[cut]:
                    level = s.levels_by_cut[cut] - 1  # see ``check_action``
                return cut, thr, level
        values = action.tolist() if isinstance(action, np.ndarray) else action
        if isinstance(values, list) and len(values) == 1 and isinstance(values[0], list):
            values = values[0]  # a batch of one, as SB3's predict returns
        if (
            isinstance(values, str | bytes)
            or not isinstance(values, list | tuple)
            or len(values) != 3
        ):
            raise ValueError(f"action must be 3 integers (cut, threshold, level), got {action!r}")
        checked = []
        for name, value, n in zip(
            ("cut", "threshold", "level"), values, (s.n_cuts, s.n_thresholds, s.n_levels),
            strict=True,
        ):  # fmt: skip
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
                raise ValueError(f"action {name}={value!r} is not an integer")
            if not 0 <= value < n:
                raise ValueError(f"action {name}={value} out of range 0..{n - 1}")
            checked.append(int(value))
        cut, thr, level = checked
        if cut < s.k and level >= s.levels_by_cut[cut]:
            level = s.levels_by_cut[cut] - 1
        return cut, thr, level

    def simulate(self, cut: int, thr: int, level: int) -> Outcome:
        """What the current request would do under an action (``sim.physics``). Pure:
        changes nothing, so the oracle can ask it about every action."""
        return physics.request(self.system, self.state, cut, thr, level, self._deadline_s)

    def _probe(self, done_s: float, nxt: float) -> tuple[float, float]:
        """A background probe between two requests, if the newest throughput sample is
        older than the probe interval. Returns the probe's (energy, money)."""
        st, s, tel = self.state, self.system, self.telemetry
        probe = self.scenario.probe
        if nxt - tel.last_sample_s < probe.interval_s:
            return 0.0, 0.0
        tp = max(tel.last_sample_s + probe.interval_s, done_s)
        trace, radio, off = st.trace, st.radio, st.offset_s
        tx_end = trace.finish_time(off + tp, probe.bytes) - off
        if tx_end > nxt:
            return 0.0, 0.0  # would still be in flight at the decision: not sent yet
        tx_s = tx_end - tp
        tx_j, tail_j = physics.upload_energy_j(radio, tp, tx_s, probe.bytes, st.radio_tail_end_s)
        energy = tx_j + tail_j
        st.radio_tail_end_s = tel.radio_tail_end_s = tx_end + radio.tail_s
        st.battery_j -= energy
        tel.record_transfer(tx_end, probe.bytes, tx_s)
        return energy, probe.bytes * s.data_usd_per_byte

    def _observe_last(self) -> np.ndarray:
        st = self.state
        st.index -= 1  # the episode is over: observe the state after the last request
        obs = self._observe()
        st.index += 1
        return obs
