"""Each quantity of a request, as one function over plain numbers and arrays.

These are the simulator's physics (``sim.physics`` says where each comes from). They
take numbers and numpy arrays only, never objects, and use only what numba compiles:
Python code calls them as they are (the device loop, the heuristics' predictor, the
``sim.physics`` helpers that take a ``System``), and ``sim.kernel`` compiles the very
same functions with numba for the environments' step. Changing a formula here changes
it everywhere at once.
"""

from __future__ import annotations

import math

J_PER_KWH = 3.6e6  # a grid's grams per kWh over this: grams per joule
LATENCY_RATIO_CAP = 4.0  # a late answer costs at most four deadlines of latency

# The reward's constants, in ``RewardWeights`` order, then the references' inverses.
(
    W_ACCURACY,
    W_LATENCY,
    W_MISS,
    W_ENERGY,
    W_GAIN,
    W_MONEY,
    W_LEAKAGE,
    W_CARBON,
    INV_DEADLINE,
    INV_ENERGY_REF,
    INV_MONEY_REF,
    INV_CARBON_REF,
) = range(12)
N_REWARD_CONSTANTS = 12


# -- the device ------------------------------------------------------------------------
def answering_exit(first_exit: int, cut: int) -> int:
    """The early exit (1-based block) that answers a request whose sample's confidence
    first reaches the threshold at ``first_exit`` (0: none) when the device stops after
    ``cut`` blocks; 0 when none does."""
    return first_exit if first_exit <= cut else 0


def device_seconds(
    block_cum,
    exit_cum,
    exit_dev,
    encode_dev,
    k: int,
    cut: int,
    early: bool,
    exit_block: int,
    level: int,
) -> float:
    """Device compute of a request: up to the exit that answered (``exit_block``, its
    exit included), else the whole model and the final classifier (``cut == k``), else
    blocks ``1..cut`` and the encoder of ``level`` (``encode_dev[cut, level]``).
    ``early``: the exits on the way were checked (a threshold of at most 1).
    ``block_cum``/``exit_cum``: cumulative device seconds of blocks/exits ``1..b``."""
    if exit_block > 0:
        return block_cum[exit_block] + exit_cum[exit_block]
    if cut == k:
        return block_cum[k] + (exit_cum[k - 1] if early else 0.0) + exit_dev[k - 1]
    return block_cum[cut] + (exit_cum[cut] if early else 0.0) + encode_dev[cut, level]


# -- the cloud --------------------------------------------------------------------------
def is_cold(is_faas: bool, arrives_s: float, last_use_s: float, keep_alive_s: float) -> bool:
    """A FaaS instance is cold when its keep-alive window ran out before the request."""
    return is_faas and arrives_s - last_use_s > keep_alive_s


def cloud_seconds(tail_s: float, cold: bool, cold_start_s: float) -> float:
    """The tail in the cloud, plus a cold start when the instance is cold."""
    return tail_s + (cold_start_s if cold else 0.0)


def hybrid_exit(first_exit: int, cut: int, split: int) -> int:
    """The cloud early exit (1-based block) that answers a request offloaded at ``cut``
    on a hybrid cloud whose VM runs blocks ``cut+1..split`` with their exits: the
    sample's first exit reaching the threshold (``first_exit``, 0: none) when the VM
    runs it; 0 when the request goes on to the functions (or, ``split == K``, to the
    VM's final exit)."""
    return first_exit if cut < first_exit <= split else 0


def span_seconds(cum, overhead_s: float, start: int, end: int) -> float:
    """Busy seconds of one call that runs blocks ``start+1..end`` (``cum[b]``: the
    seconds of blocks ``1..b`` with their exits on that cloud), its ``overhead_s``
    included; 0 when it runs none (no call)."""
    return overhead_s + cum[end] - cum[start] if end > start else 0.0


# -- energy and money --------------------------------------------------------------------
def transmit_j(base_w: float, per_mbps_w: float, tx_s: float, nbytes: float) -> float:
    """Energy of sending ``nbytes`` over ``tx_s`` seconds (Huang et al., MobiSys 2012):
    power ``base_w + per_mbps_w x rate`` for the transfer's duration; 0 without a
    transfer. Written without a branch, so that it also takes numpy arrays (the
    heuristics' expectations over every action)."""
    return (base_w * tx_s + per_mbps_w * nbytes * 8e-6) * (tx_s > 0)


def radio_tail_left_j(tail_w: float, tail_s: float, now_s: float, tail_end_s: float) -> float:
    """Energy of the high-power tail still to run at ``now_s`` when the last upload's
    tail ends at ``tail_end_s``."""
    left = tail_end_s - now_s
    return tail_w * (left if left < tail_s else tail_s) if left > 0 else 0.0


def radio_tail_j(tail_w: float, tail_s: float, start_s: float, prev_tail_end_s: float) -> float:
    """Tail energy an upload starting at ``start_s`` is charged (Huang et al. 2012): a
    full high-power tail, less the unused part of the previous upload's tail."""
    return tail_w * tail_s - radio_tail_left_j(tail_w, tail_s, start_s, prev_tail_end_s)


