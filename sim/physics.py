"""A request's physics, in one place: where its latency, energy, money and leakage come
from (as Pensieve's ``get_video_chunk`` is for a video chunk).

One request, decided at ``start`` (its arrival, or later when the device was busy):

1. **Device**: blocks ``1..cut`` at the device's speed, each early exit on the way
   checked against the threshold (``device_seconds``). If one fires, or the whole
   model ran (cut K, the final classifier), the device answers: ``local_outcome``.
2. **Uplink**: the codec's bytes cross the link from the clock's time, integrated over
   the bandwidth trace (``upload_end``), plus the RTT.
3. **Cloud**: the tail's time, plus a cold start where a FaaS instance's keep-alive
   ran out (``cloud_seconds``).
4. **Energy**: compute power x device time; radio transmit power x transfer time plus
   its high-power tail, less the part of a previous tail this upload reuses
   (``radio_energy_j``, Huang et al., MobiSys 2012); idle power while waiting.
5. **Money**: the cloud's bill for the tail plus cellular data. **Leakage**: the
   profile's figure for what was sent.

``OffloadEnv.simulate`` calls ``request``; the heuristics' ``Predictor`` takes the
expectation of the same terms over the validation samples with a bandwidth estimate
instead of the trace (``expected_latency_s``); the device loop pads its real compute
to ``block_seconds`` / ``exit_seconds``, so sim-to-real compares like with like.
"""

from __future__ import annotations

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


def radio_energy_j(radio, tx_start_s: float, tx_s: float, nbytes: float,
                   tail_end_s: float) -> tuple[float, float]:  # fmt: skip
    """``(transmit, tail)`` energy of an upload (Huang et al. 2012): power beta + alpha_u
    x rate over its ``tx_s`` seconds, and a full high-power tail less the unused part of
    the previous upload's tail, which ends at ``tail_end_s``."""
    tail_j = radio.tail_charge_j(tx_start_s, tail_end_s)
    tx_j = radio.base_w * tx_s + radio.per_mbps_w * nbytes * 8e-6 if tx_s > 0 else 0.0
    return tx_j, tail_j


# -- one request ------------------------------------------------------------------------
def request(s: System, st, cut: int, thr: int, level: int, deadline_s: float) -> Outcome:
    """What the current request of episode state ``st`` does under ``(cut, thr,
    level)``. Pure: changes nothing, so the oracle can ask it about every action."""
    i = st.samples[st.index]
    arrival = st.arrivals[st.index]
    start = arrival if arrival > st.free_s else st.free_s
    early = s.thresholds[thr] <= 1.0
    exit_block = s.first_exit[thr][i]  # the first exit this sample's confidence fires
    if exit_block > cut:  # ...but the device stops before reaching it
        exit_block = 0
    battery_level = (st.battery_j if st.battery_j > 0.0 else 0.0) / s.battery_capacity_j
    if exit_block or cut == s.k:
        return local_outcome(s, st, i, arrival, start, early, exit_block, battery_level, deadline_s)
    return offload_outcome(s, st, i, arrival, start, early, cut, level, battery_level, deadline_s)


def local_outcome(s: System, st, i: int, arrival: float, start: float, early: bool,
                  exit_block: int, battery_level: float, deadline_s: float) -> Outcome:  # fmt: skip
    """The device answers: at ``exit_block``, or with the final classifier (0: cut K)."""
    k = s.k
    device_s = device_seconds(s, k, early, exit_block, 0)
    answered = exit_block or k
    correct = s.exit_ok[answered - 1][i]
    credit = s.exit_credit[answered - 1][i]
    latency = start - arrival + device_s
    energy = s.device.active_power_w * device_s
    done = start + device_s
    return Outcome(
        latency_s=latency, wait_s=start - arrival, device_s=device_s, network_s=0.0,
        cloud_s=0.0, energy_j=energy, money_usd=0.0, sent_bytes=0, exit_block=answered,
        offloaded=False, correct=bool(correct), leakage=0.0, cold_start=False,
        deadline_miss=latency > deadline_s,
        reward=s.reward(credit, latency, energy, 0.0, 0.0, battery_level), tail_j=0.0,
        done_s=done, tx_start_s=done, tx_end_s=done, radio_tail_end_s=st.radio_tail_end_s,
        credit=credit, expected=s.exit_expected[answered - 1][i],
    )  # fmt: skip


def offload_outcome(s: System, st, i: int, arrival: float, start: float, early: bool, cut: int,
                    level: int, battery_level: float, deadline_s: float) -> Outcome:  # fmt: skip
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
    tx_j, tail_j = radio_energy_j(radio, tx_start, tx_s, nbytes, st.radio_tail_end_s)
    dev = s.device
    energy = dev.active_power_w * device_s + tx_j + tail_j + dev.idle_power_w * (rtt + cloud_s)
    money = nbytes * s.data_usd_per_byte + s.cloud_usd[cut]
    credit = s.final_credit[cut][level][i]
    leak = s.leak[cut][level]
    return Outcome(
        latency_s=latency, wait_s=start - arrival, device_s=device_s, network_s=tx_s + rtt,
        cloud_s=cloud_s, energy_j=energy, money_usd=money, sent_bytes=nbytes, exit_block=0,
        offloaded=True, correct=bool(s.final_ok[cut][level][i]), leakage=leak, cold_start=cold,
        deadline_miss=latency > deadline_s,
        reward=s.reward(credit, latency, energy, money, leak, battery_level), tail_j=tail_j,
        done_s=done, tx_start_s=tx_start, tx_end_s=tx_end, radio_tail_end_s=tx_end + radio.tail_s,
        credit=credit, expected=s.final_expected[cut][level][i],
    )  # fmt: skip


# -- in expectation, for the heuristics ---------------------------------------------------
def expected_latency_s(device_s, p_offload, bytes_sent, cloud_s, bandwidth_bps: float,
                       rtt_s: float):  # fmt: skip
    """The same latency in expectation (arrays over actions): device time, then with
    probability ``p_offload`` the upload at a constant ``bandwidth_bps`` (the estimate a
    device has instead of the trace), the RTT and the warm cloud tail."""
    bw = max(bandwidth_bps, 1.0)
    return device_s + p_offload * (bytes_sent * 8.0 / bw + rtt_s + cloud_s)
