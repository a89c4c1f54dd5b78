"""The system a scenario describes, turned into the numbers one request needs.

Built once per environment from the scenario, the measured profile and the catalog:

* device time of each block / exit / encoder = host time x ``slowdown``, where
  ``slowdown`` = (host effective GFLOP/s over the whole model) / (device GFLOP/s):
  the per-block shape stays measured, the overall speed is the device's; or, for a
  device entry measured on the device itself (``profiles.measure_device``), its
  measured times;
* cloud time of the tail from each cut = host time / cloud ``speedup`` + overhead;
* radio power, tail and uplink scaling per trace family;
* energy and money references that make the reward weights comparable;
* per model variant the scenario allows (``[scenario].variants``), a ``System`` of
  that variant (``variant_systems``): the device's blocks and exits as the variant
  runs them, on the base model's clock and the same cloud.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from profiles.catalog import Catalog, Cloud, Device, Radio, load_catalog
from profiles.profile_io import Profile, load_profile
from sim import formulas
from sim.cloud_cost import tail_seconds
from sim.exits import early_exit_conf, first_exits
from sim.hybrid import HybridTables, hybrid_tables
from sim.reward import Reward
from sim.scenario import Scenario, ScenarioError
from telemetry.observation import ObservationContext

J_PER_KWH = formulas.J_PER_KWH


class Outcome(NamedTuple):
    """Everything one request did (built by ``sim.physics``, by keyword). Times in
    seconds, energy in joules, money in USD. (A NamedTuple: the simulator builds one per
    request, and this is the fastest.)"""

    latency_s: float
    wait_s: float
    device_s: float
    network_s: float
    cloud_s: float
    energy_j: float
    money_usd: float
    carbon_g: float  # grams of CO2e: the device's energy and the cloud's at their grids
    sent_bytes: int
    exit_block: int  # block whose exit answered on the device; 0 when the cloud answered
    offloaded: bool
    correct: bool
    leakage: float
    cold_start: bool
    deadline_miss: bool
    reward: float
    tail_j: float  # radio tail energy charged to this request (net of the refund)
    # State after the request (applied by the caller).
    done_s: float
    tx_start_s: float
    tx_end_s: float
    radio_tail_end_s: float
    credit: float  # what the reward credited for accuracy (see ``accuracy_credit``)
    expected: float  # the calibrated accuracy of answers at this exit and confidence


class System:
    """Scenario + profile + catalog, precomputed for fast per-request simulation."""

    def __init__(
        self,
        scenario: Scenario,
        profile: Profile | None = None,
        catalog: Catalog | None = None,
        accuracy_credit: str = "realized",
        variant: str | None = None,
        base: System | None = None,
    ) -> None:
        self.scenario = scenario
        self._sources(profile, catalog, variant, base)
        p = self.profile
        self.k = p.n_blocks
        self.n_cuts = self.k + 1
        self.n_levels = p.n_levels
        # Levels each cut 0..K-1 offers (a learned bottleneck adds some at its cut only).
        self.levels_by_cut = [p.levels_at(c) for c in range(self.k)]
        self.thresholds = tuple(float(t) for t in scenario.thresholds)
        self.n_thresholds = len(self.thresholds)
        self._device_times(p, base)
        self._cloud_tables()
        self._carbon(scenario)
        self._references(scenario)
        self._sample_tables(p, accuracy_credit)
        if self.cloud.kind == "hybrid":
            self._hybrid(self.cloud)
        # Leakage the reward charges: 0 where the profile could not measure it (inputs
        # that are not images; ``profile.meta["leakage_reason"]`` says why).
        self.leak = p.leakage_or_zero().tolist()
        # One System per variant the controller may choose, in the scenario's order (a
        # variant's own System lists only itself).
        if base is None:
            self.variant_systems: list[System] = [
                self if name == self.variant else self._variant_system(name, accuracy_credit)
                for name in scenario.variants
            ]
        else:
            self.variant_systems = [self]
        self.n_variants = len(self.variant_systems)

    def _sources(
        self, profile: Profile | None, catalog: Catalog | None, variant: str | None, base
    ) -> None:
        """The profile as measured and as the device sees it running ``variant`` (its
        blocks' times and per-sample arrays; the cloud runs the base model's tail; the
        scenario's first variant by default: what a three-component action runs), the
        catalog, and the device and cloud the scenario names in it."""
        scenario = self.scenario
        self.base_profile = (
            base.base_profile if base else (profile or load_profile(scenario.profile))
        )
        if base is None:
            self._check_variants(scenario)
        self.variant = variant or scenario.variants[0]
        self.profile = self.base_profile.variant(self.variant)
        self.catalog = base.catalog if base else (catalog or load_catalog(scenario.catalog))
        self.device: Device = self.catalog.device(scenario.device)
        self.cloud: Cloud = self.catalog.cloud(scenario.cloud)
        for family in scenario.radio_by_family:
            self.catalog.radio(scenario.radio_for(family))  # fail early on a bad name
        self.catalog.radio(scenario.default_radio)

    def _cloud_tables(self) -> None:
        """Per cut, the cloud's seconds and bill for the tail (a hybrid's: ``_hybrid``,
        once the samples' exits are known)."""
        c = self.cloud
        self.is_faas = c.kind == "faas"
        # Whether an offload can meet a cold instance: functions, alone or behind a VM.
        self.may_go_cold = c.kind in ("faas", "hybrid")
        self.hybrid: HybridTables | None = None  # a hybrid cloud's tables (``sim.hybrid``)
        if c.kind != "hybrid":
            # The cloud runs the base model's tail, whichever variant the device runs.
            tail_p = self.base_profile
            self.cloud_tail_s = [tail_seconds(tail_p, c, cut) for cut in range(self.k)]
            self.cloud_usd = [self.cloud_money(busy) for busy in self.cloud_tail_s]  # per cut

    def _references(self, scenario: Scenario) -> None:
        """The battery, the energy, money and carbon references that make the reward's
        weights comparable, and the reward itself (``sim.reward``)."""
        self.data_usd_per_byte = self.catalog.data_usd_per_gb / 1e9
        battery = scenario.battery.capacity_j or self.device.battery_j
        self.battery_capacity_j = battery
        w = scenario.reward
        self.energy_ref_j = battery / w.requests_per_charge
        self.money_ref_usd = w.money_ref_usd
        self.carbon_ref_g = self.energy_ref_j * self.device_g_per_j
        # The reward of a request, for one request or a batch.
        self.reward = Reward(
            w,
            scenario.workload.deadline_s,
            self.energy_ref_j,
            w.money_ref_usd,
            self.carbon_ref_g,
        )

    def _check_variants(self, scenario: Scenario) -> None:
        """Every variant the scenario lists is one its profile measured."""
        known = self.base_profile.variant_names
        for name in scenario.variants:
            if name not in known:
                raise ScenarioError(
                    f"{scenario.source}: [scenario].variants: {name!r} is not a variant of the "
                    f"profile {self.base_profile.path} (it has {', '.join(known)}; python -m "
                    "profiles.variant_profile measures int8 and pruned50)"
                )

    def _variant_system(self, name: str, accuracy_credit: str) -> System:
        return System(self.scenario, accuracy_credit=accuracy_credit, variant=name, base=self)

    def _device_times(self, p: Profile, base: System | None) -> None:
        """Each block's, exit's and codec's time on the device (measured on it for this
        model, or the profile's host times at its speed), and their running sums. A
        variant's blocks run at the base model's ``slowdown`` (the device's speed
        against the host's, measured on the base model) and, on a device measured
        itself, at the base's measured times: either way scaled by the host time the
        variant's blocks took against the base's (``variant_ratio``)."""
        base_host, exit_host = self.base_profile.compute_host_s()
        host_gflops = float(p.block_flops.sum() / base_host.sum()) / 1e9
        self.host_gflops = host_gflops
        self.slowdown = base.slowdown if base else host_gflops / self.device.gflops
        s = self.slowdown
        ratio = p.block_host_s / self.base_profile.block_host_s  # 1 for the base model
        block_host = base_host * ratio
        if self.device.measured:  # times measured on the device itself, for this model
            self._check_measured(self.device, p)
            self.block_dev_s = [float(v) for v in np.asarray(self.device.block_s) * ratio]
            self.exit_dev_s = list(self.device.exit_s)
            self.encode_dev_s = [list(row) for row in self.device.encode_s]
        else:  # the profile's host times at the device's speed
            self.block_dev_s = [float(v) * s for v in block_host]
            self.exit_dev_s = [float(v) * s for v in exit_host]
            self.encode_dev_s = [[float(v) * s for v in row] for row in p.encode_host_s]
        self.encode_dev = np.asarray(self.encode_dev_s, dtype=np.float64)  # [cut, level]
        # Cumulative device times: blocks 1..b and exits 1..b.
        self.block_cum = [0.0]
        self.exit_cum = [0.0]
        for b in range(self.k):
            self.block_cum.append(self.block_cum[-1] + self.block_dev_s[b])
            self.exit_cum.append(self.exit_cum[-1] + self.exit_dev_s[b])

    def _sample_tables(self, p: Profile, accuracy_credit: str) -> None:
        """Per-sample outcome tables as Python lists: indexing lists is what a step
        does."""
        split = p.splits[self.scenario.workload.sample_split]
        self.n_samples = split.n
        # Per threshold and sample, the first early exit (1..K-1) whose confidence
        # reaches the threshold, 0 if none: the exit loop, done once instead of per step.
        self.has_exit = p.has_exit
        early = early_exit_conf(split, self.has_exit)
        self.first_exit = [first_exits(early, t).tolist() for t in self.thresholds]
        self.exit_ok = split.exit_correct.tolist()
        self.sent = split.sent_bytes.tolist()
        self.final_ok = split.final_correct.tolist()
        # The expected correctness of each answer given the confidence of the exit that
        # answered, calibrated on the same split: what a policy that cannot see labels
        # can count on. Evaluation reports rewards with it beside the realized ones.
        self.exit_expected, self.final_expected = _calibrated_credit(split)
        # What the reward credits for accuracy: the realized correctness, or (for
        # training) its expectation. Correctness never changes what happens next, so the
        # expectation keeps the objective and removes most of its noise.
        if accuracy_credit == "realized":
            self.exit_credit, self.final_credit = self.exit_ok, self.final_ok
        elif accuracy_credit == "expected":
            self.exit_credit, self.final_credit = self.exit_expected, self.final_expected
        else:
            raise ValueError(
                f"accuracy_credit must be realized or expected, not {accuracy_credit!r}"
            )

    def _hybrid(self, c: Cloud) -> None:
        """A hybrid cloud's tables, split at each cut and threshold from the exits'
        measured shares; per cut, the path no cloud exit answers (``HybridTables.per_cut``)."""
        self.scenario.require_base_model(
            f"[scenario].cloud '{c.name}' is a hybrid, whose cloud exits are measured on the "
            "base model and which"
        )
        vm, functions = self.catalog.cloud(c.vm), self.catalog.cloud(c.functions)
        self.hybrid = hybrid_tables(self, vm, functions, c.rate_hz)
        self.cloud_tail_s, self.cloud_usd, self.cloud_carbon_g = self.hybrid.per_cut()

    @staticmethod
    def _check_measured(device: Device, profile: Profile) -> None:
        from profiles.catalog import CatalogError

        where = f"[devices.{device.name}]"
        if device.model_hash != profile.model_hash:
            raise CatalogError(
                f"{where}: times measured on model {device.model_hash}, but the profile "
                f"{profile.path} is of model {profile.model_hash}; measure the device with "
                "this model (python -m profiles.measure_device)"
            )
        k, levels = profile.n_blocks, profile.n_levels
        if len(device.block_s) != k or any(len(row) != levels for row in device.encode_s):
            raise CatalogError(f"{where}: measured times are not {k} blocks x {levels} codecs")

    def radio(self, family: str) -> Radio:
        return self.catalog.radio(self.scenario.radio_for(family))

    def observation_context(self, radio: Radio) -> ObservationContext:
        """The fixed part of a device's observation on ``radio``: its deadline, the
        action grid, the radio's tail and the cloud's keep-alive (the simulator's and
        the real device's alike)."""
        return ObservationContext(
            deadline_s=self.scenario.workload.deadline_s, n_cuts=self.n_cuts,
            n_thresholds=self.n_thresholds, n_levels=self.n_levels, tail_s=radio.tail_s,
            tail_w=radio.tail_w, keep_alive_s=self.cloud.keep_alive_s,
        )  # fmt: skip

    def _carbon(self, scenario: Scenario) -> None:
        """Grams of CO2e per joule the device draws (its grid, ``[scenario].grid``), and
        per cut the grams of the cloud's busy seconds: its power (``watts``) times the
        data centre's PUE, at the cloud's grid (catalog ``[grids]``, with sources)."""
        grids, c = self.catalog.grids, self.cloud
        self.device_grid = grids[scenario.grid]
        self.device_g_per_j = self.device_grid.g_per_kwh / J_PER_KWH
        if c.kind == "hybrid":  # its parts' grids (``_hybrid``)
            self.cloud_grid = grids[self.catalog.cloud(c.functions).grid]
            return
        self.cloud_grid = grids[c.grid]
        cloud_g_per_j = self.cloud_grid.g_per_kwh / J_PER_KWH
        self.cloud_carbon_g = [
            formulas.cloud_carbon_g(busy, c.watts, c.pue, cloud_g_per_j)
            for busy in self.cloud_tail_s
        ]

    def require_single_cloud(self, what: str) -> None:
        """Refuse, naming the scenario, a ``what`` that runs one kind of cloud (a VM or
        functions) when the scenario's cloud is a hybrid of both."""
        if self.cloud.kind == "hybrid":
            raise ScenarioError(
                f"{self.scenario.source}: [scenario].cloud '{self.cloud.name}' is a hybrid (a VM "
                f"and functions), but {what} runs one kind: name its vm '{self.cloud.vm}' or its "
                f"functions '{self.cloud.functions}' instead"
            )

    def cloud_money(self, busy_s: float) -> float:
        """The bill of ``busy_s`` seconds on the scenario's iaas or faas cloud (a hybrid
        bills each part: ``HybridTables.usd``)."""
        c = self.cloud
        if c.kind == "faas":
            return formulas.faas_call_usd(
                busy_s,
                c.billing_granularity_s,
                c.price_per_request,
                c.price_per_gb_s,
                c.memory_gb,
            )
        return formulas.iaas_busy_usd(busy_s, c.price_per_s, c.utilisation)

    def describe(self) -> dict:
        return {
            "device": self.device.name,
            "device_times": "measured on the device"
            if self.device.measured
            else "host times scaled by GFLOP/s",
            "device_slowdown_vs_host": round(self.slowdown, 2),
            "host_gflops": round(self.host_gflops, 2),
            "device_full_model_ms": round((self.block_cum[-1] + self.exit_dev_s[-1]) * 1e3, 2),
            "cloud": self.cloud.name,
            "energy_ref_j": self.energy_ref_j,
            "variants": [v.variant for v in self.variant_systems],
        }


def _calibrated_credit(split, n_bins: int = 20) -> tuple[list, list]:
    """Per sample, the accuracy of its confidence bin: per exit (bins of that exit's
    confidence), and per cut and level after the codec (bins of the final exit's)."""

    def by_bin(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
        edges = np.unique(np.quantile(conf, np.linspace(0, 1, n_bins + 1)[1:-1]))
        bins = np.searchsorted(edges, conf, side="right")
        sums = np.bincount(bins, weights=correct.astype(float), minlength=len(edges) + 1)
        counts = np.bincount(bins, minlength=len(edges) + 1)
        return (sums / np.maximum(counts, 1))[bins]

    conf = split.exit_conf
    exit_credit = [by_bin(conf[b], split.exit_correct[b]).tolist() for b in range(len(conf))]
    final_credit = [
        [by_bin(conf[-1], split.final_correct[c, lvl]).tolist()
         for lvl in range(split.final_correct.shape[1])]
        for c in range(split.final_correct.shape[0])
    ]  # fmt: skip
    return exit_credit, final_credit
