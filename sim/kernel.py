"""The simulator's step for N devices in one compiled call (numba).

``Offload-v0`` is a fleet of one: the single-device environment and ``OffloadFleet-v0``
both keep their devices' state in arrays (``DeviceArrays``) and step them here. The
physics are ``sim.formulas``, the trace queries ``traces.queries`` and the telemetry
``telemetry.observation``, compiled (``sim.compile``): the same functions Python
calls, so a device in the simulator and the device loop in the field are charged by
one piece of code.

The kernel reads the system's tables packed into a few arrays (``sim.devices.
system_arrays``: each call pays per array it is handed, and a step is a few
microseconds), indexed by the constants below. A step runs in three phases, so that
a shared cloud can sit between them:

1. ``start_requests``: each device's current request under its action: the exits,
   the device time, and for what is offloaded the upload over its trace;
2. the cloud: ``private_cloud`` (each device has the cloud to itself, as one device
   does: a FaaS instance is cold when the device's own keep-alive ran out; a hybrid
   cloud's VM answers at its exits or hands over to a function, ``hybrid_cloud``) or
   ``sim.cloud.SharedCloud`` (a fleet's shared serving tier, in Python; for a hybrid,
   ``hybrid_paths`` first gives each request its VM and function seconds);
3. ``finish_requests``: latency, energy, money, leakage and reward; then ``advance``
   applies them to the devices' state (battery, telemetry, the clock, background
   probes) and writes the observations of the next requests.

``start_requests`` and ``finish_requests`` change nothing but their output rows, so
the oracle can ask what every action would do (``advance`` is what commits).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim import formulas
from sim.compile import compiled
from telemetry import observation
from telemetry.observation import N_CONTEXT, N_TPUT_SAMPLES, OBS_HIGH, RTT_ALPHA
from traces import queries

(
    answering_exit,
    device_seconds,
    is_cold,
    cloud_seconds,
    hybrid_exit,
    span_seconds,
    iaas_busy_usd,
    faas_call_usd,
    cloud_carbon_g,
    hybrid_usd,
    hybrid_carbon_g,
    transmit_j,
    radio_tail_left_j,
    radio_tail_j,
    request_energy_j,
    request_money_usd,
    request_carbon_g,
    battery_level,
    reward,
) = compiled(
    formulas,
    (
        "answering_exit",
        "device_seconds",
        "is_cold",
        "cloud_seconds",
        "hybrid_exit",
        "span_seconds",
        "iaas_busy_usd",
        "faas_call_usd",
        "cloud_carbon_g",
        "hybrid_usd",
        "hybrid_carbon_g",
        "transmit_j",
        "radio_tail_left_j",
        "radio_tail_j",
        "request_energy_j",
        "request_money_usd",
        "request_carbon_g",
        "battery_level",
        "reward",
    ),
)
(bisect_right, bisect_left, bytes_at, rate_at, finish_time) = compiled(
    queries, ("bisect_right", "bisect_left", "bytes_at", "rate_at", "finish_time")
)
(log_mbps, smoothed, push_sample, fill_observation) = compiled(
    observation, ("log_mbps", "smoothed", "push_sample", "fill_observation")
)
QUEUE_EWMA = 0.3  # weight of the newest answer in a device's smoothed server queueing time

# -- the system's tables (``SystemArrays``) ------------------------------------------------
# ``consts``: scalars, then the reward's constants (``sim.formulas.W_*``) from ``K_REWARD``.
(
    K_K,
    K_ACTIVE_W,
    K_IDLE_W,
    K_USD_PER_BYTE,
    K_BATTERY_J,
    K_IS_FAAS,
    K_COLD_START_S,
    K_KEEP_ALIVE_S,
    K_DEADLINE_S,
    K_PROBE_INTERVAL_S,
    K_PROBE_BYTES,
    K_DEVICE_G_PER_J,
    K_REWARD,
) = range(13)
N_CONSTS = K_REWARD + formulas.N_REWARD_CONSTANTS
# ``small``: rows of per-cut and per-threshold values, the constants (``small[S_CONSTS]``,
# the ``K_*`` above), then per model variant ``v`` its device rows
# (``small[S_DEVICE + N_DEVICE_ROWS * v + V_*]``: cumulative block and exit times, each
# exit's time), padded.
(
    S_CLOUD_TAIL,
    S_CLOUD_USD,
    S_CLOUD_CARBON,
    S_THRESHOLDS,
    S_CONSTS,
    S_HYBRID,
    S_VM_CUM,
    S_FN_TAIL,
    S_SPLIT,
    S_DEVICE,
) = range(10)
V_BLOCK_CUM, V_EXIT_CUM, V_EXIT_DEV = range(3)
N_DEVICE_ROWS = 3
# A hybrid cloud's rows (``sim.hybrid``; all zero without one): ``small[S_HYBRID, H_*]``
# its constants; ``S_VM_CUM[b]`` the VM's seconds of blocks 1..b with their exits;
# ``S_FN_TAIL[split]`` a function call's seconds from ``split``; ``S_SPLIT[cut * n +
# threshold]`` the last block on the VM (``n`` = ``H_N_THRESHOLDS``).
(
    H_ON,
    H_N_THRESHOLDS,
    H_VM_OVERHEAD_S,
    H_VM_PRICE_PER_S,
    H_VM_UTILISATION,
    H_VM_WATTS,
    H_VM_PUE,
    H_VM_G_PER_J,
    H_FN_GRANULARITY_S,
    H_FN_PRICE_PER_REQUEST,
    H_FN_PRICE_PER_GB_S,
    H_FN_MEMORY_GB,
    H_FN_WATTS,
    H_FN_PUE,
    H_FN_G_PER_J,
) = range(15)
# ``per_level[P_*, cut, level]``; per variant and sample, what a request reads of it side
# by side (one cache line, where a plane per field would cost a miss each):
# ``exits[variant, block - 1, sample, X_*]``, ``finals[variant, cut, level, sample, Y_*]``,
# ``first_exit[variant, sample, threshold]``.
P_ENCODE_DEV, P_LEAK = range(2)
X_OK, X_CREDIT, X_EXPECTED = range(3)
Y_SENT, Y_OK, Y_CREDIT, Y_EXPECTED = range(4)
# The traces: ``tr[R_*, row]`` (starts, cumulative bytes, rates; padded), and
# ``tr[R_META, row, M_*]`` (segments, duration).
R_STARTS, R_CUM, R_RATES, R_META = range(4)
M_SEGMENTS, M_DURATION = range(2)

# -- a device's state: floats ``fs``, integers ``ints`` -------------------------------------
(
    D_FREE,
    D_BATTERY,
    D_OFFSET,
    D_TAIL_END,
    D_CLOUD_LAST,
    D_RTT_EST,
    D_SERVER_QUEUE,
    D_ESTIMATE,
    D_BASE_W,
    D_PER_MBPS_W,
    D_TAIL_W,
    D_TAIL_S,
    D_RTT,
) = range(13)
# ...then its last throughput samples (``telemetry.observation.push_sample``'s arrays,
# oldest first) and its observation's constants (``ObservationContext.vector``).
D_TIMES = 13
D_RATES = D_TIMES + N_TPUT_SAMPLES
D_LOGS = D_RATES + N_TPUT_SAMPLES
D_INVERSES = D_LOGS + N_TPUT_SAMPLES
D_CONTEXT = D_INVERSES + N_TPUT_SAMPLES
N_DEVICE_FLOATS = D_CONTEXT + N_CONTEXT
# ...the request being decided, the trace row, the last action, how many throughput
# samples it has, and the action its current request is to be served under (with the
# model variant it runs, 0 where the scenario offers one).
(
    I_INDEX,
    I_ROW,
    I_CUT,
    I_THR,
    I_LVL,
    I_SAMPLES,
    I_ACT_CUT,
    I_ACT_THR,
    I_ACT_LVL,
    I_ACT_VARIANT,
) = range(10)
N_DEVICE_INTS = 10
# Each device's episode: ``requests[Q_ARRIVAL | Q_SAMPLE, device, j]`` (its requests'
# arrival times and the profile samples they draw).
Q_ARRIVAL, Q_SAMPLE = range(2)

# -- what a request did (one row per device) -----------------------------------------------
# The first ``N_REPORTED`` columns are what ``Offload-v0``'s step reports, in its order.
(
    O_LATENCY,
    O_WAIT,
    O_DEVICE,
    O_NETWORK,
    O_CLOUD,
    O_ENERGY,
    O_MONEY,
    O_CARBON,
    O_SENT,
    O_EXIT_BLOCK,
    O_OFFLOADED,
    O_CORRECT,
    O_EXPECTED,
    O_LEAKAGE,
    O_MISS,
    O_COLD,
    O_BATTERY_LEVEL,
    O_UPLINK_BPS,
    O_ARRIVAL_UPLINK_BPS,
    O_REWARD,
    O_TERMINATED,
    O_TRUNCATED,
    O_QUEUE,
    O_CREDIT,
    O_DONE,
    O_TX_START,
    O_TX_END,
    O_TAIL_J,
    O_TAIL_END,
    O_CUT,
    O_NEXT,
    O_VM,
    O_FN,
    O_FN_CALL,
    O_CLOUD_EXIT,
    O_VARIANT,
) = range(36)
N_REPORTED = O_TRUNCATED + 1
# O_NEXT: when the device decides its next request (after its last: when done). A
# hybrid cloud's request: its VM and function seconds, whether it called a function,
# and the cloud exit that answered it (0: none, the final exit answered). Then the model
# variant the device ran.
N_OUT = 36
OBS_COLUMNS = 18  # the single device's 17 features, then the smoothed server queueing


@njit(cache=True, error_model="numpy")
def step_private(small, per_level, first_exit, exits, finals, tr, fs, ints, requests, out, obs):
    """A whole step where each device has the cloud to itself (one device, or
    independent ones): every phase in one call."""
    outcomes_private(small, per_level, first_exit, exits, finals, tr, fs, ints, requests, out)
    advance(small, tr, fs, ints, requests, out, obs)


@njit(cache=True, error_model="numpy")
def step_one(
    small,
    per_level,
    first_exit,
    exits,
    finals,
    tr,
    fs,
    ints,
    requests,
    out,
    obs,
    cut,
    thr,
    level,
    variant,
):
    """``step_private`` for one device, its action given as four integers."""
    ints[0, I_ACT_CUT], ints[0, I_ACT_THR], ints[0, I_ACT_LVL] = cut, thr, level
    ints[0, I_ACT_VARIANT] = variant
    step_private(small, per_level, first_exit, exits, finals, tr, fs, ints, requests, out, obs)


@njit(cache=True, error_model="numpy")
def outcomes_private(small, per_level, first_exit, exits, finals, tr, fs, ints, requests, out):
    """What each device's request does under its action with a cloud of its own."""
    start_requests(small, per_level, first_exit, exits, finals, tr, fs, ints, requests, out)
    private_cloud(small, first_exit, exits, fs, ints, requests, out)
    finish_requests(small, per_level, finals, fs, ints, requests, out)