def request_energy_j(
    active_w: float, idle_w: float, device_s: float, tx_j: float, tail_j: float, waiting_s: float
) -> float:
    """Device energy of a request: compute, the radio (transmit and tail), and idle
    power while it waits for the answer (``waiting_s``: RTT and cloud time)."""
    return active_w * device_s + tx_j + tail_j + idle_w * waiting_s


def faas_call_usd(
    busy_s: float,
    granularity_s: float,
    price_per_request: float,
    price_per_gb_s: float,
    memory_gb: float,
) -> float:
    """What one serverless call costs: the request fee and its GB-seconds, its busy
    time billed in whole ``granularity_s`` steps (0: to the second's fraction)."""
    steps = math.ceil(busy_s / granularity_s - 1e-9) if granularity_s > 0 else 0
    billed = steps * granularity_s if granularity_s > 0 else busy_s
    return price_per_request + price_per_gb_s * memory_gb * billed


def iaas_busy_usd(busy_s: float, price_per_s: float, utilisation: float) -> float:
    """What a reserved VM's busy seconds cost a request: its price per second over the
    utilisation the operator reaches (an idle second is paid by the busy ones)."""
    return price_per_s * busy_s / utilisation


def cloud_carbon_g(busy_s: float, watts: float, pue: float, g_per_j: float) -> float:
    """Grams of CO2e of a cloud's busy seconds: the power it keeps busy, times its data
    centre's PUE, at its grid's intensity (``g_per_j``)."""
    return busy_s * watts * pue * g_per_j


def hybrid_usd(
    vm_s: float,
    fn_s: float,
    calls: bool,
    vm_price_per_s: float,
    vm_utilisation: float,
    fn_granularity_s: float,
    fn_price_per_request: float,
    fn_price_per_gb_s: float,
    fn_memory_gb: float,
) -> float:
    """A hybrid cloud's bill for a request: the VM's busy seconds, and the function
    call where it ``calls`` one (a VM exit answered the others)."""
    usd = iaas_busy_usd(vm_s, vm_price_per_s, vm_utilisation)
    if calls:
        usd += faas_call_usd(
            fn_s, fn_granularity_s, fn_price_per_request, fn_price_per_gb_s, fn_memory_gb
        )
    return usd


def hybrid_carbon_g(
    vm_s: float,
    fn_s: float,
    vm_watts: float,
    vm_pue: float,
    vm_g_per_j: float,
    fn_watts: float,
    fn_pue: float,
    fn_g_per_j: float,
) -> float:
    """Grams of CO2e of a hybrid cloud's request: its busy seconds on the VM and on the
    function (0 where it made no call), each at its own power, PUE and grid."""
    vm_g = cloud_carbon_g(vm_s, vm_watts, vm_pue, vm_g_per_j)
    return vm_g + cloud_carbon_g(fn_s, fn_watts, fn_pue, fn_g_per_j)


def request_money_usd(nbytes: float, usd_per_byte: float, cloud_usd: float) -> float:
    """Money of an offloaded request: cellular data plus the cloud's bill for the tail."""
    return nbytes * usd_per_byte + cloud_usd


def request_carbon_g(device_j: float, device_g_per_j: float, cloud_g: float) -> float:
    """Grams of CO2-equivalent of a request: the device's energy at its grid's carbon
    intensity, plus the cloud's share (its busy seconds at its power, PUE and grid:
    ``System.cloud_carbon_g``; 0 when nothing was offloaded)."""
    return device_j * device_g_per_j + cloud_g


def battery_level(battery_j: float, capacity_j: float) -> float:
    """The battery's charge as a fraction of its capacity (0 once it is empty)."""
    return (battery_j if battery_j > 0.0 else 0.0) / capacity_j


# -- the reward ---------------------------------------------------------------------------
def reward(
    w,
    credit: float,
    latency_s: float,
    energy_j: float,
    money_usd: float,
    leakage: float,
    battery: float,
    carbon_g: float,
) -> float:
    """The scenario's reward for one request (``sim.reward`` explains each term); ``w``
    holds the weights and references in the ``W_*`` / ``INV_*`` order."""
    ratio = latency_s * w[INV_DEADLINE]
    return (
        w[W_ACCURACY] * credit
        - w[W_LATENCY] * (ratio if ratio < LATENCY_RATIO_CAP else LATENCY_RATIO_CAP)
        - (w[W_MISS] if ratio > 1.0 else 0.0)
        - w[W_ENERGY] * (1.0 + w[W_GAIN] * (1.0 - battery)) * energy_j * w[INV_ENERGY_REF]
        - w[W_MONEY] * money_usd * w[INV_MONEY_REF]
        - w[W_LEAKAGE] * leakage
        - w[W_CARBON] * carbon_g * w[INV_CARBON_REF]
    )
