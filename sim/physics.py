"""A request's physics, in one place: where its latency, energy, money and leakage come
from (as Pensieve's ``get_video_chunk`` is for a video chunk).

One request, decided at ``start`` (its arrival, or later when the device was busy):

1. **Device**: blocks ``1..cut`` at the device's speed, each early exit on the way
   checked against the threshold (``device_seconds``). If one fires, or the whole
   model ran (cut K, the final classifier), the device answers: ``local_outcome``.
2. **Uplink**: the codec's bytes cross the link from the clock's time, integrated over
   the bandwidth trace (``upload_end``), plus the RTT.
3. **Cloud**: the tail's time, plus a cold start where a FaaS instance's keep-alive
   ran out (``cloud_seconds``); in a fleet, the shared cloud's queue (``sim.cloud``).
4. **Energy**: compute power x device time; radio transmit power x transfer time plus
   its high-power tail, less the part of a previous tail this upload reuses
   (``transmit_j``, ``radio_tail_j``: Huang et al., MobiSys 2012); idle power while
   waiting (``request_energy_j``).
5. **Money**: the cloud's bill for the tail plus cellular data (``request_money_usd``).
   **Leakage**: the profile's figure for what was sent. **Reward**: ``sim.reward``.

Two entry points take the same steps: ``request`` for one device's current request
(``OffloadEnv``; pure, so the oracle can ask it about every action) and ``requests``
for one request of each of N devices over numpy arrays (``OffloadFleet-v0``). The
energy, money and reward functions are shared by both (they take floats or arrays);
the device-time and exit rules are written once per entry point, side by side here,
and the golden episodes (``tests/test_golden.py``) hold the two to the same numbers.
The heuristics' ``Predictor`` takes the expectation of the same terms
(``expected_latency_s``, ``expected_energy_j``); the device loop pads its real compute
to ``block_seconds`` / ``exit_seconds`` and charges its uploads with ``upload_energy_j``,
so sim-to-real compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.system import Outcome, System


# -- the device ------------------------------------------------------------------------
def block_seconds(s: System, block: int) -> float:
    """Device time of block ``block`` (1-based)."""
    return s.block_dev_s[block - 1]


def exit_seconds(s: System, block: int) -> float:
    """Device time of the exit after ``block`` (1-based; 0 where there is none)."""
    return s.exit_dev_s[block - 1]


def device_seconds(s: System, cut: int, early: bool, exit_block: int, level: int) -> float:
    """Device compute of a request: up to the exit that answered (``exit_block``, its
    exit included), else the whole model and the final classifier (``cut == K``), else
    blocks ``1..cut`` and the encoder of ``level``. ``early``: the exits on the way were
    checked (a threshold of at most 1)."""
    if exit_block:
        return s.block_cum[exit_block] + s.exit_cum[exit_block]
    if cut == s.k:
        return s.block_cum[s.k] + (s.exit_cum[s.k - 1] if early else 0.0) + s.exit_dev_s[s.k - 1]
    return s.block_cum[cut] + (s.exit_cum[cut] if early else 0.0) + s.encode_dev_s[cut][level]


def seconds_to_exit(s: System, depth: int, block: int) -> float:
    """Device time from the tensor after ``depth`` blocks to the answer of the exit
    after ``block`` (``block >= depth``): the blocks between, then that exit."""
    return s.block_cum[block] - s.block_cum[depth] + s.exit_dev_s[block - 1]


def answering_exit(s: System, thr: int, sample: int, cut: int) -> int:
    """The early exit (1-based block) that answers ``sample`` under threshold index
    ``thr`` when the device stops after ``cut`` blocks; 0 when none does."""
    exit_block = s.first_exit[thr][sample]  # the first exit this sample's confidence fires
    return exit_block if exit_block <= cut else 0


# -- the link and the cloud -------------------------------------------------------------
def upload_end(trace, offset_s: float, start_s: float, nbytes: float) -> float:
    """When ``nbytes`` handed to the uplink at ``start_s`` (episode time) have crossed,
    integrating the trace's capacity from ``offset_s + start_s`` (outages included)."""
    return trace.finish_time(offset_s + start_s, nbytes) - offset_s


