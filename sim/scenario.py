"""A scenario: everything the simulator needs besides the traces, as plain data.

profile + device + radio per trace family + cloud offer + battery + workload
(arrival process, deadline, episode length) + threshold grid + bandwidth probes +
reward weights. Every field is validated when the dataclass is built, so a scenario
made in Python is checked exactly as one read from TOML (``load_scenario``, whose
errors also name the file). A built-in default lives in ``envs/default_scenario.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from profiles import DEFAULT_CATALOG, DEFAULT_PROFILE
from profiles.multiexit import resolve_reference
from settings.tables import (
    InputError,
    check_fields,
    check_keys,
    check_number,
    choice,
    closest,
    custom,
    from_table,
    integer,
    number,
    read_toml,
)
from sim.capacity import Capacity

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "envs" / "default_scenario.toml"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TABLES = (
    "scenario", "radio", "thresholds", "workload", "battery", "probe", "reward", "capacity",
    "fleet",
)  # fmt: skip


class ScenarioError(InputError):
    """A scenario file is missing a field or holds an invalid value."""


def _weight(default: float, doc: str = ""):
    return number(default, low=0.0, high=1e6, doc=doc)


@dataclass(frozen=True)
class Workload:
    arrival: str = choice("poisson", choices=("poisson", "periodic"))
    rate_hz: float = number(2.0, low=0.0, low_inclusive=False, high=1e4, doc="requests/s")
    deadline_s: float = number(0.2, low=0.0, low_inclusive=False, high=3600.0)
    episode_requests: int = integer(400, low=1, high=10_000_000)
    sample_split: str = choice("val", choices=("val", "test"), doc="profile split of images")

    def __post_init__(self) -> None:
        check_fields(self, "workload", ScenarioError)


@dataclass(frozen=True)
class Battery:
    initial_min: float = number(0.05, low=0.0, low_inclusive=False, high=1.0,
                                doc="initial charge drawn uniformly in [min, max]")  # fmt: skip
    initial_max: float = number(1.0, low=0.0, low_inclusive=False, high=1.0)
    capacity_j: float = number(0.0, low=0.0, high=1e15, doc="0: the catalog device's battery")

    def __post_init__(self) -> None:
        check_fields(self, "battery", ScenarioError)
        if self.initial_min > self.initial_max:
            raise ScenarioError(
                f"[battery].initial_min: {self.initial_min} exceeds initial_max {self.initial_max}"
            )


@dataclass(frozen=True)
class Probe:
    interval_s: float = number(0.0, low=0.0, high=1e6, doc="0 disables probing")
    bytes: float = number(1500.0, low=1.0, high=1e9)

    def __post_init__(self) -> None:
        check_fields(self, "probe", ScenarioError)


@dataclass(frozen=True)
class RewardWeights:
    """r = accuracy*correct - latency*min(L/D, 4) - deadline_miss*[L > D]
    - energy*(1 + energy_battery_gain*(1 - battery))*E/energy_ref_j
    - money*C/money_ref_usd - leakage*leak - carbon*G/G_ref (G_ref: the grams of
    energy_ref_j at the device's grid)"""

    accuracy: float = _weight(1.0)
    latency: float = _weight(0.2)
    deadline_miss: float = _weight(1.0)
    energy: float = _weight(0.05)
    energy_battery_gain: float = _weight(15.0)
    money: float = _weight(0.05)
    leakage: float = _weight(0.1)
    carbon: float = _weight(0.0)
    requests_per_charge: float = number(20000.0, low=0.0, low_inclusive=False, high=1e12,
                                        doc="energy_ref_j = battery capacity / this")  # fmt: skip
    money_ref_usd: float = number(1e-6, low=0.0, low_inclusive=False, high=1e6,
                                  doc="$1 per million requests")  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self, "reward", ScenarioError)