@njit(cache=True, error_model="numpy")
def start_requests(small, per_level, first_exit, exits, finals, tr, fs, ints, requests, out):
    """Phase 1: each device's current request under its action (``I_ACT_*``), up to
    its upload. Writes ``out``; changes no state."""
    c = small[S_CONSTS]
    k = int(c[K_K])
    encode_dev = per_level[P_ENCODE_DEV]
    for d in range(len(fs)):
        cut, thr, level = ints[d, I_ACT_CUT], ints[d, I_ACT_THR], ints[d, I_ACT_LVL]
        v = ints[d, I_ACT_VARIANT]
        rows = S_DEVICE + N_DEVICE_ROWS * v
        block_cum, exit_cum = small[rows + V_BLOCK_CUM], small[rows + V_EXIT_CUM]
        exit_dev = small[rows + V_EXIT_DEV]
        index = ints[d, I_INDEX]
        if index >= requests.shape[2]:  # its episode is over: nothing to serve
            out[d, :] = 0.0
            continue
        i = int(requests[Q_SAMPLE, d, index])
        arrival = requests[Q_ARRIVAL, d, index]
        start = arrival if arrival > fs[d, D_FREE] else fs[d, D_FREE]
        early = small[S_THRESHOLDS, thr] <= 1.0
        exit_block = answering_exit(first_exit[v, i, thr], cut)
        row = ints[d, I_ROW]
        starts, cum, rates = tr[R_STARTS, row], tr[R_CUM, row], tr[R_RATES, row]
        seg, dur = int(tr[R_META, row, M_SEGMENTS]), tr[R_META, row, M_DURATION]
        off = fs[d, D_OFFSET]
        o = out[d]
        o[:] = 0.0
        o[O_CUT] = cut
        o[O_VARIANT] = v
        o[O_WAIT] = start - arrival
        o[O_BATTERY_LEVEL] = battery_level(fs[d, D_BATTERY], c[K_BATTERY_J])
        o[O_ARRIVAL_UPLINK_BPS] = rate_at(starts, rates, seg, dur, off + arrival)
        if start == arrival:
            o[O_UPLINK_BPS] = o[O_ARRIVAL_UPLINK_BPS]
        else:
            o[O_UPLINK_BPS] = rate_at(starts, rates, seg, dur, off + start)
        o[O_TAIL_END] = fs[d, D_TAIL_END]
        if exit_block > 0 or cut == k:  # the device answers
            device_s = device_seconds(
                block_cum, exit_cum, exit_dev, encode_dev, k, k, early, exit_block, 0
            )
            answered = exit_block if exit_block > 0 else k
            o[O_DEVICE] = device_s
            o[O_EXIT_BLOCK] = answered
            o[O_CORRECT] = exits[v, answered - 1, i, X_OK]
            o[O_CREDIT] = exits[v, answered - 1, i, X_CREDIT]
            o[O_EXPECTED] = exits[v, answered - 1, i, X_EXPECTED]
            o[O_DONE] = o[O_TX_START] = o[O_TX_END] = start + device_s
            continue
        device_s = device_seconds(
            block_cum, exit_cum, exit_dev, encode_dev, k, cut, early, 0, level
        )
        nbytes = finals[v, cut, level, i, Y_SENT]
        tx_start = start + device_s
        tx_end = finish_time(starts, cum, rates, seg, dur, off + tx_start, nbytes) - off
        o[O_DEVICE] = device_s
        o[O_OFFLOADED] = 1.0
        o[O_SENT] = nbytes
        o[O_TX_START] = tx_start
        o[O_TX_END] = tx_end