def cloud_seconds(s: System, cut: int, cold: bool) -> float:
    """The tail from ``cut`` in the cloud, plus a cold start when the instance is cold."""
    return s.cloud_tail_s[cut] + (s.cloud.cold_start_s if cold else 0.0)


def is_cold(s: System, arrives_s: float, last_use_s: float) -> bool:
    """A FaaS instance is cold when its keep-alive window ran out before the request."""
    return s.is_faas and arrives_s - last_use_s > s.cloud.keep_alive_s


# -- energy and money (floats for one request, or numpy arrays for many) ---------------
def transmit_j(radio, tx_s, nbytes):
    """Energy of sending ``nbytes`` over ``tx_s`` seconds (Huang et al. 2012): power
    ``base_w + per_mbps_w x rate`` for the transfer's duration; 0 for no transfer.
    ``radio`` is a ``profiles.catalog.Radio`` or a ``RadioArrays``."""
    return (radio.base_w * tx_s + radio.per_mbps_w * nbytes * 8e-6) * (tx_s > 0)


def radio_tail_left_j(radio, now_s, tail_end_s):
    """Energy of the high-power tail still to run at ``now_s`` when the last upload's
    tail ends at ``tail_end_s``."""
    left = tail_end_s - now_s
    if isinstance(left, np.ndarray):
        return np.where(left > 0, radio.tail_w * np.minimum(left, radio.tail_s), 0.0)
    return radio.tail_w * (left if left < radio.tail_s else radio.tail_s) if left > 0 else 0.0


def radio_tail_j(radio, start_s, prev_tail_end_s):
    """Tail energy an upload starting at ``start_s`` is charged (Huang et al. 2012): a
    full high-power tail, less the unused part of the previous upload's tail, which
    ends at ``prev_tail_end_s``."""
    return radio.tail_w * radio.tail_s - radio_tail_left_j(radio, start_s, prev_tail_end_s)


def upload_energy_j(
    radio, start_s: float, tx_s: float, nbytes: float, prev_tail_end_s: float
) -> tuple[float, float]:
    """``(transmit, tail)`` energy of an upload: every upload the device makes (a
    request's, a background probe's, the real device loop's) is charged by this."""
    return transmit_j(radio, tx_s, nbytes), radio_tail_j(radio, start_s, prev_tail_end_s)


def request_energy_j(device, device_s, tx_j, tail_j, waiting_s):
    """Device energy of a request: compute, the radio (transmit and tail), and idle
    power while it waits for the answer (``waiting_s``: RTT and cloud time)."""
    return device.active_power_w * device_s + tx_j + tail_j + device.idle_power_w * waiting_s


def request_money_usd(s: System, nbytes, cloud_usd):
    """Money of an offloaded request: cellular data plus the cloud's bill for the tail."""
    return nbytes * s.data_usd_per_byte + cloud_usd


def battery_level(s: System, battery_j):
    """The battery's charge as a fraction of its capacity (0 once it is empty)."""
    if isinstance(battery_j, np.ndarray):
        return np.maximum(battery_j, 0.0) / s.battery_capacity_j
    return (battery_j if battery_j > 0.0 else 0.0) / s.battery_capacity_j


# -- one request ------------------------------------------------------------------------
def request(s: System, st, cut: int, thr: int, level: int, deadline_s: float) -> Outcome:
    """What the current request of episode state ``st`` does under ``(cut, thr,
    level)``. Pure: changes nothing, so the oracle can ask it about every action."""
    i = st.samples[st.index]
    arrival = st.arrivals[st.index]
    start = arrival if arrival > st.free_s else st.free_s
    early = s.thresholds[thr] <= 1.0
    exit_block = answering_exit(s, thr, i, cut)
    level_now = battery_level(s, st.battery_j)
    if exit_block or cut == s.k:
        return local_outcome(s, st, i, arrival, start, early, exit_block, level_now, deadline_s)
    return offload_outcome(s, st, i, arrival, start, early, cut, level, level_now, deadline_s)