def _fleet_sizes(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or any(
        isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100_000 for v in value
    ):
        raise ValueError(f"expected a list of device counts 1..100000, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Fleet:
    """How many devices share the cloud (``OffloadFleet-v0``); 1: a single device."""

    devices: int = integer(1, low=1, high=100_000, doc="devices trained together")
    sizes: tuple[int, ...] = custom(_fleet_sizes, (), doc="fleet sizes evaluate.py compares")

    def __post_init__(self) -> None:
        check_fields(self, "fleet", ScenarioError)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _reference(value: Any, where: str) -> str:
    if not isinstance(value, str) or ":" not in value or not value.rpartition(":")[2]:
        raise ValueError(f"expected 'module:function' or 'path/file.py:function', got {value!r}")
    return value


def _variant_names(value: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise ValueError(
            f'expected a list of model variant names such as ["float32", "int8"], got {value!r}'
        )
    if len(set(value)) != len(value):
        raise ValueError(f"names a variant twice: {list(value)}")
    return tuple(value)


def _threshold_grid(value: Any, where: str) -> tuple[float, ...]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ValueError(f"expected a list of numbers, got {value!r}")
    grid = tuple(
        check_number(v, f"{where}[{i}]", low=0.0, high=2.0, error=ScenarioError)
        for i, v in enumerate(value)
    )
    if not grid:
        raise ValueError("expected a non-empty list")
    if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ValueError(f"values must increase, got {list(grid)}")
    return grid


def _radio_table(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ValueError(f'expected family = "radio name" entries, got {value!r}')
    return dict(value)


def _section_of(cls: type, value: Any, where: str):
    if not isinstance(value, cls):
        raise TypeError(f"expected a {cls.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class Scenario:
    name: str = custom(_name, "default")
    profile: str = custom(_name, str(DEFAULT_PROFILE), doc="profile .npz path")
    catalog: str = custom(_name, str(DEFAULT_CATALOG), doc="catalog TOML path")
    model: str | None = custom(
        lambda v, w: None if v is None else _reference(v, w), None,
        doc="the model's build(), module:function or file.py:function (default: the profile's)",
    )  # fmt: skip
    data: str | None = custom(
        lambda v, w: None if v is None else _reference(v, w), None,
        doc="the data's load(), module:function or file.py:function (default: the profile's)",
    )  # fmt: skip
    device: str = custom(_name, "mcu", doc="a [devices.*] entry of the catalog")
    cloud: str = custom(_name, "faas", doc="a [clouds.*] entry of the catalog")
    grid: str = custom(
        _name, "world", doc="the device's electricity: a [grids.*] entry of the catalog"
    )
    variants: tuple[str, ...] = custom(
        _variant_names,
        ("float32",),
        doc="the model variants of the device's blocks the controller chooses from (the "
        "profile's, python -m profiles.variant_profile); more than one adds a fourth "
        "action component",
    )
    radio_by_family: dict[str, str] = custom(
        _radio_table,
        default_factory=lambda: {"hsdpa": "3g", "fcc": "wifi", "oboe": "lte", "5g": "5g"},
    )
    default_radio: str = custom(_name, "lte")
    thresholds: tuple[float, ...] = custom(
        _threshold_grid, (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01), doc="> 1: no early exit"
    )
    workload: Workload = custom(lambda v, w: _section_of(Workload, v, w), default_factory=Workload)
    battery: Battery = custom(lambda v, w: _section_of(Battery, v, w), default_factory=Battery)
    probe: Probe = custom(lambda v, w: _section_of(Probe, v, w), default_factory=Probe)
    reward: RewardWeights = custom(
        lambda v, w: _section_of(RewardWeights, v, w), default_factory=RewardWeights
    )
    fleet: Fleet = custom(lambda v, w: _section_of(Fleet, v, w), default_factory=Fleet)
    capacity: Capacity = custom(
        lambda v, w: _section_of(Capacity, v, w), default_factory=Capacity,
        doc="the cloud's size when a fleet shares it (sim.cloud)",
    )  # fmt: skip
    source: str = "built-in defaults"

    def __post_init__(self) -> None:
        check_fields(self, "scenario", ScenarioError)

    def radio_for(self, family: str) -> str:
        return self.radio_by_family.get(family, self.default_radio)

    def with_updates(self, **kwargs: Any) -> Scenario:
        return replace(self, **kwargs)

    def require_base_model(self, what: str) -> None:
        """Refuse, naming the scenario, a ``what`` (a part that runs only the profile's
        own model) when the scenario lists other model variants."""
        if self.variants != ("float32",):
            raise ScenarioError(
                f"{self.source}: [scenario].variants = {list(self.variants)}, but {what} runs "
                'the profile\'s own model only: list variants = ["float32"] (or leave it out)'
            )

    def check_references(self) -> None:
        """The model and data references import, and the profile was measured on that
        model (``profiles.references``); errors name this scenario's file."""
        if self.model is None and self.data is None:
            return  # the built-in model of the built-in profile (tests/test_profile.py)
        from profiles.references import check_references

        try:
            check_references(self.profile, self.model, self.data)
        except InputError as exc:
            raise ScenarioError(f"{self.source}: {exc}") from None

    def check_catalog(self, catalog=None) -> None:
        """Refuse a device, cloud or radio that the catalog does not have, naming the
        field and the closest entry (``catalog``: loaded from ``self.catalog``)."""
        from profiles.catalog import load_catalog

        catalog = catalog or load_catalog(self.catalog)
        wanted = [("[scenario].device", self.device, catalog.devices),
                  ("[scenario].cloud", self.cloud, catalog.clouds),
                  ("[scenario].grid", self.grid, catalog.grids),
                  ("[radio].default", self.default_radio, catalog.radios)]  # fmt: skip
        wanted += [(f"[radio].{fam}", r, catalog.radios) for fam, r in self.radio_by_family.items()]
        for where, name, table in wanted:
            if name not in table:
                hint = closest(name, table)
                tip = f"did you mean '{hint}'? " if hint else ""
                raise ScenarioError(
                    f"{where}: '{name}' is not in the catalog {catalog.path} "
                    f"({tip}known: {', '.join(sorted(table))})"
                )
        self._check_capacity_kind(catalog.clouds[self.cloud].kind)

    def _check_capacity_kind(self, kind: str) -> None:
        """A ``[capacity]`` key of the other kind of cloud would be silently ignored (a
        hybrid has both: ``workers`` for its VM, ``concurrency`` for its functions)."""
        c = self.capacity
        if kind == "faas" and c.workers:
            raise ScenarioError(
                f"[capacity].workers = {c.workers}: IaaS workers, but [scenario].cloud "
                f"'{self.cloud}' is serverless (FaaS); size it with [capacity].concurrency"
            )
        if kind == "iaas" and c.concurrency:
            raise ScenarioError(
                f"[capacity].concurrency = {c.concurrency}: FaaS instances, but "
                f"[scenario].cloud '{self.cloud}' is a reserved VM (IaaS); size it with "
                "[capacity].workers"
            )
        defaults = Capacity.__dataclass_fields__
        for key in ("max_batch", "batch_times"):
            if kind == "hybrid" and getattr(c, key) != defaults[key].default:
                raise ScenarioError(
                    f"[capacity].{key} = {getattr(c, key)!r}: IaaS batching, but [scenario].cloud "
                    f"'{self.cloud}' is a hybrid, whose VM serves one request at a time; "
                    "leave it out"
                )


def _resolve_path(value: Any, base: Path, where: str, default: str) -> str:
    """A path named in a scenario file, relative to that file's folder (``base``), so
    that a scenario means the same wherever a command runs; refused naming the
    resolved path when nothing is there."""
    if value in (None, "builtin"):
        return default
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}: expected a path or 'builtin', got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = (base / path).resolve()
    if not path.is_file():
        raise ScenarioError(
            f"{where}: {value!r} is {path} (paths are relative to the scenario file), "
            "which does not exist"
        )
    return str(path)


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read a scenario TOML file (``None``: the built-in default), check it against
    its catalog; errors name the file, the table and the key."""
    path = Path(path) if path is not None else DEFAULT_SCENARIO
    raw = read_toml(path, "scenario", ScenarioError)
    try:
        scenario = _from_tables(raw, path)
        scenario.check_catalog()
    except InputError as exc:  # a ScenarioError from a field, a CatalogError from the file
        raise ScenarioError(f"{path}: {exc}") from None
    return scenario


def _from_tables(raw: dict, path: Path) -> Scenario:
    check_keys(raw, TABLES, "tables", ScenarioError)
    head = raw.get("scenario")
    if not isinstance(head, dict):
        raise ScenarioError("[scenario] table is missing")
    known = ("name", "profile", "catalog", "model", "data", "device", "cloud", "grid", "variants")
    check_keys(head, known, "[scenario]", ScenarioError)
    for key in ("device", "cloud"):
        if key not in head:
            raise ScenarioError(f"[scenario].{key}: missing")
    radio = raw.get("radio", {})
    if not isinstance(radio, dict):
        raise ScenarioError(f'[radio]: expected family = "radio name" entries, got {radio!r}')
    radio = dict(radio)
    default_radio = radio.pop("default", "lte")
    thresholds = raw.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise ScenarioError(f"[thresholds]: expected a table, got {thresholds!r}")
    check_keys(thresholds, ("grid",), "[thresholds]", ScenarioError)
    grid = thresholds.get("grid", Scenario.__dataclass_fields__["thresholds"].default)
    try:
        grid = _threshold_grid(grid, "[thresholds].grid")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"[thresholds].grid: {exc}") from None
    base = path.parent
    return Scenario(
        name=head.get("name", path.stem),
        profile=_resolve_path(
            head.get("profile"), base, "[scenario].profile", str(DEFAULT_PROFILE)
        ),
        catalog=_resolve_path(
            head.get("catalog"), base, "[scenario].catalog", str(DEFAULT_CATALOG)
        ),
        model=resolve_reference(_checked_ref(head, "model"), base),
        data=resolve_reference(_checked_ref(head, "data"), base),
        device=head["device"],
        cloud=head["cloud"],
        grid=head.get("grid", "world"),
        variants=head.get("variants", ("float32",)),
        radio_by_family=radio,
        default_radio=default_radio,
        thresholds=grid,
        workload=from_table(Workload, raw.get("workload"), "[workload]", ScenarioError),
        battery=from_table(Battery, raw.get("battery"), "[battery]", ScenarioError),
        probe=from_table(Probe, raw.get("probe"), "[probe]", ScenarioError),
        reward=from_table(RewardWeights, raw.get("reward"), "[reward]", ScenarioError),
        capacity=_capacity(raw.get("capacity"), base),
        fleet=from_table(Fleet, raw.get("fleet"), "[fleet]", ScenarioError),
        source=str(path),
    )


def _capacity(raw: Any, base: Path) -> Capacity:
    capacity = from_table(Capacity, raw, "[capacity]", ScenarioError)
    path = _resolve_path(capacity.batch_times, base, "[capacity].batch_times", "builtin")
    return replace(capacity, batch_times=path)


def _checked_ref(head: dict, key: str) -> str | None:
    value = head.get(key)
    if value is None:
        return None
    try:
        return _reference(value, f"[scenario].{key}")
    except ValueError as exc:
        raise ScenarioError(f"[scenario].{key}: {exc}") from None
