"""What the cloud's tail costs at a request rate: a reserved VM (IaaS), serverless
functions (FaaS), or the tail split between them (the hybrid).

The tail of an offloaded request runs blocks ``cut+1..K``. Its early exits can answer in
the cloud too: a request whose confidence reaches the threshold at a cloud block stops
there. The hybrid runs the shallow blocks ``cut+1..split`` (and their exits) on reserved
VMs, and sends only the requests that none of those exits answered to functions for
blocks ``split+1..K``: the share that leaves early (measured on the profile's validation
samples) never pays for a call. The split is the one that costs least at the rate.

* **IaaS**: ``ceil(rate * busy / utilisation)`` VMs, at least one, each billed every
  second whether busy or not (``price_per_s``): per request ``VMs * price_per_s / rate``.
  Cheap when busy, dear when idle.
* **FaaS**: per call ``price_per_request + price_per_gb_s * memory_gb * billed(busy)``,
  whatever the rate.
* The rate where the two cost the same is the **cost-indifference point**
  (``indifference_rate_hz``); above it a VM is cheaper.

The busy seconds of a block follow the profile's host times over each cloud's
``speedup``, and each call adds the cloud's ``overhead_s`` (``System.cloud_tail_s`` does
the same for the whole tail). Cold starts and queueing are left out: this is the bill,
not the latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from profiles.catalog import Cloud
from sim.exits import early_exit_conf, first_exits
from sim.formulas import faas_call_usd

if TYPE_CHECKING:  # ``sim.system`` builds its cloud tables from this module
    from profiles.profile_io import Profile
    from sim.system import System

KINDS = ("iaas", "faas", "hybrid")


@dataclass(frozen=True)
class TailCost:
    """USD per 1,000 offloaded requests at ``rate_hz`` for each way of serving the
    tail, and the hybrid's split (the last block on the VM; ``cut``: none)."""

    rate_hz: float
    iaas: float
    faas: float
    hybrid: float
    split: int

    @property
    def cheapest(self) -> str:
        return min(KINDS, key=lambda kind: getattr(self, kind))


def tail_seconds(p: Profile, cloud: Cloud, cut: int) -> float:
    """Busy seconds of one call on ``cloud`` that runs blocks ``cut+1..K`` and the final
    exit (no early exit checked), its ``overhead_s`` included: the whole tail of an iaas
    or faas cloud (``System.cloud_tail_s``), or a hybrid's functions from its split."""
    return float(p.block_host_s[cut:].sum() + p.exit_host_s[-1]) / cloud.speedup + cloud.overhead_s


def block_seconds(s: System, cloud: Cloud) -> np.ndarray:
    """Busy seconds of each block 1..K on ``cloud`` (index 0: block 1), with its exit's
    head where it has one (a cloud exit is evaluated, whether or not it answers)."""
    p = s.base_profile  # the cloud runs the base model, whichever variant the device does
    busy = np.array(p.block_host_s, dtype=float).copy()
    exits = np.array(p.exit_host_s, dtype=float)
    busy += np.where(np.array(s.has_exit, dtype=bool), exits, 0.0)
    return busy / cloud.speedup


def leaves_by(s: System, cut: int, threshold: float) -> np.ndarray:
    """Of the requests offloaded at ``cut`` (no device exit answered them), the share
    that a cloud exit at or before each block ``cut+1..K-1`` answers (index ``b - cut -
    1``); measured on the validation samples' exit confidences."""
    first = first_exits(early_exit_conf(s.base_profile.splits["val"], s.has_exit), threshold)
    sent = (first == 0) | (first > cut)
    blocks = np.arange(cut + 1, s.k)
    if not sent.any():
        return np.zeros(len(blocks))
    return np.array([((first > cut) & (first <= b) & sent).sum() / sent.sum() for b in blocks])


def iaas_usd(cloud: Cloud, busy_s: float, rate_hz: float) -> float:
    """Per request: the VMs the rate keeps busy (at least one), billed every second."""
    vms = max(1, math.ceil(rate_hz * busy_s / cloud.utilisation))
    return vms * cloud.price_per_s / rate_hz


def faas_usd(cloud: Cloud, busy_s: float) -> float:
    """Per call: the request fee and the billed GB-seconds."""
    c = cloud
    return faas_call_usd(
        busy_s, c.billing_granularity_s, c.price_per_request, c.price_per_gb_s, c.memory_gb
    )


def tail_cost(
    s: System, iaas: Cloud, faas: Cloud, cut: int, threshold: float, rate_hz: float
) -> TailCost:
    """What 1,000 requests offloaded at ``cut`` cost at ``rate_hz`` each way."""
    # The VM evaluates its exits on the way; a function runs the rest to the final exit
    # (``tail_seconds``, as the simulator charges it).
    on_vm, vm_s = block_seconds(s, iaas)[cut:], iaas.overhead_s  # each call's dispatch
    whole_vm = iaas_usd(iaas, vm_s + float(on_vm.sum()), rate_hz)
    whole_fn = faas_usd(faas, tail_seconds(s.base_profile, faas, cut))
    best, split = min(whole_vm, whole_fn), cut
    for i, left in enumerate(1.0 - leaves_by(s, cut, threshold)):  # split after block cut+1+i
        shallow = iaas_usd(iaas, vm_s + float(on_vm[: i + 1].sum()), rate_hz)
        deep = left * faas_usd(faas, tail_seconds(s.base_profile, faas, cut + 1 + i))
        if shallow + deep < best:
            best, split = shallow + deep, cut + 1 + i
    hybrid = best if split > cut else min(whole_vm, whole_fn)
    return TailCost(rate_hz, 1e3 * whole_vm, 1e3 * whole_fn, 1e3 * hybrid, split)


def hybrid_split(
    s: System, vm: Cloud, functions: Cloud, cut: int, threshold: float, rate_hz: float
) -> int:
    """The hybrid's last block on the VM for requests offloaded at ``cut``: ``tail_cost``'s
    cheapest split at ``rate_hz``; where no split pays, the whole tail on the cheaper
    of the two (``K``: all on the VM, ``cut``: all on the functions)."""
    cost = tail_cost(s, vm, functions, cut, threshold, rate_hz)
    if cost.split > cut:
        return cost.split
    return s.k if cost.iaas < cost.faas else cut


def indifference_rate_hz(s: System, iaas: Cloud, faas: Cloud, cut: int) -> float:
    """The request rate at which one reserved VM costs what the functions do (the VM
    alone, below the rate that would need a second one)."""
    fn = faas_usd(faas, tail_seconds(s.base_profile, faas, cut))
    return iaas.price_per_s / fn