def local_outcome(
    s: System,
    st,
    i: int,
    arrival: float,
    start: float,
    early: bool,
    exit_block: int,
    battery: float,
    deadline_s: float,
) -> Outcome:
    """The device answers: at ``exit_block``, or with the final classifier (0: cut K)."""
    k = s.k
    device_s = device_seconds(s, k, early, exit_block, 0)
    answered = exit_block or k
    correct = s.exit_ok[answered - 1][i]
    credit = s.exit_credit[answered - 1][i]
    latency = start - arrival + device_s
    energy = request_energy_j(s.device, device_s, 0.0, 0.0, 0.0)
    done = start + device_s
    return Outcome(
        latency_s=latency,
        wait_s=start - arrival,
        device_s=device_s,
        network_s=0.0,
        cloud_s=0.0,
        energy_j=energy,
        money_usd=0.0,
        sent_bytes=0,
        exit_block=answered,
        offloaded=False,
        correct=bool(correct),
        leakage=0.0,
        cold_start=False,
        deadline_miss=latency > deadline_s,
        reward=s.reward(credit, latency, energy, 0.0, 0.0, battery),
        tail_j=0.0,
        done_s=done,
        tx_start_s=done,
        tx_end_s=done,
        radio_tail_end_s=st.radio_tail_end_s,
        credit=credit,
        expected=s.exit_expected[answered - 1][i],
    )


def offload_outcome(
    s: System,
    st,
    i: int,
    arrival: float,
    start: float,
    early: bool,
    cut: int,
    level: int,
    battery: float,
    deadline_s: float,
) -> Outcome:
    """The tensor at ``cut`` crosses the uplink and the cloud answers."""
    device_s = device_seconds(s, cut, early, 0, level)
    nbytes = s.sent[cut][level][i]
    trace, radio = st.trace, st.radio
    tx_start = start + device_s
    tx_end = upload_end(trace, st.offset_s, tx_start, nbytes)
    tx_s = tx_end - tx_start
    cold = is_cold(s, tx_end, st.cloud_last_use_s)
    cloud_s = cloud_seconds(s, cut, cold)
    rtt = trace.rtt_s
    done = tx_end + rtt + cloud_s
    latency = done - arrival
    tx_j, tail_j = upload_energy_j(radio, tx_start, tx_s, nbytes, st.radio_tail_end_s)
    energy = request_energy_j(s.device, device_s, tx_j, tail_j, rtt + cloud_s)
    money = request_money_usd(s, nbytes, s.cloud_usd[cut])
    credit = s.final_credit[cut][level][i]
    leak = s.leak[cut][level]
    return Outcome(
        latency_s=latency,
        wait_s=start - arrival,
        device_s=device_s,
        network_s=tx_s + rtt,
        cloud_s=cloud_s,
        energy_j=energy,
        money_usd=money,
        sent_bytes=nbytes,
        exit_block=0,
        offloaded=True,
        correct=bool(s.final_ok[cut][level][i]),
        leakage=leak,
        cold_start=cold,
        deadline_miss=latency > deadline_s,
        reward=s.reward(credit, latency, energy, money, leak, battery),
        tail_j=tail_j,
        done_s=done,
        tx_start_s=tx_start,
        tx_end_s=tx_end,
        radio_tail_end_s=tx_end + radio.tail_s,
        credit=credit,
        expected=s.final_expected[cut][level][i],
    )


# -- one request of each of N devices ----------------------------------------------------
@dataclass(frozen=True)
class SystemArrays:
    """A ``System``'s per-sample lists as numpy arrays, indexed ``[..., sample]``, for
    ``requests``."""

    thresholds: np.ndarray
    first_exit: np.ndarray
    exit_ok: np.ndarray
    exit_credit: np.ndarray
    sent: np.ndarray
    final_ok: np.ndarray
    final_credit: np.ndarray
    leak: np.ndarray
    encode_dev: np.ndarray
    block_cum: np.ndarray
    exit_cum: np.ndarray
    cloud_usd: np.ndarray
    last_level: np.ndarray  # per cut, its last level (a level beyond a cut's own means it)


