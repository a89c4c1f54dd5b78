"""N devices' state in arrays, and their step through the compiled kernel.

``Devices`` is what ``Offload-v0`` (N = 1) and ``OffloadFleet-v0`` (N devices) hold:
the system's tables (``SystemArrays``), the traces the devices may be on
(``TraceArrays``), each device's state (clock, battery, radio, telemetry, arrivals,
samples) and its action, stepped by ``sim.kernel``. ``load`` starts a device's
episode; ``outcomes`` says what the current requests would do under some actions
(nothing changes); ``step`` does them and returns the next observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import formulas, kernel
from sim.kernel import (
    D_BASE_W,
    D_BATTERY,
    D_CLOUD_LAST,
    D_CONTEXT,
    D_ESTIMATE,
    D_FREE,
    D_INVERSES,
    D_LOGS,
    D_OFFSET,
    D_PER_MBPS_W,
    D_RATES,
    D_RTT,
    D_RTT_EST,
    D_TAIL_END,
    D_TAIL_S,
    D_TAIL_W,
    D_TIMES,
    I_CUT,
    I_LVL,
    I_ROW,
    I_SAMPLES,
    I_THR,
    N_DEVICE_FLOATS,
    N_DEVICE_INTS,
    N_OUT,
    O_CLOUD,
    O_COLD,
    O_CUT,
    O_FN_CALL,
    O_OFFLOADED,
    O_QUEUE,
    O_TX_END,
    O_VM,
    OBS_COLUMNS,
)
from sim.system import System
from telemetry.observation import N_CONTEXT, N_TPUT_SAMPLES, ObservationContext, Telemetry
from traces.trace import Trace


@dataclass(frozen=True)
class SystemArrays:
    """A ``System``'s tables packed as ``sim.kernel`` reads them (its ``K_*``, ``S_*``,
    ``P_*``, ``X_*`` and ``Y_*`` indices)."""

    small: np.ndarray  # per cut / threshold, the constants, per variant its device rows
    per_level: np.ndarray  # [P_*, cut, level]
    first_exit: np.ndarray  # [variant, sample, threshold]: the first early exit that fires
    exits: np.ndarray  # [variant, block - 1, sample, X_*]
    finals: np.ndarray  # [variant, cut, level, sample, Y_*]
    last_level: np.ndarray  # per cut, its last level (a level beyond a cut's own means it)


def system_arrays(s: System) -> SystemArrays:
    consts = np.zeros(kernel.N_CONSTS)
    scenario = s.scenario
    consts[kernel.K_K] = s.k
    consts[kernel.K_ACTIVE_W] = s.device.active_power_w
    consts[kernel.K_IDLE_W] = s.device.idle_power_w
    consts[kernel.K_USD_PER_BYTE] = s.data_usd_per_byte
    consts[kernel.K_BATTERY_J] = s.battery_capacity_j
    consts[kernel.K_IS_FAAS] = 1.0 if s.is_faas else 0.0
    consts[kernel.K_COLD_START_S] = s.cloud.cold_start_s
    consts[kernel.K_KEEP_ALIVE_S] = s.cloud.keep_alive_s
    consts[kernel.K_DEADLINE_S] = scenario.workload.deadline_s
    consts[kernel.K_PROBE_INTERVAL_S] = scenario.probe.interval_s
    consts[kernel.K_PROBE_BYTES] = scenario.probe.bytes
    consts[kernel.K_DEVICE_G_PER_J] = s.device_g_per_j
    consts[kernel.K_REWARD :] = s.reward.weights
    rows = {
        kernel.S_CLOUD_TAIL: s.cloud_tail_s,
        kernel.S_CLOUD_USD: s.cloud_usd,
        kernel.S_CLOUD_CARBON: s.cloud_carbon_g,
        kernel.S_THRESHOLDS: s.thresholds,
        kernel.S_CONSTS: consts,
        **hybrid_rows(s),
    }
    for v, vs in enumerate(s.variant_systems):
        first = kernel.S_DEVICE + kernel.N_DEVICE_ROWS * v
        rows[first + kernel.V_BLOCK_CUM] = vs.block_cum
        rows[first + kernel.V_EXIT_CUM] = vs.exit_cum
        rows[first + kernel.V_EXIT_DEV] = vs.exit_dev_s
    small = np.zeros((len(rows), max(len(v) for v in rows.values())))
    for r, values in rows.items():
        small[r, : len(values)] = values

    def stack(*tables, axis: int = 0) -> np.ndarray:
        arrays = [np.asarray(t, dtype=np.float64) for t in tables]
        return np.ascontiguousarray(np.stack(arrays, axis=axis))

    variants = s.variant_systems
    return SystemArrays(
        small=small,
        per_level=stack(s.encode_dev_s, s.leak),
        first_exit=np.ascontiguousarray(
            np.stack([np.asarray(v.first_exit, dtype=np.int64).T for v in variants])
        ),
        exits=stack(*[stack(v.exit_ok, v.exit_credit, v.exit_expected, axis=-1) for v in variants]),
        finals=stack(
            *[
                stack(v.sent, v.final_ok, v.final_credit, v.final_expected, axis=-1)
                for v in variants
            ]
        ),
        last_level=np.asarray([n - 1 for n in s.levels_by_cut] + [s.n_levels - 1]),
    )


def hybrid_rows(s: System) -> dict[int, list[float]]:
    """A hybrid cloud's rows of ``small`` (``kernel.S_HYBRID`` and the tables after it);
    empty rows (all zeros once padded) without one."""
    h = s.hybrid
    if h is None:
        return {r: [] for r in (kernel.S_HYBRID, kernel.S_VM_CUM, kernel.S_FN_TAIL, kernel.S_SPLIT)}
    v, f = h.vm, h.functions
    consts = {
        kernel.H_ON: 1.0,
        kernel.H_N_THRESHOLDS: s.n_thresholds,
        kernel.H_VM_OVERHEAD_S: v.overhead_s,
        kernel.H_VM_PRICE_PER_S: v.price_per_s,
        kernel.H_VM_UTILISATION: v.utilisation,
        kernel.H_VM_WATTS: v.watts,
        kernel.H_VM_PUE: v.pue,
        kernel.H_VM_G_PER_J: h.vm_g_per_j,
        kernel.H_FN_GRANULARITY_S: f.billing_granularity_s,
        kernel.H_FN_PRICE_PER_REQUEST: f.price_per_request,
        kernel.H_FN_PRICE_PER_GB_S: f.price_per_gb_s,
        kernel.H_FN_MEMORY_GB: f.memory_gb,
        kernel.H_FN_WATTS: f.watts,
        kernel.H_FN_PUE: f.pue,
        kernel.H_FN_G_PER_J: h.fn_g_per_j,
    }
    return {
        kernel.S_HYBRID: [consts[i] for i in range(len(consts))],
        kernel.S_VM_CUM: h.vm_cum.tolist(),
        kernel.S_FN_TAIL: h.fn_tail_s.tolist(),
        kernel.S_SPLIT: h.split.ravel().tolist(),
    }


class TraceArrays:
    """Traces stacked as padded rows for ``traces.queries`` on a row:
    ``tr[R_STARTS | R_CUM | R_RATES, row]`` (segment starts then +inf, cumulative bytes
    then the total, rates then 0) and ``tr[R_META, row, M_SEGMENTS | M_DURATION]``."""

    def __init__(self, traces: list[Trace] | tuple[Trace, ...]) -> None:
        if not traces:
            raise ValueError("TraceArrays needs at least one trace")
        self.traces = tuple(traces)
        width = max(t.n_segments for t in traces)
        self.tr = np.zeros((4, len(traces), width + 1))
        self.tr[kernel.R_STARTS] = np.inf
        for r, t in enumerate(traces):
            m = t.n_segments
            self.tr[kernel.R_STARTS, r, : m + 1] = t._starts
            self.tr[kernel.R_CUM, r, : m + 1] = t._cum
            self.tr[kernel.R_CUM, r, m + 1 :] = t._cum[-1]
            self.tr[kernel.R_RATES, r, :m] = t._rates
            self.tr[kernel.R_META, r, kernel.M_SEGMENTS] = m
            self.tr[kernel.R_META, r, kernel.M_DURATION] = t.duration_s

    def __len__(self) -> int:
        return len(self.traces)


class Devices:
    """``n`` devices of ``system`` on ``traces`` (their uplinks as the radios see them),
    ``episode_requests`` requests an episode. ``cloud``: a ``sim.cloud.SharedCloud``
    the devices share, or ``None``: each has the cloud to itself."""

    def __init__(
        self, system: System, traces: TraceArrays, n: int, episode_requests: int, cloud=None
    ) -> None:
        self.system, self.cloud = system, cloud
        self.tables = system_arrays(system)
        self.n, self.requests = n, episode_requests
        self.fs = np.zeros((n, N_DEVICE_FLOATS))
        self.ints = np.zeros((n, N_DEVICE_INTS), dtype=np.int64)
        self.requests = np.zeros((2, n, episode_requests))  # ``kernel.Q_*``
        self.arrivals, self.samples = (
            self.requests[kernel.Q_ARRIVAL],
            self.requests[kernel.Q_SAMPLE],
        )
        # The action each device's current request is served under (``I_ACT_*``): cut,
        # threshold, level and model variant.
        self.actions = self.ints[:, kernel.I_ACT_CUT : kernel.I_ACT_VARIANT + 1]
        self.out = np.zeros((n, N_OUT))
        self.obs = np.zeros((n, OBS_COLUMNS), dtype=np.float32)
        self.traces = traces

    def reload_tables(self) -> None:
        """Rebuild the system's arrays (after its tables were changed in place)."""
        self.tables = system_arrays(self.system)
        self.traces = self._traces

    @property
    def traces(self) -> TraceArrays:
        return self._traces

    @traces.setter
    def traces(self, traces: TraceArrays) -> None:
        self._traces = traces
        t = self.tables
        # ``kernel.step_private``'s arguments, bound once: a step of one device is a few
        # microseconds, and building the call is part of it.
        self.private_args = (
            t.small,
            t.per_level,
            t.first_exit,
            t.exits,
            t.finals,
            traces.tr,
            self.fs,
            self.ints,
            self.requests,
            self.out,
            self.obs,
        )

    # -- a device's episode --------------------------------------------------------------
    def load(
        self,
        d: int,
        *,
        row: int,
        radio,
        context: ObservationContext,
        offset_s: float,
        arrivals,
        samples,
        battery_j: float,
        telemetry: Telemetry,
        start_s: float = 0.0,
    ) -> None:
        """Device ``d`` starts an episode at ``start_s`` on trace ``row`` (read at
        ``offset_s`` + episode time), knowing ``telemetry`` (times relative to the
        episode's start)."""
        fs, ints, tel = self.fs[d], self.ints[d], telemetry
        up = self.traces.traces[row]
        fs[:] = 0.0
        fs[D_FREE], fs[D_BATTERY], fs[D_OFFSET] = start_s, battery_j, offset_s - start_s
        fs[D_TAIL_END] = tel.radio_tail_end_s + start_s
        fs[D_CLOUD_LAST] = tel.last_cloud_use_s + start_s
        fs[D_RTT_EST], fs[D_ESTIMATE] = tel.rtt_est_s, tel.estimate_bps
        fs[D_BASE_W], fs[D_PER_MBPS_W] = radio.base_w, radio.per_mbps_w
        fs[D_TAIL_W], fs[D_TAIL_S], fs[D_RTT] = radio.tail_w, radio.tail_s, up.rtt_s
        ints[:] = 0
        ints[I_ROW], ints[I_SAMPLES] = row, tel.n_samples
        ints[I_CUT], ints[I_THR], ints[I_LVL] = tel.last_action
        n = N_TPUT_SAMPLES
        fs[D_TIMES : D_TIMES + n] = tel.sample_times + start_s
        fs[D_RATES : D_RATES + n] = tel.sample_bps
        fs[D_LOGS : D_LOGS + n] = tel.sample_logs
        fs[D_INVERSES : D_INVERSES + n] = tel.sample_inverses
        fs[D_CONTEXT : D_CONTEXT + N_CONTEXT] = context.vector
        self.arrivals[d] = np.asarray(arrivals) + start_s
        self.samples[d] = samples

    def copy_from(self, other: Devices, source: int, d: int | None = None) -> None:
        """Device ``d`` (default ``source``) takes device ``source`` of ``other``'s
        state and episode (the same system and traces)."""
        d = source if d is None else d
        self.fs[d], self.ints[d] = other.fs[source], other.ints[source]
        self.requests[:, d] = other.requests[:, source]

    def telemetry(self, d: int, start_s: float = 0.0) -> Telemetry:
        """Device ``d``'s telemetry (times relative to ``start_s``)."""
        fs, ints, n = self.fs[d], self.ints[d], N_TPUT_SAMPLES
        return Telemetry(
            rtt_est_s=float(fs[D_RTT_EST]),
            battery_level=formulas.battery_level(
                float(fs[D_BATTERY]), self.system.battery_capacity_j
            ),
            last_action=(int(ints[I_CUT]), int(ints[I_THR]), int(ints[I_LVL])),
            last_cloud_use_s=float(fs[D_CLOUD_LAST]) - start_s,
            radio_tail_end_s=float(fs[D_TAIL_END]) - start_s,
            sample_times=fs[D_TIMES : D_TIMES + n] - start_s,
            sample_bps=fs[D_RATES : D_RATES + n].copy(),
            sample_logs=fs[D_LOGS : D_LOGS + n].copy(),
            sample_inverses=fs[D_INVERSES : D_INVERSES + n].copy(),
            n_samples=int(ints[I_SAMPLES]),
            estimate_bps=float(fs[D_ESTIMATE]),
        )

    # -- the step -------------------------------------------------------------------------
    def checked(self, actions: np.ndarray, nvec) -> np.ndarray:
        """``actions`` (n x 3 integers, or 4 with the model variant) as the step serves
        them: each component within ``nvec`` (else a ``ValueError`` naming the device
        and the component), a level beyond its cut's own mapped to the cut's last (as
        ``OffloadEnv.check_action``)."""
        a = np.asarray(actions)
        nvec = np.asarray(nvec)
        if a.ndim != 2 or a.shape[1] not in (3, len(nvec)):
            raise ValueError(
                f"actions must be rows of 3 or {len(nvec)} integers (cut, threshold, level"
                f"{', variant' if len(nvec) == 4 else ''}), got shape {a.shape}"
            )
        bad = (a < 0) | (a >= nvec[: a.shape[1]])
        if bad.any():
            d, j = map(int, np.argwhere(bad)[0])
            name = ("cut", "threshold", "level", "variant")[j]
            raise ValueError(
                f"device {d}: action {name}={int(a[d, j])} is outside 0..{int(nvec[j]) - 1}"
            )
        a = a.astype(np.int64, copy=True)
        a[:, 2] = np.minimum(a[:, 2], self.tables.last_level[a[:, 0]])
        return a

    def observe(self) -> np.ndarray:
        """Every device's observation of its current request, ``(n, 18)``."""
        kernel.observe_all(self.tables.small, self.fs, self.ints, self.requests, self.obs)
        return self.obs

    def set_actions(self, actions: np.ndarray) -> None:
        """The actions the devices' current requests are served under: n x 4, or n x 3
        (the scenario's first model variant)."""
        actions = np.asarray(actions)
        width = actions.shape[1]
        self.actions[:, :width] = actions
        if width == 3:
            self.actions[:, 3] = 0

    def outcomes(self, actions: np.ndarray) -> np.ndarray:
        """What each device's current request does under ``actions`` (n x 3 or n x 4,
        checked): rows of ``sim.kernel``'s ``O_*`` columns. Changes no device (a shared
        cloud does take the requests)."""
        self.set_actions(actions)
        t, tr, out = self.tables, self.traces, self.out
        if self.cloud is None:
            kernel.outcomes_private(*self.private_args[:-1])
            return out
        kernel.start_requests(
            t.small,
            t.per_level,
            t.first_exit,
            t.exits,
            t.finals,
            tr.tr,
            self.fs,
            self.ints,
            self.requests,
            out,
        )
        sent = np.flatnonzero(out[:, O_OFFLOADED])
        if self.system.hybrid is not None:
            # Each request's path on the VM and the function, then the shared tiers.
            kernel.hybrid_paths(t.small, t.first_exit, t.exits, self.ints, self.requests, out)
            if sent.size:
                act = self.ints[sent]
                split = self.system.hybrid.split[
                    act[:, kernel.I_ACT_CUT], act[:, kernel.I_ACT_THR]
                ].astype(np.int64)
                queue, service, cold = self.cloud.serve_hybrid(
                    out[sent, O_TX_END], out[sent, O_VM], out[sent, O_FN_CALL] > 0.0, split
                )
                out[sent, O_QUEUE], out[sent, O_CLOUD], out[sent, O_COLD] = queue, service, cold
        elif sent.size:
            queue, service, cold = self.cloud.serve_many(
                out[sent, O_TX_END], out[sent, O_CUT].astype(np.int64)
            )
            out[sent, O_QUEUE], out[sent, O_CLOUD], out[sent, O_COLD] = queue, service, cold
        kernel.finish_requests(
            t.small, t.per_level, t.finals, self.fs, self.ints, self.requests, out
        )
        return out

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Serve each device's current request under ``actions`` and move on: returns
        ``(outcomes, observations of the next requests)`` (both reused by the next call)."""
        if self.cloud is None:
            self.set_actions(actions)
            kernel.step_private(*self.private_args)
            return self.out, self.obs
        self.outcomes(actions)
        kernel.advance(
            self.tables.small, self.traces.tr, self.fs, self.ints, self.requests, self.out, self.obs
        )
        return self.out, self.obs
