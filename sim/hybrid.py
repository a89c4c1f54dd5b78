"""The hybrid cloud's tables: the tail split between a reserved VM and functions.

A request offloaded at ``cut`` under a hybrid cloud (a catalog entry of ``kind =
"hybrid"``) first reaches the VM, which runs blocks ``cut+1..split`` with their early
exits: a request whose confidence reaches the action's threshold at one of them is
answered there, by that exit, and calls no function. The others cross to a function
that runs blocks ``split+1..K`` to the final exit, cold when the function's
keep-alive ran out. ``split == cut``: the whole tail on the functions (a FaaS cloud);
``split == K``: on the VM, exits included.

The split is chosen once per (cut, threshold) from the profile's measured exit shares
at the hybrid's ``rate_hz`` (``sim.cloud_cost.hybrid_split``). The kernel reads these
tables (``sim.devices.system_arrays``) and charges each request with ``sim.formulas``;
``per_cut`` gives Python callers that know no sample the path that no cloud exit
answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from profiles.catalog import Cloud
from sim import formulas
from sim.cloud_cost import block_seconds, hybrid_split, tail_seconds

if TYPE_CHECKING:  # built by ``System``
    from sim.system import System


@dataclass(frozen=True, kw_only=True)
class HybridTables:
    """What a request needs of a hybrid cloud, as plain numbers and arrays."""

    vm: Cloud
    functions: Cloud
    split: np.ndarray  # [cut, threshold]: the last block on the VM (cut: none; K: all)
    vm_cum: np.ndarray  # [b]: VM busy seconds of blocks 1..b with their exits' heads
    fn_tail_s: np.ndarray  # [split]: a function call's busy seconds from the split (K: 0)
    vm_g_per_j: float  # the VM's and the functions' grids, grams of CO2e per joule
    fn_g_per_j: float

    def vm_seconds(self, cut: int, end: int) -> float:
        """The VM's busy seconds for blocks ``cut+1..end`` (0: not on the VM)."""
        return formulas.span_seconds(self.vm_cum, self.vm.overhead_s, cut, end)

    def usd(self, vm_s: float, fn_s: float) -> float:
        """A request's bill: the VM's busy seconds, and the function call if it made one."""
        v, f = self.vm, self.functions
        return formulas.hybrid_usd(
            vm_s,
            fn_s,
            fn_s > 0.0,
            v.price_per_s,
            v.utilisation,
            f.billing_granularity_s,
            f.price_per_request,
            f.price_per_gb_s,
            f.memory_gb,
        )

    def carbon_g(self, vm_s: float, fn_s: float) -> float:
        """Grams of CO2e of a request's busy seconds on the VM and on the function."""
        v, f = self.vm, self.functions
        return formulas.hybrid_carbon_g(
            vm_s, fn_s, v.watts, v.pue, self.vm_g_per_j, f.watts, f.pue, self.fn_g_per_j
        )

    def per_cut(self) -> tuple[list[float], list[float], list[float]]:
        """Per cut ``0..K-1``: the seconds, USD and grams of a request that no cloud exit
        answers, at the threshold whose split makes it slowest (a bound, for callers that
        know no sample: the heuristics' predictor, the device loop's carbon)."""
        k = len(self.vm_cum) - 1
        seconds, usd, grams = [], [], []
        for cut in range(k):
            paths = [
                (self.vm_seconds(cut, split), float(self.fn_tail_s[split]))
                for split in (int(v) for v in self.split[cut])
            ]
            vm_s, fn_s = max(paths, key=sum)
            seconds.append(float(vm_s + fn_s))
            usd.append(float(self.usd(vm_s, fn_s)))
            grams.append(float(self.carbon_g(vm_s, fn_s)))
        return seconds, usd, grams


def hybrid_tables(s: System, vm: Cloud, functions: Cloud, rate_hz: float) -> HybridTables:
    """``s``'s hybrid of ``vm`` and ``functions``, split for ``rate_hz`` (needs its
    profile, blocks, exits and thresholds)."""
    k = s.k
    split = np.array(
        [
            [hybrid_split(s, vm, functions, cut, t, rate_hz) for t in s.thresholds]
            for cut in range(k)
        ],
        dtype=np.int64,
    )
    vm_cum = np.concatenate([[0.0], np.cumsum(block_seconds(s, vm))])
    fn_tail = [tail_seconds(s.base_profile, functions, b) for b in range(k)] + [0.0]
    grids = s.catalog.grids
    return HybridTables(
        vm=vm,
        functions=functions,
        split=split,
        vm_cum=vm_cum,
        fn_tail_s=np.asarray(fn_tail),
        vm_g_per_j=grids[vm.grid].g_per_kwh / formulas.J_PER_KWH,
        fn_g_per_j=grids[functions.grid].g_per_kwh / formulas.J_PER_KWH,
    )