def system_arrays(s: System) -> SystemArrays:
    return SystemArrays(
        thresholds=np.asarray(s.thresholds, dtype=float),
        first_exit=np.asarray(s.first_exit, dtype=np.int64),
        exit_ok=np.asarray(s.exit_ok, dtype=bool),
        exit_credit=np.asarray(s.exit_credit, dtype=float),
        sent=np.asarray(s.sent, dtype=float),
        final_ok=np.asarray(s.final_ok, dtype=bool),
        final_credit=np.asarray(s.final_credit, dtype=float),
        leak=np.asarray(s.leak, dtype=float),
        encode_dev=np.asarray(s.encode_dev_s, dtype=float),
        block_cum=np.asarray(s.block_cum),
        exit_cum=np.asarray(s.exit_cum),
        cloud_usd=np.asarray(s.cloud_usd),
        last_level=np.asarray([n - 1 for n in s.levels_by_cut] + [s.n_levels - 1]),
    )


@dataclass(frozen=True)
class RadioArrays:
    """Each device's radio constants (the fields of ``profiles.catalog.Radio`` that
    the energy functions read), one entry per device."""

    base_w: np.ndarray
    per_mbps_w: np.ndarray
    tail_w: np.ndarray
    tail_s: np.ndarray


@dataclass(frozen=True)
class Batch:
    """What N devices' requests did (one entry per device; see ``Outcome``)."""

    latency_s: np.ndarray
    device_s: np.ndarray
    network_s: np.ndarray
    cloud_s: np.ndarray
    queue_s: np.ndarray
    energy_j: np.ndarray
    money_usd: np.ndarray
    sent_bytes: np.ndarray  # float: what the telemetry's throughput is computed from
    exit_block: np.ndarray
    offloaded: np.ndarray
    correct: np.ndarray
    leakage: np.ndarray
    deadline_miss: np.ndarray
    cold_start: np.ndarray
    reward: np.ndarray
    done_s: np.ndarray
    tx_start_s: np.ndarray
    tx_end_s: np.ndarray
    tx_s: np.ndarray


@dataclass(frozen=True)
class Pending:
    """N devices' current requests and the state each is decided in (arrays of N)."""

    sample: np.ndarray  # the profile sample each request draws
    arrival_s: np.ndarray
    start_s: np.ndarray  # when the device starts on it (arrival, or later if busy)
    battery_j: np.ndarray
    radio_tail_end_s: np.ndarray  # when the previous upload's radio tail ends
    radio: RadioArrays
    rtt_s: np.ndarray


