"""A request's physics, in one place: where its latency, energy, money and leakage come
from (as Pensieve's ``get_video_chunk`` is for a video chunk).

One request, decided at ``start`` (its arrival, or later when the device was busy):

1. **Device**: blocks ``1..cut`` at the device's speed, each early exit on the way
   checked against the threshold (``formulas.device_seconds``). If one fires, or the
   whole model ran (cut K, the final classifier), the device answers.
2. **Uplink**: the codec's bytes cross the link from the clock's time, integrated over
   the bandwidth trace (``traces.queries.finish_time``), plus the RTT.
3. **Cloud**: the tail's time, plus a cold start where a FaaS instance's keep-alive
   ran out (``formulas.cloud_seconds``); in a fleet, the shared cloud's queue
   (``sim.cloud``).
4. **Energy**: compute power x device time; radio transmit power x transfer time plus
   its high-power tail, less the part of a previous tail this upload reuses
   (``formulas.transmit_j``, ``formulas.radio_tail_j``: Huang et al., MobiSys 2012);
   idle power while waiting (``formulas.request_energy_j``).
5. **Money**: the cloud's bill for the tail plus cellular data
   (``formulas.request_money_usd``). **Leakage**: the profile's figure for what was
   sent. **Reward**: ``formulas.reward``.

The formulas are ``sim.formulas``; the environments run them, compiled, in
``sim.kernel`` (``start_requests`` and ``finish_requests`` are the steps above, in
order). This module is the same physics for Python callers that hold a ``System``:
the device loop pads its real compute to ``block_seconds`` / ``exit_seconds`` and
charges its uploads with ``upload_energy_j``; the heuristics' ``Predictor`` takes the
expectation of the same terms (``expected_latency_s``, ``expected_energy_j``).
"""

from __future__ import annotations

from sim import formulas
from sim.system import System


# -- the device ------------------------------------------------------------------------
def block_seconds(s: System, block: int) -> float:
    """Device time of block ``block`` (1-based)."""
    return s.block_dev_s[block - 1]


def exit_seconds(s: System, block: int) -> float:
    """Device time of the exit after ``block`` (1-based; 0 where there is none)."""
    return s.exit_dev_s[block - 1]


def device_seconds(s: System, cut: int, early: bool, exit_block: int, level: int) -> float:
    """Device compute of a request (``formulas.device_seconds``)."""
    return formulas.device_seconds(
        s.block_cum, s.exit_cum, s.exit_dev_s, s.encode_dev, s.k, cut, early, exit_block, level
    )


def seconds_to_exit(s: System, depth: int, block: int) -> float:
    """Device time from the tensor after ``depth`` blocks to the answer of the exit
    after ``block`` (``block >= depth``): the blocks between, then that exit."""
    return s.block_cum[block] - s.block_cum[depth] + s.exit_dev_s[block - 1]


# -- energy --------------------------------------------------------------------------------
def upload_energy_j(
    radio, start_s: float, tx_s: float, nbytes: float, prev_tail_end_s: float
) -> tuple[float, float]:
    """``(transmit, tail)`` energy of an upload on ``radio`` (a catalog ``Radio``)."""
    return (
        formulas.transmit_j(radio.base_w, radio.per_mbps_w, tx_s, nbytes),
        formulas.radio_tail_j(radio.tail_w, radio.tail_s, start_s, prev_tail_end_s),
    )


def radio_tail_left_j(radio, now_s: float, tail_end_s: float) -> float:
    """Energy of ``radio``'s high-power tail still to run at ``now_s``."""
    return formulas.radio_tail_left_j(radio.tail_w, radio.tail_s, now_s, tail_end_s)


def request_energy_j(s: System, device_s: float, radio_j: float, waiting_s: float) -> float:
    """Device energy of a request: compute, the radio's ``radio_j``, idle while waiting."""
    d = s.device
    return formulas.request_energy_j(
        d.active_power_w, d.idle_power_w, device_s, radio_j, 0.0, waiting_s
    )


def device_carbon_g(s: System, joules: float) -> float:
    """Grams of CO2e of ``joules`` drawn by the device (its grid's intensity)."""
    return formulas.request_carbon_g(joules, s.device_g_per_j, 0.0)


def request_carbon_g(s: System, energy_j: float, cloud_cut: int | None) -> float:
    """Grams of CO2e of a request that drew ``energy_j`` on the device and, when the
    cloud answered it from ``cloud_cut``, the tail's share (the real device's figure)."""
    cloud_g = s.cloud_carbon_g[cloud_cut] if cloud_cut is not None else 0.0
    return formulas.request_carbon_g(energy_j, s.device_g_per_j, cloud_g)


def carbon_with_energy_g(s: System, outcome, energy_j: float) -> float:
    """``outcome``'s carbon had its device drawn ``energy_j`` instead (the oracle's
    radio-tail accounting): the cloud's share stays."""
    cloud_g = outcome.carbon_g - outcome.energy_j * s.device_g_per_j
    return formulas.request_carbon_g(energy_j, s.device_g_per_j, cloud_g)


def battery_level(s: System, battery_j: float) -> float:
    """The battery's charge as a fraction of its capacity (0 once it is empty)."""
    return formulas.battery_level(battery_j, s.battery_capacity_j)


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
    s: System,
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
    transmit = formulas.transmit_j(radio.base_w, radio.per_mbps_w, tx_s, bytes_sent)
    tail_j = radio.tail_w * min(tail_share_s, radio.tail_s)
    d = s.device
    return d.active_power_w * device_s + p_offload * (
        transmit + tail_j + d.idle_power_w * (rtt_s + cloud_s)
    )