@njit(cache=True, error_model="numpy")
def private_cloud(small, first_exit, exits, fs, ints, requests, out):
    """Phase 2 where each device has the cloud to itself: no queue; a FaaS instance is
    cold when the device's own keep-alive ran out."""
    c = small[S_CONSTS]
    hybrid = small[S_HYBRID, H_ON] > 0.0
    for d in range(len(fs)):
        o = out[d]
        if o[O_OFFLOADED] == 0.0:
            continue
        if hybrid:
            hybrid_cloud(small, first_exit, exits, fs, ints, requests, d, o)
            continue
        cold = is_cold(c[K_IS_FAAS] > 0, o[O_TX_END], fs[d, D_CLOUD_LAST], c[K_KEEP_ALIVE_S])
        o[O_COLD] = 1.0 if cold else 0.0
        o[O_CLOUD] = cloud_seconds(small[S_CLOUD_TAIL, int(o[O_CUT])], cold, c[K_COLD_START_S])


@njit(cache=True, error_model="numpy")
def hybrid_cloud(small, first_exit, exits, fs, ints, requests, d, o):
    """A hybrid cloud's phase 2 for device ``d``'s offloaded request (row ``o``): its
    path (``hybrid_path``), and the function call cold when the device's own
    keep-alive of it ran out (``D_CLOUD_LAST``: its last call)."""
    c = small[S_CONSTS]
    hybrid_path(small, first_exit, exits, ints, requests, d, o)
    vm_s, fn_s, calls = o[O_VM], o[O_FN], o[O_FN_CALL] > 0.0
    cold = is_cold(calls, o[O_TX_END] + vm_s, fs[d, D_CLOUD_LAST], c[K_KEEP_ALIVE_S])
    o[O_COLD] = 1.0 if cold else 0.0
    o[O_CLOUD] = cloud_seconds(vm_s + fn_s, cold, c[K_COLD_START_S])