def requests(
    s: System, tables: SystemArrays, cut, thr, level, pending: Pending, *, upload_end, serve
) -> Batch:
    """One request of each of N devices under their actions (arrays of N), the steps of
    ``request`` over arrays. ``upload_end(tx_start, nbytes)``: when each device's bytes
    have crossed its link; ``serve(sent, tx_end, cut)``: ``(queue_s, service_s, cold)``
    of the offloaded requests (indices ``sent``) at the cloud they share."""
    t, k, n = tables, s.k, len(cut)
    i, arrival, start = pending.sample, pending.arrival_s, pending.start_s
    radio, rtt_s = pending.radio, pending.rtt_s
    early = t.thresholds[thr] <= 1.0
    exit_block = t.first_exit[thr, i]
    exit_block = np.where(exit_block > cut, 0, exit_block)  # ``answering_exit``
    local = (exit_block > 0) | (cut == k)
    off = ~local
    # The device (``device_seconds``): up to the exit that answered, the whole model, or
    # the cut and the encoder of the level.
    answered = np.where(exit_block > 0, exit_block, k)
    early_f = np.where(early, 1.0, 0.0)
    local_s = np.where(
        exit_block > 0,
        t.block_cum[exit_block] + t.exit_cum[exit_block],
        t.block_cum[k] + early_f * t.exit_cum[k - 1] + s.exit_dev_s[k - 1],
    )
    cut_c = np.minimum(cut, k - 1)  # table index; unused where the request is local
    off_s = t.block_cum[cut] + early_f * t.exit_cum[cut] + t.encode_dev[cut_c, level]
    device_s = np.where(local, local_s, off_s)

    # The uplink and the cloud, for the offloaded requests.
    nbytes = np.where(off, t.sent[cut_c, level, i], 0.0)
    tx_start = start + device_s
    tx_end = upload_end(tx_start, nbytes)
    tx_s = np.where(off, tx_end - tx_start, 0.0)
    queue_s, service_s = np.zeros(n), np.zeros(n)
    cold = np.zeros(n, dtype=bool)
    sent = np.flatnonzero(off)
    if sent.size:
        queue_s[sent], service_s[sent], cold[sent] = serve(sent, tx_end[sent], cut[sent])
    cloud_s = queue_s + service_s
    done = np.where(off, tx_end + rtt_s + cloud_s, start + device_s)
    latency = done - arrival

    tx_j = np.where(off, transmit_j(radio, tx_s, nbytes), 0.0)
    tail_j = np.where(off, radio_tail_j(radio, tx_start, pending.radio_tail_end_s), 0.0)
    energy = request_energy_j(s.device, device_s, tx_j, tail_j, np.where(off, rtt_s + cloud_s, 0.0))
    money = np.where(off, request_money_usd(s, nbytes, t.cloud_usd[cut_c]), 0.0)
    credit = np.where(local, t.exit_credit[answered - 1, i], t.final_credit[cut_c, level, i])
    correct = np.where(local, t.exit_ok[answered - 1, i], t.final_ok[cut_c, level, i])
    leakage = np.where(off, t.leak[cut_c, level], 0.0)
    reward = s.reward(credit, latency, energy, money, leakage, battery_level(s, pending.battery_j))
    return Batch(
        latency_s=latency,
        device_s=device_s,
        network_s=np.where(off, tx_s + rtt_s, 0.0),
        cloud_s=cloud_s,
        queue_s=queue_s,
        energy_j=energy,
        money_usd=money,
        sent_bytes=nbytes,
        exit_block=np.where(local, answered, 0),
        offloaded=off,
        correct=correct,
        leakage=leakage,
        deadline_miss=latency * s.reward.inv_deadline > 1.0,
        cold_start=cold,
        reward=reward,
        done_s=done,
        tx_start_s=tx_start,
        tx_end_s=tx_end,
        tx_s=tx_s,
    )


# -- in expectation, for the heuristics ---------------------------------------------------
def expected_latency_s(
    device_s, p_offload, bytes_sent, cloud_s, bandwidth_bps: float, rtt_s: float
):
    """The same latency in expectation (arrays over actions): device time, then with
    probability ``p_offload`` the upload at a constant ``bandwidth_bps`` (the estimate a
    device has instead of the trace), the RTT and the warm cloud tail."""
    bw = max(bandwidth_bps, 1.0)
    return device_s + p_offload * (bytes_sent * 8.0 / bw + rtt_s + cloud_s)


def expected_energy_j(
    device,
    radio,
    device_s,
    p_offload,
    bytes_sent,
    cloud_s,
    bandwidth_bps: float,
    rtt_s: float,
    tail_share_s: float,
):
    """The same energy in expectation (arrays over actions): compute, then with
    probability ``p_offload`` the transmit energy at a constant ``bandwidth_bps``, the
    part of the radio tail the request is expected to keep alive (``tail_share_s``) and
    idle power while the answer comes back."""
    bw = max(bandwidth_bps, 1.0)
    tx_s = bytes_sent * 8.0 / bw
    tail_j = radio.tail_w * min(tail_share_s, radio.tail_s)
    radio_j = transmit_j(radio, tx_s, bytes_sent) + tail_j
    return request_energy_j(device, device_s, 0.0, 0.0, 0.0) + p_offload * (
        radio_j + device.idle_power_w * (rtt_s + cloud_s)
    )
