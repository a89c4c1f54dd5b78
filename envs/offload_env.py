"""``OffloadEnv``: one step is one inference request on an edge device."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from profiles.catalog import Catalog, Radio
from profiles.profile_io import load_profile
from sim import kernel as K
from sim.devices import Devices, TraceArrays
from sim.scenario import Scenario, load_scenario
from sim.system import Outcome, System
from telemetry.observation import OBS_DIM, OBS_HIGH, OBS_LOW, ObservationContext, Telemetry
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
    ``MultiDiscrete([K + 1, T, L])``, or ``MultiDiscrete([K + 1, T, L, V])`` where the
    scenario lists ``V`` > 1 model variants (``[scenario].variants``; a three-component
    action then runs the first):

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
    ``money_usd``, ``carbon_g`` (grams of CO2e, device and cloud), ``sent_bytes``,
    ``exit_block``, ``offloaded``, ``correct``,
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
        self.nvec = (s.n_cuts, s.n_thresholds, s.n_levels) + (
            (s.n_variants,) if s.n_variants > 1 else ()
        )
        self.action_space = spaces.MultiDiscrete(self.nvec)
        self.observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (OBS_DIM,), np.float32)
        self._w = scenario.workload
        self._contexts = {name: s.observation_context(r) for name, r in s.catalog.radios.items()}
        # The traces' uplinks as each family's radio sees them, one row each; a trace from
        # outside the pool (pinned by ``reset`` or ``restore``) gets a bank of its own.
        uplinks = [self.uplink(t)[0] for t in self.traces]
        self._row_of = {_key(up): r for r, up in enumerate(uplinks)}
        self.bank = TraceArrays(uplinks)
        self._foreign: dict[str, TraceArrays] = {}
        self.devices = Devices(s, self.bank, 1, self._w.episode_requests)
        # What a step reads back, as views made once: the outcome's reported columns and
        # the observation (``sim.kernel``).
        self._reported = self.devices.out[0, : K.N_REPORTED]
        self._observation = self.devices.obs[0, :OBS_DIM]
        self._action = np.zeros((1, 4), dtype=np.int64)
        self._trace: Trace | None = None  # the current episode's uplink, and its radio
        self._radio: Radio | None = None
        self._ended = True  # no episode to step: not reset yet, or it ended

    # -- helpers ---------------------------------------------------------------------
    def uplink(self, trace: Trace) -> tuple[Trace, Radio]:
        """The trace as the family's radio sees it: uplink ratio, cap, RTT."""
        radio = self.system.radio(trace.family)
        key = _key(trace)
        up = self._uplinks.get(key)
        if up is None:
            up = radio.uplink(trace)
            self._uplinks[key] = up
        return up, radio

    def decision_time(self) -> float:
        """When the current request is decided: its arrival, or when the device
        finishes the previous one if that is later."""
        dev = self.devices
        arrival = dev.arrivals[0, dev.ints[0, K.I_INDEX]]
        free = dev.fs[0, K.D_FREE]
        return float(arrival if arrival > free else free)

    def observe(self) -> np.ndarray:
        """The current request's observation, as ``reset`` or ``step`` returned it (for
        planners that ``restore`` a snapshot and then follow a policy)."""
        return self.devices.observe()[0, :OBS_DIM].copy()

    @property
    def telemetry(self) -> Telemetry:
        """What the device has measured (a copy; times from the episode's start; assign
        one to change it)."""
        return self.devices.telemetry(0)

    @telemetry.setter
    def telemetry(self, telemetry: Telemetry) -> None:
        self.restore((self.state, telemetry))

    def reload_system(self) -> None:
        """Rebuild the arrays the simulator reads from ``self.system``, after its tables
        were changed in place (a what-if study, a test)."""
        self.devices.reload_tables()

    @property
    def state(self) -> EpisodeState | None:
        """The episode's state (a copy): the trace and radio, the requests' arrivals
        and samples, the battery, the clock, the radio tail and the cloud's last use."""
        if self._trace is None:
            return None
        dev = self.devices
        fs, ints = dev.fs[0], dev.ints[0]
        return EpisodeState(
            trace=self._trace, radio=self._radio, offset_s=float(fs[K.D_OFFSET]),
            arrivals=dev.arrivals[0].tolist(), samples=dev.samples[0].astype(int).tolist(),
            battery_j=float(fs[K.D_BATTERY]), context=self._contexts[self._radio.name],
            index=int(ints[K.I_INDEX]), free_s=float(fs[K.D_FREE]),
            radio_tail_end_s=float(fs[K.D_TAIL_END]),
            cloud_last_use_s=float(fs[K.D_CLOUD_LAST]),
        )  # fmt: skip

    @state.setter
    def state(self, state: EpisodeState) -> None:
        self.restore((state, self.telemetry))

    def snapshot(self) -> tuple[EpisodeState, Telemetry]:
        """A copy of everything ``step`` changes (the episode's state and the device's
        telemetry), for planners that try an action sequence and come back."""
        return self.state, self.telemetry

    def restore(self, snapshot: tuple[EpisodeState, Telemetry]) -> None:
        """Go back to a ``snapshot`` (or to one a planner edited: another trace, other
        arrivals or samples); the snapshot stays usable for the next restore."""
        state, telemetry = snapshot
        tel = copy.deepcopy(telemetry)
        tel.radio_tail_end_s, tel.last_cloud_use_s = state.radio_tail_end_s, state.cloud_last_use_s
        self._load(state.trace, state.radio, state.offset_s, state.arrivals, state.samples,
                   state.battery_j, tel)  # fmt: skip
        dev = self.devices
        dev.ints[0, K.I_INDEX] = state.index
        dev.fs[0, K.D_FREE] = state.free_s
        self._ended = state.index >= len(state.arrivals) or state.battery_j <= 0.0

    @property
    def episode_requests(self) -> int:
        return self._w.episode_requests

    def row_of(self, up: Trace) -> int | None:
        """The row of an uplink in ``bank``; ``None`` for a trace outside the pool."""
        row = self._row_of.get(_key(up))
        return row if row is not None and self.bank.traces[row] is up else None

    def _load(self, up: Trace, radio: Radio, offset_s: float, arrivals, samples,
              battery_j: float, telemetry: Telemetry) -> None:  # fmt: skip
        """Start the device on ``up`` (an uplink) with these requests and telemetry."""
        row = self.row_of(up)
        if row is None:
            bank = self._foreign.get(_key(up))
            if bank is None or bank.traces[0] is not up:
                bank = self._foreign[_key(up)] = TraceArrays([up])
            row = 0
        else:
            bank = self.bank
        self.devices.traces = bank
        self._trace, self._radio = up, radio
        self.devices.load(
            0, row=row, radio=radio, context=self._contexts[radio.name], offset_s=offset_s,
            arrivals=arrivals, samples=samples, battery_j=battery_j, telemetry=telemetry,
        )  # fmt: skip
        self._ended = battery_j <= 0.0

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
        arrivals = np.cumsum(gaps)
        samples = rng.integers(self.system.n_samples, size=n)
        b = self.scenario.battery
        level = float(rng.uniform(b.initial_min, b.initial_max))
        if options and "battery_level" in options:
            level = float(options["battery_level"])
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
        self._load(up, radio, offset, arrivals, samples, level * self.system.battery_capacity_j,
                   tel)  # fmt: skip
        return self.observe(), {"family": trace.family, "trace": trace.name}

    def step(self, action):
        if self._ended:
            if self._trace is None:
                raise RuntimeError("call reset() before step()")
            raise RuntimeError("the episode has ended (truncated or terminated): call reset()")
        dev = self.devices
        cut, thr, level, variant = self.check_action(action)
        # ``dev.step``, its arguments bound once
        K.step_one(*dev.private_args, cut, thr, level, variant)
        # The outcome's first columns are what a step reports, in this order (``sim.kernel``).
        (latency, wait, device_s, network, cloud, energy, money, carbon, sent, exit_block,
         offloaded, correct, expected, leakage, miss, cold, battery, uplink, arrival_uplink,
         reward, terminated, truncated) = self._reported.tolist()  # fmt: skip
        self._ended = terminated > 0.0 or truncated > 0.0
        info = {
            "latency_s": latency,
            "wait_s": wait,
            "device_s": device_s,
            "network_s": network,
            "cloud_s": cloud,
            "energy_j": energy,
            "money_usd": money,
            "carbon_g": carbon,
            "sent_bytes": int(sent),
            "exit_block": int(exit_block),
            "offloaded": offloaded > 0.0,
            "correct": correct > 0.0,
            "accuracy_expected": expected,
            "leakage": leakage,
            "deadline_miss": miss > 0.0,
            "cold_start": cold > 0.0,
            "battery_level": battery,
            "uplink_bps": uplink,
            "arrival_uplink_bps": arrival_uplink,
            "family": self._trace.family,
            "variant": variant,
        }
        return self._observation.copy(), reward, terminated > 0.0, truncated > 0.0, info

    # -- simulation ------------------------------------------------------------------
    def check_action(self, action) -> tuple[int, int, int, int]:
        """Validate an action; returns ``(cut, threshold, level, variant)`` or raises
        ``ValueError`` naming the bad component. Each component must be an integer
        (Python or numpy): ``1.7``, ``inf`` or a string is refused, never rounded.
        Where a cut offers fewer levels than the space's most (a learned bottleneck adds
        levels at its cut only), a level beyond them means the cut's last, most
        compressed one: every point of the space is a valid action, as Gymnasium
        expects; ``envs.wrappers.env_actions`` lists each distinct one once. Where the
        scenario offers model variants the action has a fourth component; three
        components run the scenario's first variant."""
        s = self.system
        if type(action) is np.ndarray and action.shape == (3,) and action.dtype.kind in "iu":
            cut, thr, level = action.tolist()  # the common case, from a sampler or a policy
            if 0 <= cut < s.n_cuts and 0 <= thr < s.n_thresholds and 0 <= level < s.n_levels:
                if cut < s.k and level >= s.levels_by_cut[cut]:
                    level = s.levels_by_cut[cut] - 1  # see ``check_action``
                return cut, thr, level, 0
        values = action.tolist() if isinstance(action, np.ndarray) else action
        if isinstance(values, list) and len(values) == 1 and isinstance(values[0], list):
            values = values[0]  # a batch of one, as SB3's predict returns
        names = ("cut", "threshold", "level", "variant")[: len(self.nvec)]
        if (
            isinstance(values, str | bytes)
            or not isinstance(values, list | tuple)
            or len(values) not in (3, len(self.nvec))
        ):
            raise ValueError(
                f"action must be {len(self.nvec)} integers ({', '.join(names)}), got {action!r}"
            )
        checked = []
        for name, value, n in zip(names, values, self.nvec[: len(values)], strict=False):
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
                raise ValueError(f"action {name}={value!r} is not an integer")
            if not 0 <= value < n:
                raise ValueError(f"action {name}={value} out of range 0..{n - 1}")
            checked.append(int(value))
        cut, thr, level = checked[:3]
        if cut < s.k and level >= s.levels_by_cut[cut]:
            level = s.levels_by_cut[cut] - 1
        return cut, thr, level, checked[3] if len(checked) == 4 else 0

    def simulate(self, cut: int, thr: int, level: int, variant: int = 0) -> Outcome:
        """What the current request would do under an action (``sim.kernel``). Pure:
        changes nothing, so the oracle can ask it about every action."""
        if not 0 <= variant < self.system.n_variants:  # the kernel reads rows by it
            raise ValueError(f"variant={variant} out of range 0..{self.system.n_variants - 1}")
        act = self._action
        act[0, 0], act[0, 1], act[0, 2], act[0, 3] = cut, thr, level, variant
        o = self.devices.outcomes(act)[0].tolist()
        return Outcome(
            latency_s=o[K.O_LATENCY], wait_s=o[K.O_WAIT], device_s=o[K.O_DEVICE],
            network_s=o[K.O_NETWORK], cloud_s=o[K.O_CLOUD], energy_j=o[K.O_ENERGY],
            money_usd=o[K.O_MONEY], carbon_g=o[K.O_CARBON], sent_bytes=int(o[K.O_SENT]),
            exit_block=int(o[K.O_EXIT_BLOCK]), offloaded=o[K.O_OFFLOADED] > 0.0,
            correct=o[K.O_CORRECT] > 0.0, leakage=o[K.O_LEAKAGE], cold_start=o[K.O_COLD] > 0.0,
            deadline_miss=o[K.O_MISS] > 0.0, reward=o[K.O_REWARD], tail_j=o[K.O_TAIL_J],
            done_s=o[K.O_DONE], tx_start_s=o[K.O_TX_START], tx_end_s=o[K.O_TX_END],
            radio_tail_end_s=o[K.O_TAIL_END], credit=o[K.O_CREDIT], expected=o[K.O_EXPECTED],
        )  # fmt: skip


def _key(trace: Trace) -> str:
    return f"{trace.family}/{trace.name}"