@njit(cache=True, error_model="numpy")
def hybrid_path(small, first_exit, exits, ints, requests, d, o):
    """The path of device ``d``'s offloaded request (row ``o``) on a hybrid cloud, but
    for any cold start: the VM runs blocks ``cut+1..split`` with their exits; an exit
    that reaches the threshold answers (its correctness from the profile's per-sample
    arrays) and no function is called; else a function runs the rest to the final exit.
    Fills ``O_VM``, ``O_FN``, ``O_FN_CALL`` and ``O_CLOUD_EXIT``."""
    c, h = small[S_CONSTS], small[S_HYBRID]
    k = int(c[K_K])
    cut, thr, v = ints[d, I_ACT_CUT], ints[d, I_ACT_THR], ints[d, I_ACT_VARIANT]
    i = int(requests[Q_SAMPLE, d, ints[d, I_INDEX]])
    split = int(small[S_SPLIT, cut * int(h[H_N_THRESHOLDS]) + thr])
    answered = hybrid_exit(first_exit[v, i, thr], cut, split)
    end = answered if answered > 0 else split
    vm_s = span_seconds(small[S_VM_CUM], h[H_VM_OVERHEAD_S], cut, end)
    calls = answered == 0 and split < k
    o[O_VM] = vm_s
    o[O_FN] = small[S_FN_TAIL, split] if calls else 0.0
    o[O_FN_CALL] = 1.0 if calls else 0.0
    if answered > 0:
        o[O_CLOUD_EXIT] = answered
        o[O_CORRECT] = exits[v, answered - 1, i, X_OK]
        o[O_CREDIT] = exits[v, answered - 1, i, X_CREDIT]
        o[O_EXPECTED] = exits[v, answered - 1, i, X_EXPECTED]


@njit(cache=True, error_model="numpy")
def hybrid_paths(small, first_exit, exits, ints, requests, out):
    """Phase 2a where a fleet shares a hybrid cloud: each offloaded request's path
    (``hybrid_path``) with ``O_CLOUD`` its busy seconds on the VM and the function,
    before any queue or cold start (``sim.cloud.SharedCloud.serve_hybrid``). Writes
    ``out``; changes no state."""
    for d in range(out.shape[0]):
        o = out[d]
        if o[O_OFFLOADED] == 0.0:
            continue
        hybrid_path(small, first_exit, exits, ints, requests, d, o)
        o[O_CLOUD] = o[O_VM] + o[O_FN]


@njit(cache=True, error_model="numpy")
def hybrid_money_carbon(h, o):
    """A hybrid cloud's bill and grams for a request (row ``o``, after ``hybrid_cloud``):
    the VM's busy seconds, and the function call where it made one."""
    usd = hybrid_usd(
        o[O_VM],
        o[O_FN],
        o[O_FN_CALL] > 0.0,
        h[H_VM_PRICE_PER_S],
        h[H_VM_UTILISATION],
        h[H_FN_GRANULARITY_S],
        h[H_FN_PRICE_PER_REQUEST],
        h[H_FN_PRICE_PER_GB_S],
        h[H_FN_MEMORY_GB],
    )
    grams = hybrid_carbon_g(
        o[O_VM],
        o[O_FN],
        h[H_VM_WATTS],
        h[H_VM_PUE],
        h[H_VM_G_PER_J],
        h[H_FN_WATTS],
        h[H_FN_PUE],
        h[H_FN_G_PER_J],
    )
    return usd, grams


@njit(cache=True, error_model="numpy")
def finish_requests(small, per_level, finals, fs, ints, requests, out):
    """Phase 3: latency, energy, money, leakage and reward of each request (the cloud's
    ``O_QUEUE`` and service time ``O_CLOUD`` filled in). Writes ``out``; changes no
    state."""
    c = small[S_CONSTS]
    for d in range(len(fs)):
        o = out[d]
        if o[O_OFFLOADED] > 0.0:
            cut, level, v = ints[d, I_ACT_CUT], ints[d, I_ACT_LVL], ints[d, I_ACT_VARIANT]
            i = int(requests[Q_SAMPLE, d, ints[d, I_INDEX]])
            rtt = fs[d, D_RTT]
            cloud_s = o[O_CLOUD] + o[O_QUEUE]
            o[O_CLOUD] = cloud_s
            tx_s = o[O_TX_END] - o[O_TX_START]
            done = o[O_TX_END] + rtt + cloud_s
            o[O_DONE] = done
            o[O_LATENCY] = done - requests[Q_ARRIVAL, d, ints[d, I_INDEX]]
            o[O_NETWORK] = tx_s + rtt
            nbytes = o[O_SENT]
            tx_j = transmit_j(fs[d, D_BASE_W], fs[d, D_PER_MBPS_W], tx_s, nbytes)
            tail_j = radio_tail_j(
                fs[d, D_TAIL_W], fs[d, D_TAIL_S], o[O_TX_START], fs[d, D_TAIL_END]
            )
            o[O_TAIL_J] = tail_j
            o[O_ENERGY] = request_energy_j(
                c[K_ACTIVE_W], c[K_IDLE_W], o[O_DEVICE], tx_j, tail_j, rtt + cloud_s
            )
            if small[S_HYBRID, H_ON] > 0.0:
                cloud_usd, cloud_g = hybrid_money_carbon(small[S_HYBRID], o)
            else:
                cloud_usd, cloud_g = small[S_CLOUD_USD, cut], small[S_CLOUD_CARBON, cut]
            o[O_MONEY] = request_money_usd(nbytes, c[K_USD_PER_BYTE], cloud_usd)
            o[O_CARBON] = request_carbon_g(o[O_ENERGY], c[K_DEVICE_G_PER_J], cloud_g)
            if o[O_CLOUD_EXIT] == 0.0:  # the final exit answered (else a hybrid's VM exit)
                o[O_CORRECT] = finals[v, cut, level, i, Y_OK]
                o[O_CREDIT] = finals[v, cut, level, i, Y_CREDIT]
                o[O_EXPECTED] = finals[v, cut, level, i, Y_EXPECTED]
            o[O_LEAKAGE] = per_level[P_LEAK, cut, level]
            o[O_TAIL_END] = o[O_TX_END] + fs[d, D_TAIL_S]
        else:
            o[O_LATENCY] = o[O_WAIT] + o[O_DEVICE]
            o[O_ENERGY] = request_energy_j(c[K_ACTIVE_W], c[K_IDLE_W], o[O_DEVICE], 0.0, 0.0, 0.0)
            o[O_CARBON] = request_carbon_g(o[O_ENERGY], c[K_DEVICE_G_PER_J], 0.0)
        o[O_MISS] = 1.0 if o[O_LATENCY] > c[K_DEADLINE_S] else 0.0
        charge_reward(c, o)


@njit(cache=True, error_model="numpy")
def charge_reward(c, o) -> None:
    """A request's reward from its outcome row ``o`` (``formulas.reward``)."""
    o[O_REWARD] = reward(
        c[K_REWARD:N_CONSTS],
        o[O_CREDIT],
        o[O_LATENCY],
        o[O_ENERGY],
        o[O_MONEY],
        o[O_LEAKAGE],
        o[O_BATTERY_LEVEL],
        o[O_CARBON],
    )


@njit(cache=True, error_model="numpy")
def advance(small, tr, fs, ints, requests, out, obs):
    """Apply each device's request (``out``) to its state, wait idle for its next
    request (a background probe on the way where the scenario has them), and write the
    observation of that request into ``obs``. A device whose episode ends (its last
    request: truncated; an empty battery: terminated) is observed after its last
    request; ``O_TERMINATED`` / ``O_TRUNCATED`` say which."""
    c = small[S_CONSTS]
    arrivals = requests[Q_ARRIVAL]
    for d in range(len(fs)):
        if ints[d, I_INDEX] >= arrivals.shape[1]:  # its episode is over
            continue
        o = out[d]
        done = o[O_DONE]
        fs[d, D_BATTERY] -= o[O_ENERGY]
        fs[d, D_FREE] = done
        if o[O_OFFLOADED] > 0.0:
            fs[d, D_TAIL_END] = o[O_TAIL_END]
            if small[S_HYBRID, H_ON] == 0.0 or o[O_FN_CALL] > 0.0:  # what has a keep-alive
                fs[d, D_CLOUD_LAST] = done
            tx_s, nbytes = o[O_TX_END] - o[O_TX_START], o[O_SENT]
            if tx_s > 0 and nbytes > 0:
                record_sample(fs, ints, d, o[O_TX_END], nbytes * 8.0 / tx_s)
            fs[d, D_RTT_EST] = smoothed(fs[d, D_RTT_EST], fs[d, D_RTT], RTT_ALPHA)
            fs[d, D_SERVER_QUEUE] = smoothed(fs[d, D_SERVER_QUEUE], o[O_QUEUE], QUEUE_EWMA)
        ints[d, I_CUT], ints[d, I_THR] = ints[d, I_ACT_CUT], ints[d, I_ACT_THR]
        ints[d, I_LVL] = ints[d, I_ACT_LVL]
        index = ints[d, I_INDEX] + 1
        ints[d, I_INDEX] = index
        if index >= arrivals.shape[1]:  # the episode's last request: observe the state after it
            terminated = fs[d, D_BATTERY] <= 0.0
            o[O_TERMINATED] = 1.0 if terminated else 0.0
            o[O_TRUNCATED] = 0.0 if terminated else 1.0
            o[O_NEXT] = done
            observe(c, fs, ints, arrivals, d, index - 1, done, obs[d])
            continue
        nxt = arrivals[d, index] if arrivals[d, index] > done else done
        o[O_NEXT] = nxt
        fs[d, D_BATTERY] -= c[K_IDLE_W] * (nxt - done)
        if c[K_PROBE_INTERVAL_S] > 0:
            probe(c, tr, fs, ints, d, done, nxt, o)
        o[O_TERMINATED] = 1.0 if fs[d, D_BATTERY] <= 0.0 else 0.0
        observe(c, fs, ints, arrivals, d, index, nxt, obs[d])


@njit(cache=True, error_model="numpy")
def record_sample(fs, ints, d, done_s, bps):
    """Device ``d`` measured a transfer of ``bps`` that finished at ``done_s``."""
    n = N_TPUT_SAMPLES
    ints[d, I_SAMPLES], fs[d, D_ESTIMATE] = push_sample(
        fs[d, D_TIMES : D_TIMES + n],
        fs[d, D_RATES : D_RATES + n],
        fs[d, D_LOGS : D_LOGS + n],
        fs[d, D_INVERSES : D_INVERSES + n],
        ints[d, I_SAMPLES],
        done_s,
        bps,
    )


@njit(cache=True, error_model="numpy")
def probe(c, tr, fs, ints, d, done_s, nxt, o):
    """A background probe between two requests, if the newest throughput sample is
    older than the probe interval; its energy and data are charged to the request just
    finished (its reward recomputed)."""
    last_sample = fs[d, D_TIMES + N_TPUT_SAMPLES - 1] if ints[d, I_SAMPLES] > 0 else -np.inf
    interval, nbytes = c[K_PROBE_INTERVAL_S], c[K_PROBE_BYTES]
    if nxt - last_sample < interval:
        return
    tp = last_sample + interval if last_sample + interval > done_s else done_s
    row, off = ints[d, I_ROW], fs[d, D_OFFSET]
    tx_end = (
        finish_time(
            tr[R_STARTS, row],
            tr[R_CUM, row],
            tr[R_RATES, row],
            int(tr[R_META, row, M_SEGMENTS]),
            tr[R_META, row, M_DURATION],
            off + tp,
            nbytes,
        )
        - off
    )
    if tx_end > nxt:
        return  # would still be in flight at the decision: not sent yet
    tx_s = tx_end - tp
    energy = transmit_j(fs[d, D_BASE_W], fs[d, D_PER_MBPS_W], tx_s, nbytes) + radio_tail_j(
        fs[d, D_TAIL_W], fs[d, D_TAIL_S], tp, fs[d, D_TAIL_END]
    )
    fs[d, D_TAIL_END] = tx_end + fs[d, D_TAIL_S]
    fs[d, D_BATTERY] -= energy
    if tx_s > 0:
        record_sample(fs, ints, d, tx_end, nbytes * 8.0 / tx_s)
    o[O_ENERGY] += energy
    o[O_MONEY] += nbytes * c[K_USD_PER_BYTE]
    o[O_CARBON] += request_carbon_g(energy, c[K_DEVICE_G_PER_J], 0.0)
    charge_reward(c, o)  # again, with the probe's energy and data


@njit(cache=True, error_model="numpy")
def observe(c, fs, ints, arrivals, d, index, now, obs):
    """Device ``d``'s observation of request ``index`` at ``now`` (its decision time)."""
    # Requests that arrived by ``now`` and wait behind this one.
    queue = bisect_right(arrivals[d], now, index + 1, arrivals.shape[1]) - index - 1
    fill_observation(
        obs,
        fs[d, D_TIMES : D_TIMES + N_TPUT_SAMPLES],
        fs[d, D_LOGS : D_LOGS + N_TPUT_SAMPLES],
        ints[d, I_SAMPLES],
        fs[d, D_ESTIMATE],
        fs[d, D_RTT_EST],
        battery_level(fs[d, D_BATTERY], c[K_BATTERY_J]),
        ints[d, I_CUT],
        ints[d, I_THR],
        ints[d, I_LVL],
        fs[d, D_TAIL_END],
        fs[d, D_CLOUD_LAST],
        now,
        now - arrivals[d, index],
        queue,
        fs[d, D_CONTEXT : D_CONTEXT + N_CONTEXT],
    )
    q = fs[d, D_SERVER_QUEUE] / c[K_DEADLINE_S]
    obs[OBS_COLUMNS - 1] = q if q < OBS_HIGH else OBS_HIGH


@njit(cache=True, error_model="numpy")
def observe_all(small, fs, ints, requests, obs):
    """Every device's observation of its current request at its decision time."""
    c = small[S_CONSTS]
    arrivals = requests[Q_ARRIVAL]
    for d in range(len(fs)):
        index = ints[d, I_INDEX]
        arrival = arrivals[d, index]
        now = arrival if arrival > fs[d, D_FREE] else fs[d, D_FREE]
        observe(c, fs, ints, arrivals, d, index, now, obs[d])
